"""`mixdq calibrate` then `mixdq quantize` on the tiny model, and the quantize command's errors."""

import json

import pytest
import torch

from quant.calib import CalibrationData
from quant.checkpoint import CONFIG_FILE, load_quantized
from quant.cli import main
from quant.models import load_fp_pipeline
from quant.quantize import output_sqnr


@pytest.fixture(scope="module")
def calib_dir(tiny_dir, bundled_data, tmp_path_factory):
    """4 bundled COCO prompts recorded with the real ``mixdq calibrate``."""
    out = tmp_path_factory.mktemp("cli") / "calib"
    assert main(["calibrate", "--model", str(tiny_dir), "--prompts",
                 f"{bundled_data}/coco_captions_val2017.json", "--num-prompts", "4",
                 "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    return out


def _sqnr_line(text):
    line = next(ln for ln in text.splitlines() if "SQNR" in ln)
    return float(line.split(":")[1].split()[0])


def test_calibrate_then_quantize(tiny_dir, calib_dir, tmp_path, capsys):
    capsys.readouterr()
    runs = {}
    for tag, extra in (("w8a8", ["--w-bits", "8", "--a-bits", "8"]),
                       ("w4a8", ["--w-bits", "4", "--a-bits", "8"]),
                       ("nobos", ["--w-bits", "8", "--a-bits", "8", "--no-bos"])):
        out = tmp_path / tag
        assert main(["quantize", "--model", str(tiny_dir), "--calib", str(calib_dir),
                     "--device", "cpu", "--no-progress", *extra, "--out", str(out)]) == 0
        text = capsys.readouterr().out
        runs[tag] = (out, _sqnr_line(text))
        assert "total" in text and f"wrote {out}" in text
    print({k: v[1] for k, v in runs.items()})
    assert runs["w8a8"][1] > runs["w4a8"][1] + 6
    config = json.loads((runs["w8a8"][0] / CONFIG_FILE).read_text())
    assert config["bos"] is True and config["calibration_samples"] == 4
    assert {(e["w"], e["a"]) for e in config["layers"].values()} == {(8, 8)}
    # the checkpoint on a fresh float pipeline gives the printed SQNR again
    pipe = load_fp_pipeline(str(tiny_dir), device="cpu")
    load_quantized(pipe.unet, runs["w8a8"][0])
    data = CalibrationData(calib_dir)
    with torch.no_grad():
        again = output_sqnr(pipe.unet, data.batches(4))
    assert again == pytest.approx(runs["w8a8"][1], abs=0.01)


def test_quantize_with_a_bit_map_file(tiny_dir, calib_dir, tmp_path, capsys):
    prior = tmp_path / "w8a8"
    assert main(["quantize", "--model", str(tiny_dir), "--calib", str(calib_dir), "--device",
                 "cpu", "--no-progress", "--w-bits", "8", "--a-bits", "fp", "--out",
                 str(prior)]) == 0
    config = json.loads((prior / CONFIG_FILE).read_text())
    assert {(e["w"], e["a"]) for e in config["layers"].values()} == {(8, None)}
    bits = json.loads((prior / "bitmap.json").read_text())
    bits["layers"]["conv_in"] = {"w": 4, "a": 8}
    (tmp_path / "bits.json").write_text(json.dumps(bits))
    out = tmp_path / "mixed"
    assert main(["quantize", "--model", str(tiny_dir), "--calib", str(calib_dir), "--device",
                 "cpu", "--no-progress", "--bit-map", str(tmp_path / "bits.json"), "--out",
                 str(out)]) == 0
    layers = json.loads((out / CONFIG_FILE).read_text())["layers"]
    assert (layers["conv_in"]["w"], layers["conv_in"]["a"]) == (4, 8)
    assert (layers["conv_out"]["w"], layers["conv_out"]["a"]) == (8, None)


@pytest.mark.parametrize("args, match", [
    ([], r"give bit_map FILE, or w_bits B and a_bits B"),
    (["--bit-map", "B", "--w-bits", "8"], "either bit_map or w_bits/a_bits"),
    (["--w-bits", "9", "--a-bits", "8"], "unsupported weight bit width 9; supported: 2, 3"),
    (["--w-bits", "8", "--a-bits", "3"], "unsupported activation bit width 3; supported: 4, 5"),
    (["--bit-map", "BAD"], "unknown layer 'nope'"),
    (["--bit-map", "MISSING"], "bit map .*: no such file"),
    (["--w-bits", "8", "--a-bits", "8", "--momentum", "1.5"],
     r"quantize.momentum: must be in \[0, 1\]"),
    (["--w-bits", "8", "--a-bits", "8", "--calib", "NOCALIB"], "does not exist"),
])
def test_quantize_errors_are_one_line(tiny_dir, calib_dir, tmp_path, capsys, args, match):
    import re

    (tmp_path / "bad.json").write_text(json.dumps({"layers": {"nope": {"w": 8, "a": 8}}}))
    subs = {"B": str(tmp_path / "bad.json"), "BAD": str(tmp_path / "bad.json"),
            "MISSING": str(tmp_path / "missing.json"), "NOCALIB": str(tmp_path / "nocalib")}
    args = [subs.get(a, a) for a in args]
    calib = [] if "--calib" in args else ["--calib", str(calib_dir)]
    code = main(["quantize", "--model", str(tiny_dir), "--device", "cpu", "--no-progress",
                 *calib, *args, "--out", str(tmp_path / "q")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("mixdq quantize: error: ") and re.search(match, err), err
    assert not (tmp_path / "q").exists()


def test_quantize_skips_a_checkpoint_with_the_same_settings(tiny_dir, calib_dir, tmp_path,
                                                            monkeypatch, capsys):
    """The same settings: nothing is loaded or computed, even with the calibration folder
    moved and its path spelled another way; other settings: refused before any work, naming
    the setting."""
    import os
    import shutil

    from quant.models.spec import ModelSpec

    def quantize(calib, out, *extra):
        return main(["quantize", "--model", str(tiny_dir), "--calib", str(calib), "--device",
                     "cpu", "--no-progress", "--w-bits", "8", "--a-bits", "8", *extra,
                     "--out", str(out)])

    out = tmp_path / "q"
    assert quantize(calib_dir, out) == 0
    files = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    capsys.readouterr()
    loads = []
    real_load = ModelSpec.load
    monkeypatch.setattr(ModelSpec, "load", lambda self, *a, **k: (loads.append(1),
                                                                  real_load(self, *a, **k))[1])
    moved = shutil.copytree(calib_dir, tmp_path / "elsewhere" / "calib")
    monkeypatch.chdir(tmp_path)
    assert quantize(os.path.join("elsewhere", ".", "calib"), "q") == 0
    assert "already holds this checkpoint" in capsys.readouterr().out
    assert loads == []
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == files
    assert quantize(moved, out, "--momentum", "0.9") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "other settings (settings.momentum: 0.95 there, 0.9 now)" in err
    assert loads == []
    # damaged weights with the same settings: redone, the same bytes again
    weights = out / "unet_quant.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert quantize(moved, out) == 0 and loads == [1]
    assert weights.read_bytes() == files["unet_quant.safetensors"][0]
