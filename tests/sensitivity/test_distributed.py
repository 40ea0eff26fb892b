"""Sharding over torchrun processes, and resuming after a real kill, through subprocesses."""

import os
import signal
import subprocess
import sys
import time

import pytest

from quant.cli import main
from quant.sensitivity.results import LayerLog

SUBSET = "conv_out|up_blocks.2.resnets.2|up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_v"


def cli_args(tiny_dir, calib_dir, out):
    return ["--model", str(tiny_dir), "--calib", str(calib_dir), "--out", str(out),
            "--device", "cpu", "--layers", SUBSET, "--no-progress"]


def env():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}


@pytest.mark.slow
def test_two_process_torchrun_gives_the_single_process_table(tiny_dir, calib_dir, tmp_path):
    single = tmp_path / "one" / "sens.csv"
    assert main(["sensitivity", *cli_args(tiny_dir, calib_dir, single)]) == 0
    shared = tmp_path / "two" / "sens.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "quant.sensitivity", *cli_args(tiny_dir, calib_dir, shared)],
        env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert shared.read_bytes() == single.read_bytes()
    assert "on 2 process(es)" in proc.stdout
    parts = shared.with_name("sens.csv.parts")
    counts = [len(LayerLog(parts / f"rank-0000{r}.jsonl").read()) for r in (0, 1)]
    assert counts == [3, 3]  # round robin over the 6 layers
    assert (shared.with_name("sens.protect.txt").read_text()
            == single.with_name("sens.protect.txt").read_text())


@pytest.mark.slow
def test_killed_process_resumes_to_the_same_table(tiny_dir, calib_dir, tmp_path):
    reference = tmp_path / "ref" / "sens.csv"
    assert main(["sensitivity", *cli_args(tiny_dir, calib_dir, reference)]) == 0
    out = tmp_path / "run" / "sens.csv"
    log = LayerLog(out.with_name("sens.csv.parts") / "rank-00000.jsonl")
    proc = subprocess.Popen([sys.executable, "-m", "quant.sensitivity",
                             *cli_args(tiny_dir, calib_dir, out)], env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while len(log.read()) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    done = len(log.read())
    assert 2 <= done < 6 and not out.exists()
    assert main(["sensitivity", *cli_args(tiny_dir, calib_dir, out)]) == 0
    assert out.read_bytes() == reference.read_bytes()
