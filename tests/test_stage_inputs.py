"""Inputs the stages refuse up front, with one line: devices this torch cannot use, non-finite
guidance, unbounded resolutions, unreadable run configs, an allocation that would overwrite its
input or miss a layer of the model."""

import math
import re

import pytest
import torch

from quant.cli import main
from quant.errors import MixDQError
from quant.stages import (AllocateOptions, BenchmarkOptions, CalibrateOptions, ModelSpec,
                          allocate)


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"mixdq {command}: error: "), err
    return err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
@pytest.mark.parametrize("device, message", [
    ("cuda", "model.device: 'cuda' requested but this torch is built without CUDA"),
    ("cuda:1", "'cuda:1' requested but"),
    ("tpu", "model.device: unknown device 'tpu'; use cpu, cuda or cuda:N"),
    ("mps", "model.device: 'mps' is not supported by mixdq"),
])
def test_unusable_devices_are_one_line(device, message, tmp_path, capsys):
    if torch.version.cuda is not None:
        message = message.replace("this torch is built without CUDA", "no CUDA GPU is visible")
    with pytest.raises(MixDQError, match=re.escape(message)):
        ModelSpec("tiny", device=device)
    out = tmp_path / "calib"
    assert main(["calibrate", "--model", "tiny", "--device", device, "--prompts",
                 str(tmp_path / "p.txt"), "--out", str(out)]) == 2
    assert message in _one_line_error(capsys, "calibrate")
    assert not out.exists()
    config = tmp_path / "run.yaml"
    config.write_text(f"model: tiny\ndevice: {device}\ncalibrate: {{prompts: p.txt}}\n"
                      f"variants: [{{name: a, quantize: {{w_bits: 8, a_bits: 8}}}}]\n")
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "model.device" in _one_line_error(capsys, "run")
    assert not (tmp_path / "run").exists()


def test_cpu_devices_pass():
    assert ModelSpec("tiny", device="cpu").device == "cpu"
    assert ModelSpec("tiny", device="cpu:0").device == "cpu:0"


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0])
def test_guidance_must_be_finite(value):
    with pytest.raises(MixDQError, match=r"^calibrate\.guidance: guidance must be a finite"):
        CalibrateOptions(prompts="p.txt", guidance=value)
    with pytest.raises(MixDQError, match=r"^benchmark\.guidance: guidance must be a finite"):
        BenchmarkOptions(prompt=("a cat",), guidance=value)


