"""Generation sharded across two processes with torchrun (gloo, CPU)."""

import json
import os
import subprocess
import sys

import pytest

from quant.bench import GenerationSettings, generate_images


@pytest.mark.slow
def test_torchrun_shards_give_the_same_images(tiny_dir, tiny_pipe, coco_prompts, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(coco_prompts[:5]) + "\n")
    out = tmp_path / "sharded"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "quant", "benchmark", "--model", str(tiny_dir), "--device", "cpu",
         "--prompts", str(prompts), "--no-fid", "--no-clip", "--no-latency", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["world_size"] == 2
    assert report["variants"][0]["metrics"]["clip_score"] == "skipped (--no-clip)"

    single = tmp_path / "single"
    generate_images(lambda: tiny_pipe, coco_prompts[:5], single, GenerationSettings())
    for i in range(5):
        name = f"{i:05d}.png"
        assert (out / "images" / "fp" / name).read_bytes() == (single / name).read_bytes()
