import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import quant
from quant.calib import CalibrationData
from quant.calib.record import UNetRecorder, record_calibration
from quant.cli import main
from quant.errors import MixDQError


def folder_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def hook_count(unet) -> int:
    return len(unet._forward_pre_hooks) + len(unet._forward_hooks)


def test_cli_coco_json_records_first_captions(tiny_dir, data_dir, tmp_path, capsys):
    coco = f"{data_dir}/coco_captions_val2017.json"
    out = tmp_path / "coco"
    assert main(["calibrate", "--model", str(tiny_dir), "--prompts", coco, "--num-prompts", "8",
                 "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    with open(coco, encoding="utf-8") as f:
        raw = json.load(f)
    first_id = raw["images"][0]["id"]
    first = next(a["caption"] for a in raw["annotations"] if a["image_id"] == first_id)
    data = CalibrationData(out)
    assert len(data.prompts) == 8 and len(data) == 8
    assert data.prompts[0] == " ".join(first.split())
    assert data.model == str(tiny_dir)
    assert data.manifest["source"]["kind"] == "coco"
    assert len(list((out / "images").glob("*.png"))) == 8
    assert len(list((out / "shards").glob("*.safetensors"))) == 1  # default batch size 8
    assert "8 prompts" in capsys.readouterr().out


def test_cli_coco30k_csv_and_noop_rerun(tiny_dir, data_dir, tmp_path, capsys):
    import csv

    path = f"{data_dir}/coco30k_val2014_prompts.csv"
    with open(path, encoding="utf-8", newline="") as f:
        first = next(csv.DictReader(f))["text"]
    out = tmp_path / "csv"
    args = ["calibrate", "--model", str(tiny_dir), "--prompts", path, "--num-prompts", "8",
            "--batch-size", "3", "--device", "cpu", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    data = CalibrationData(out)
    assert data.prompts[0] == " ".join(first.split()) and len(data) == 8
    assert data.manifest["counts"]["shards"] == 3
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    capsys.readouterr()
    assert main(args) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


@pytest.mark.parametrize("extra, match", [
    (["--prompts", "missing.json"], "does not exist"),
    (["--prompts", "FILE.yaml"], "unknown prompt file format"),
    (["--prompts", "CSV", "--column", "caption"], "no column 'caption'"),
    (["--prompts", "CSV", "--num-prompts", "0"], "calibrate.num_prompts: must be positive, got 0"),
])
def test_cli_errors_are_one_line(data_dir, tmp_path, capsys, extra, match):
    (tmp_path / "FILE.yaml").write_text("a: 1\n")
    extra = [str(tmp_path / "FILE.yaml") if a == "FILE.yaml" else
             f"{data_dir}/coco30k_val2014_prompts.csv" if a == "CSV" else a for a in extra]
    assert main(["calibrate", "--model", "tiny", "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err
    assert not (tmp_path / "o").exists()


def test_four_steps_record_every_step_on_the_trailing_schedule(pipe, tmp_path):
    scheduler = copy.deepcopy(pipe.scheduler)
    scheduler.set_timesteps(4)
    out = record_calibration(pipe, ["a dog", "a cat", "a cow"], tmp_path / "s4", steps=4,
                             batch_size=2, progress=False)
    data = CalibrationData(out)
    assert len(data) == 12 and data.steps == 4
    assert data.timesteps == scheduler.timesteps.tolist() == [999.0, 749.0, 499.0, 249.0]
    batch = next(data.batches(12))
    for s in range(4):
        rows = batch["step"] == s
        assert rows.sum() == 3 and (batch["timestep"][rows] == data.timesteps[s]).all()
        assert sorted(batch["prompt_index"][rows].tolist()) == [0, 1, 2]
    # Each step's input is the scheduler's update of the previous one, so they all differ.
    first = batch["sample"][(batch["step"] == 0) & (batch["prompt_index"] == 0)]
    last = batch["sample"][(batch["step"] == 3) & (batch["prompt_index"] == 0)]
    assert (first - last).abs().mean() > 0.01


def test_guidance_records_the_doubled_batch(pipe, tmp_path):
    prompts = ["a dog on a beach", "a red car", "a tall tree"]
    out = record_calibration(pipe, prompts, tmp_path / "cfg", steps=2, guidance=5.0,
                             batch_size=2, progress=False)
    data = CalibrationData(out)
    assert data.cfg and len(data) == 3 * 2 * 2
    assert data.manifest["counts"]["samples_per_prompt_step"] == 2
    batch = next(data.batches(len(data)))
    cond, uncond = batch["cond"], ~batch["cond"]
    assert cond.sum() == uncond.sum() == 6
    # First shard, step 0: the UNet saw [uncond p0, uncond p1, cond p0, cond p1].
    assert batch["cond"][:4].tolist() == [False, False, True, True]
    assert batch["prompt_index"][:4].tolist() == [0, 1, 0, 1]
    assert torch.equal(batch["sample"][0], batch["sample"][2])  # same latents, both halves
    # The empty negative prompt is encoded (not zeroed as SDXL-Turbo's force_zeros_for_empty_prompt
    # would): every unconditional row is the encoding of "", whose BOS row is every prompt's.
    empty = pipe.encode_prompt("", device="cpu", do_classifier_free_guidance=False)
    ehs = batch["encoder_hidden_states"]
    assert torch.allclose(ehs[uncond], empty[0].expand_as(ehs[uncond]), atol=1e-5)
    assert torch.allclose(batch["added_cond_kwargs"]["text_embeds"][uncond],
                          empty[2].expand(int(uncond.sum()), -1), atol=1e-5)
    assert torch.allclose(ehs[:, 0], ehs[:1, 0].expand_as(ehs[:, 0]), atol=1e-5)
    embeds = pipe.encode_prompt(prompts[1], device="cpu", do_classifier_free_guidance=False)[0]
    row = cond & (batch["prompt_index"] == 1) & (batch["step"] == 0)
    assert torch.equal(batch["encoder_hidden_states"][row], embeds)


class StopAfter:
    """A hook that raises after ``n`` UNet calls: an interruption at a known point."""

    def __init__(self, unet, n):
        self.n, self.calls = n, 0
        self.handle = unet.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.calls += 1
        if self.calls > self.n:
            raise KeyboardInterrupt

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_interrupted_run_resumes_to_identical_files(pipe, tmp_path):
    prompts = ["a dog", "a cat", "a cow", "a fox", "an owl"]
    kwargs = dict(steps=2, guidance=0.0, batch_size=2, seed=3, model_name="tiny", progress=False)
    clean = record_calibration(pipe, prompts, tmp_path / "clean", **kwargs)
    hooks = hook_count(pipe.unet)
    part = tmp_path / "part"
    with StopAfter(pipe.unet, 2 * 2 + 1), pytest.raises(KeyboardInterrupt):
        record_calibration(pipe, prompts, part, **kwargs)
    assert hook_count(pipe.unet) == hooks  # the recorder removed its hooks
    assert sorted(p.name for p in (part / "shards").iterdir()) == ["00000.safetensors",
                                                                  "00001.safetensors"]
    with pytest.raises(MixDQError, match="incomplete"):
        CalibrationData(part)
    (part / "images" / ".00004.png.abc.tmp").write_bytes(b"half a png")  # a killed write
    with StopAfter(pipe.unet, 10**6) as counter:
        record_calibration(pipe, prompts, part, **kwargs)
    assert counter.calls == 2  # only the last batch (one prompt, two steps) was redone
    assert folder_bytes(part) == folder_bytes(clean)
    with StopAfter(pipe.unet, 0):  # a finished run does not call the UNet again
        record_calibration(pipe, prompts, part, **kwargs)
    assert folder_bytes(part) == folder_bytes(clean)


KILL_SCRIPT = """
import os, signal, sys
import torch
torch.set_num_threads(1)
import quant.calib.record as record
from quant.models import load_fp_pipeline
from quant.utils.io import atomic_path

saved = []

def save_then_die(image, path):
    if len(saved) == 4:  # die halfway through writing the 5th image (batch 2 of 3)
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"partial")
            os.kill(os.getpid(), signal.SIGKILL)
    saved.append(path)
    original(image, path)

original, record.save_image = record.save_image, save_then_die
pipe = load_fp_pipeline(sys.argv[1], device="cpu")
record.record_calibration(pipe, sys.argv[3].split("|"), sys.argv[2], steps=1, batch_size=2,
                          seed=5, model_name="tiny", progress=False)
"""


def test_killed_process_resumes_to_identical_files(pipe, tiny_dir, tmp_path):
    prompts = ["a dog", "a cat", "a cow", "a fox", "an owl", "a bee"]
    script = tmp_path / "kill.py"
    script.write_text(textwrap.dedent(KILL_SCRIPT))
    env = {**os.environ, "PYTHONPATH": str(Path(quant.__file__).parents[1]),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    part = tmp_path / "part"
    proc = subprocess.run([sys.executable, str(script), str(tiny_dir), str(part),
                           "|".join(prompts)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert [p.name for p in sorted((part / "shards").iterdir())] == ["00000.safetensors",
                                                                    "00001.safetensors"]
    assert list((part / "images").glob(".*.tmp")), "the kill should leave a temporary behind"
    kwargs = dict(steps=1, batch_size=2, seed=5, model_name="tiny", progress=False)
    record_calibration(pipe, prompts, part, **kwargs)
    clean = record_calibration(pipe, prompts, tmp_path / "clean", **kwargs)
    assert folder_bytes(part) == folder_bytes(clean)
    assert len(folder_bytes(clean)) == 2 + 3 + 6


def test_rejects_other_settings_and_foreign_folders(pipe, recorded, calib_prompts, tmp_path):
    kwargs = dict(steps=2, batch_size=2, seed=7, model_name="tiny", progress=False)
    with pytest.raises(MixDQError, match=r"different settings \(seed: 7 there, 8 now\)"):
        record_calibration(pipe, calib_prompts, recorded, **{**kwargs, "seed": 8})
    with pytest.raises(MixDQError, match=r"different settings \(prompt 1 differs\)"):
        record_calibration(pipe, [calib_prompts[0], "x", *calib_prompts[2:]], recorded, **kwargs)
    with pytest.raises(MixDQError, match=r"5 prompts there, 4 now"):
        record_calibration(pipe, calib_prompts[:4], recorded, **kwargs)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(MixDQError, match="non-empty folder that is not a calibration run"):
        record_calibration(pipe, calib_prompts, tmp_path, **kwargs)
    with pytest.raises(MixDQError, match="prompt 1 is empty"):
        record_calibration(pipe, ["a", " "], tmp_path / "x", **kwargs)
    with pytest.raises(MixDQError, match="multiple of 8"):
        record_calibration(pipe, ["a"], tmp_path / "x", resolution=60, **kwargs)


def test_recorder_hook_object_removes_its_handles(pipe):
    hooks = hook_count(pipe.unet)
    with UNetRecorder(pipe.unet) as rec:
        assert hook_count(pipe.unet) == hooks + 2
        pipe(prompt="a dog", num_inference_steps=1, guidance_scale=0.0, height=64, width=64,
             output_type="latent")
        calls = rec.take()
    assert hook_count(pipe.unet) == hooks
    assert len(calls) == 1 and calls[0]["sample"].shape == (1, 4, 16, 16)
    assert rec.take() == []


def test_resume_verifies_reused_files(pipe, tmp_path):
    prompts = ["a dog", "a cat", "a cow", "a fox", "an owl"]
    kwargs = dict(steps=1, guidance=0.0, batch_size=2, seed=3, model_name="tiny", progress=False)
    clean = record_calibration(pipe, prompts, tmp_path / "clean", **kwargs)
    part = tmp_path / "part"
    with StopAfter(pipe.unet, 2), pytest.raises(KeyboardInterrupt):
        record_calibration(pipe, prompts, part, **kwargs)
    # what a crash, a full disk or a careless copy could leave: a truncated shard, a 0-byte PNG
    shard = part / "shards" / "00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:100])
    (part / "images" / "00003.png").write_bytes(b"")
    (part / "shards" / "00001.safetensors").write_bytes(
        (clean / "shards" / "00001.safetensors").read_bytes())  # batch 1 done, image 3 broken
    with StopAfter(pipe.unet, 10**6) as counter:
        record_calibration(pipe, prompts, part, **kwargs)
    assert counter.calls == 3  # batches 0 (bad shard), 1 (bad image) and 2 (never made)
    assert folder_bytes(part) == folder_bytes(clean)
    # a finished folder whose file changed in place is repaired by the same command
    image = part / "images" / "00004.png"
    image.write_bytes(image.read_bytes()[:-4] + b"\0\0\0\0")
    with StopAfter(pipe.unet, 10**6) as counter:
        record_calibration(pipe, prompts, part, **kwargs)
    assert counter.calls == 1
    assert folder_bytes(part) == folder_bytes(clean)
    manifest = json.loads((clean / "manifest.json").read_text())
    assert sorted(manifest["files"]) == [f"images/{i:05d}.png" for i in range(5)] + [
        f"shards/{i:05d}.safetensors" for i in range(3)]
    assert manifest["unet"]["weights_sha256"] == quant.checkpoint.unet_hash(pipe.unet)


def test_quantize_cli_refuses_calibration_of_another_model(recorded, tmp_path, capsys):
    code = main(["quantize", "--model", "proxy", "--calib", str(recorded), "--w-bits", "8",
                 "--a-bits", "8", "--no-progress", "--out", str(tmp_path / "q")])
    err = capsys.readouterr().err
    assert code == 2 and "recorded with another model ('tiny'" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "q").exists()