def test_guidance_nan_is_refused_before_anything_is_stored(tmp_path, capsys):
    (tmp_path / "p.txt").write_text("a cat\n")
    out = tmp_path / "calib"
    assert main(["calibrate", "--model", "tiny", "--prompts", str(tmp_path / "p.txt"),
                 "--guidance", "nan", "--out", str(out)]) == 2
    assert "calibrate.guidance: guidance must be a finite number >= 0, got nan" in \
        _one_line_error(capsys, "calibrate")
    assert not out.exists()
    config = tmp_path / "run.yaml"
    config.write_text("model: tiny\ncalibrate: {prompts: p.txt, guidance: .nan}\n"
                      "variants: [{name: a, quantize: {w_bits: 8, a_bits: 8}}]\n")
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "calibrate.guidance" in _one_line_error(capsys, "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("resolution, key", [(60, "60"), (100000, "100000"), (4104, "4104")])
def test_resolution_is_bounded(resolution, key, tmp_path, capsys, monkeypatch):
    with pytest.raises(MixDQError, match=rf"calibrate\.resolution: .* 4096 pixels, got {key}"):
        CalibrateOptions(prompts="p.txt", resolution=resolution)
    with pytest.raises(MixDQError, match=rf"benchmark\.resolution: .* got {key}"):
        BenchmarkOptions(prompt=("a cat",), resolution=resolution)

    def no_load(self, *args, **kwargs):
        raise AssertionError("the model is loaded only after the arguments are checked")

    monkeypatch.setattr(ModelSpec, "load", no_load)
    out = tmp_path / "x.png"
    assert main(["generate", "--model", "tiny", "--prompt", "a cat", "--resolution",
                 str(resolution), "--out", str(out)]) == 2
    err = _one_line_error(capsys, "generate")
    assert f"resolution must be a multiple of 8 from 8 to 4096 pixels, got {key}" in err
    assert not out.exists()


def test_run_config_that_is_not_utf8(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_bytes(b"model: tiny\ncalibrate: {prompts: caf\xe9.txt}\n")
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert f"run config {config}: not UTF-8 text" in _one_line_error(capsys, "run")


@pytest.fixture(scope="module")
def tiny_table(tiny_dir, tmp_path_factory):
    """A synthetic sensitivity table over every quantizable layer of the tiny UNet."""
    from quant.bitalloc.synthetic import synthetic_table

    layers = ModelSpec(str(tiny_dir)).unet_layers()
    sizes = {name: 1000 + 10 * i for i, name in enumerate(layers)}
    path = tmp_path_factory.mktemp("table") / "sens.csv"
    synthetic_table(sizes, sizes).write(path)
    return path, layers


def test_allocate_refuses_a_table_missing_a_model_layer(tiny_dir, tiny_table, tmp_path, capsys):
    from quant.bitmap import BitMap

    path, layers = tiny_table
    options = AllocateOptions(weight_bits=4.0, act_bits=8.0)
    full = allocate(options, path, tmp_path / "map.json", model=ModelSpec(str(tiny_dir)),
                    log=lambda s: None)
    full.bit_map.validate(layers)  # a complete table: a map that quantize accepts
    lines = path.read_text().splitlines()
    missing = layers[3]
    partial = tmp_path / "partial.csv"
    partial.write_text("\n".join(ln for ln in lines if ln.split(",")[0] != missing) + "\n")
    with pytest.raises(MixDQError, match=f"layer {missing} of the model is missing "
                                         f"\\(1 of {len(layers)} layers missing\\)"):
        allocate(options, partial, tmp_path / "partial.json", model=ModelSpec(str(tiny_dir)))
    assert not (tmp_path / "partial.json").exists()
    assert main(["allocate", "--sensitivity", str(partial), "--weight-bits", "4", "--act-bits",
                 "8", "--model", str(tiny_dir), "--out", str(tmp_path / "cli.json")]) == 2
    assert f"layer {missing} of the model is missing" in _one_line_error(capsys, "allocate")
    # without the model nothing is known to be missing: the map is written, and quantize's
    # check is the one that catches it
    allocate(options, partial, tmp_path / "partial.json", log=lambda s: None)
    with pytest.raises(MixDQError, match=f"layer '{missing}' is missing from the bit map"):
        BitMap.load(tmp_path / "partial.json").validate(layers)


def test_allocate_sweep_never_overwrites_its_input(tiny_table, tmp_path, capsys):
    path, _ = tiny_table
    table = tmp_path / "sens.csv"
    table.write_bytes(path.read_bytes())
    before = table.read_bytes()
    for spelling in (str(table), str(tmp_path / "." / "sens.csv")):
        assert main(["allocate", "--sensitivity", str(table), "--sweep", "--points", "3",
                     "--out", spelling]) == 2
        err = _one_line_error(capsys, "allocate")
        assert "would overwrite the --sensitivity input" in err
    protect = tmp_path / "protect.json"
    protect.write_text("")
    assert main(["allocate", "--sensitivity", str(table), "--weight-bits", "4", "--protect",
                 str(protect), "--out", str(protect)]) == 2
    assert "would overwrite the --protect input" in _one_line_error(capsys, "allocate")
    assert table.read_bytes() == before and protect.read_text() == ""
    assert main(["allocate", "--sensitivity", str(table), "--sweep", "--points", "3", "--out",
                 str(tmp_path / "front.csv")]) == 0
    assert (tmp_path / "front.png").is_file() and table.read_bytes() == before
