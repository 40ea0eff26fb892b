"""Whole runs through the CLI: outputs, resume after an interruption, settings, errors."""

import json

import pytest

from quant.cli import main
from quant.sensitivity.results import COLUMNS, LayerLog, read_csv, read_protect

SUBSET = "conv_out|up_blocks.2.resnets.2|up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_v"
LAYERS = ["up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_v",
          "up_blocks.2.resnets.2.conv1", "up_blocks.2.resnets.2.time_emb_proj",
          "up_blocks.2.resnets.2.conv2", "up_blocks.2.resnets.2.conv_shortcut", "conv_out"]


def args(tiny_dir, calib_dir, out, *extra):
    return ["sensitivity", "--model", str(tiny_dir), "--calib", str(calib_dir), "--out", str(out),
            "--device", "cpu", "--layers", SUBSET, "--no-progress", *extra]


@pytest.fixture(scope="module")
def finished(tiny_dir, calib_dir, tmp_path_factory):
    """One uninterrupted run on the subset."""
    out = tmp_path_factory.mktemp("sens-run") / "sens.csv"
    assert main(args(tiny_dir, calib_dir, out)) == 0
    return out


def test_run_writes_table_protect_list_heatmap_summary(finished, capsys):
    from PIL import Image

    rows = read_csv(finished)
    assert finished.read_text().splitlines()[0] == ",".join(COLUMNS)
    assert [r.layer for r in rows[::5]] == LAYERS and len(rows) == 30
    assert {r.group for r in rows if r.layer == LAYERS[0]} == {"content"}
    protect = read_protect(finished.with_name("sens.protect.txt"))
    # the original's rule: per group at A8, quality by SQNR, content by SSIM (one each here)
    a8 = [r for r in rows if r.target == "act" and r.bits == 8]
    quality = min((r.sqnr_db, r.layer) for r in a8 if r.group == "quality")
    content = min((r.ssim, r.layer) for r in a8 if r.group == "content")
    assert protect == [quality[1], content[1]]
    with Image.open(finished.with_name("sens.heatmap.png")) as image:
        assert image.format == "PNG" and image.size[0] > 300
    summary = json.loads(finished.with_name("sens.summary.json").read_text())
    # the baseline replays the recorded float outputs: exact up to float non-associativity
    # (batched recording vs. replay order differs between CPUs), far above any quantization
    baseline = float(summary["baseline"]["sqnr_db"])
    assert summary["evaluations"] == 30 and baseline > 100
    # work counted from shapes: these layers sit at the end of the UNet, so little is re-run
    assert summary["full_macs"] > 0 and summary["full_macs"] % 30 == 0
    assert summary["rerun_fraction"] == summary["rerun_macs"] / summary["full_macs"]
    assert 0 < summary["rerun_fraction"] < 0.5
    assert "speedup" not in summary


def test_rerun_of_a_finished_run_measures_nothing(finished, tiny_dir, calib_dir, capsys):
    before = finished.read_bytes()
    assert main(args(tiny_dir, calib_dir, finished)) == 0
    assert "measured 0 now" in capsys.readouterr().out
    assert finished.read_bytes() == before


def test_interrupted_run_resumes_without_redoing_or_losing(finished, tiny_dir, calib_dir,
                                                          tmp_path, monkeypatch, capsys):
    from quant.sensitivity.measure import Measurer

    out = tmp_path / "sens.csv"
    real = Measurer.measure
    calls = []

    def measure_then_stop(self, name, on_evaluation=None):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(name)
        return real(self, name, on_evaluation)

    monkeypatch.setattr(Measurer, "measure", measure_then_stop)
    assert main(args(tiny_dir, calib_dir, out)) == 130
    assert "interrupted" in capsys.readouterr().err
    log = LayerLog(tmp_path / "sens.csv.parts" / "rank-00000.jsonl")
    assert list(log.read()) == LAYERS[:2] and not out.exists()
    with open(log.path, "ab") as f:  # and a torn line, as a kill during a write leaves
        f.write(b'{"layer":"up_blocks.2.resnets.2.time_emb_proj","rows":[["up')
    calls.clear()
    monkeypatch.setattr(Measurer, "measure", lambda self, name, on_evaluation=None: (
        calls.append(name), real(self, name, on_evaluation))[1])
    assert main(args(tiny_dir, calib_dir, out)) == 0
    assert calls == LAYERS[2:]
    assert out.read_bytes() == finished.read_bytes()


def test_other_settings_are_refused(finished, tiny_dir, calib_dir, capsys):
    assert main(args(tiny_dir, calib_dir, finished, "--act-bits", "8")) == 2
    err = capsys.readouterr().err
    assert "different settings (config.act_bits: [4, 8] there, [8] now)" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("extra, match", [
    (["--weight-bits", "1,4"], "unsupported weight bit width 1"),
    (["--act-bits", "2"], "unsupported activation bit width 2"),
    (["--layers", "nothing_matches_this"], "matches none"),
    (["--quantized-base", "/nonexistent/q"], "no such folder"),
])
def test_bad_arguments_are_one_line_errors(tiny_dir, calib_dir, tmp_path, capsys, extra, match):
    assert main(args(tiny_dir, calib_dir, tmp_path / "s.csv", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1


def test_bad_paths_are_one_line_errors(tiny_dir, calib_dir, tmp_path, capsys):
    assert main(args(tiny_dir, tmp_path / "none", tmp_path / "s.csv")) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(args(tiny_dir, calib_dir, tmp_path / "s.txt")) == 2
    assert ".csv" in capsys.readouterr().err


def test_quantized_base(tiny_dir, calib_dir, calib, tmp_path, capsys):
    """Sensitivity on top of a W8A8 checkpoint: every row is below the base's own SQNR."""
    import math

    from quant.bitmap import BitMap
    from quant.checkpoint import save_quantized
    from quant.models import load_fp_pipeline
    from quant.quantize import output_sqnr, quantize_unet
    from quant.structure import quantizable_layers

    unet = load_fp_pipeline(str(tiny_dir), device="cpu").unet
    bit_map = BitMap.uniform(quantizable_layers(unet), 8, 8)
    bit_map.layers["conv_out"] = type(bit_map.layers["conv_out"])(8, None)  # input kept float
    batches = list(calib.batches(8))
    quantize_unet(unet, bit_map, batches, progress=False)
    base_sqnr = output_sqnr(unet, batches)
    save_quantized(unet, tmp_path / "q", base_model=str(tiny_dir))
    out = tmp_path / "s.csv"
    assert main(args(tiny_dir, calib_dir, out, "--quantized-base", str(tmp_path / "q"),
                     "--layers", "conv_out|up_blocks.2.resnets.2.conv2", "--ssim", "none")) == 0
    rows = read_csv(out)
    assert len(rows) == 10 and all(r.ssim is None for r in rows)
    for r in rows:
        assert r.sqnr_db < base_sqnr + 0.5
        if (r.target, r.bits) == ("weight", 8) or (r.layer, r.target, r.bits) == (
                "up_blocks.2.resnets.2.conv2", "act", 8):
            # the base's own bits (output_sqnr rounds through float32)
            assert r.sqnr_db == pytest.approx(base_sqnr, abs=1e-4)
    conv_out = {(r.target, r.bits): r.sqnr_db for r in rows if r.layer == "conv_out"}
    assert conv_out[("weight", 2)] < conv_out[("weight", 4)] < base_sqnr
    assert conv_out[("act", 4)] < conv_out[("act", 8)] < base_sqnr  # its range was calibrated
    assert math.isfinite(conv_out[("act", 4)])


def test_library_default_is_the_paper_method(tiny_dir, calib_dir, tmp_path):
    """SensitivityConfig() = paper: min-max weights, fp32, SSIM at the decoded 64 px with a
    window of 63, protect list per group at A8."""
    import torch

    from quant.sensitivity.config import SensitivityConfig
    from quant.sensitivity.metrics import SsimMeter
    from quant.sensitivity.run import run_sensitivity

    config = SensitivityConfig(layers="conv_out|up_blocks.1.attentions.2.transformer_blocks.0"
                                      ".attn2.to_v", weight_bits=(4, 8), act_bits=(8,))
    assert (config.weight_scale, config.dtype, config.ssim_size, config.protect_rule) == (
        "minmax", "float32", None, "group")
    out = tmp_path / "sens.csv"
    run_sensitivity(str(tiny_dir), calib_dir, out, config, device="cpu", progress=False)
    rows = read_csv(out)
    assert {r.layer for r in rows} == {"conv_out", LAYERS[0]}
    content = [r for r in rows if r.layer == LAYERS[0]]
    assert all(r.ssim is not None and -1 <= r.ssim <= 1 for r in content)
    assert read_protect(out.with_name("sens.protect.txt")) == ["conv_out", LAYERS[0]]
    meter = SsimMeter(torch.rand(1, 3, 64, 64), config.ssim_config)
    assert meter.factor == 1 and meter.window == 63


def test_lora_reaches_the_sensitivity_stage(finished, tiny_dir, tiny_lora, calib_dir, tmp_path,
                                            capsys):
    """``--lora`` is fused before measuring: the fused attention layers measure differently,
    and a calibration recorded without the LoRA is refused (another model's outputs)."""
    from quant.calib import CalibrationData
    from quant.calib.record import record_calibration
    from quant.models import load_fp_pipeline

    out = tmp_path / "sens.csv"
    assert main(args(tiny_dir, calib_dir, out, "--lora", str(tiny_lora))) == 2
    assert "recorded with another model" in capsys.readouterr().err
    pipe = load_fp_pipeline(str(tiny_dir), device="cpu", lora=str(tiny_lora))
    prompts = CalibrationData(calib_dir).prompts
    lora_calib = record_calibration(pipe, prompts, tmp_path / "calib", steps=1, batch_size=4,
                                    seed=42, model_name="tiny", progress=False)
    assert main(args(tiny_dir, lora_calib, out, "--lora", str(tiny_lora))) == 0
    plain = {(r.layer, r.target, r.bits): r.sqnr_db for r in read_csv(finished)}
    fused = {(r.layer, r.target, r.bits): r.sqnr_db for r in read_csv(out)}
    assert plain.keys() == fused.keys()
    lora_layer = LAYERS[0]  # attn2.to_v: a LoRA target
    changed = [k for k in plain if plain[k] != fused[k]]
    assert changed and {k[0] for k in changed} >= {lora_layer}
    settings = json.loads((tmp_path / "sens.csv.parts" / "settings.json").read_text())
    assert settings["lora"] == {"path": str(tiny_lora), "scale": 1.0}
    capsys.readouterr()
    missing = tmp_path / "no-such-lora"
    assert main(args(tiny_dir, calib_dir, tmp_path / "other.csv", "--lora", str(missing))) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--lora" in err and str(missing) in err
    assert not (tmp_path / "other.csv.parts").exists()
