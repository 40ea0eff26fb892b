"""The whole benchmark on the tiny model, with small local metric networks injected."""

import json
import math

import pytest
import torch
from PIL import Image

from quant.bench import (BenchmarkConfig, GenerationSettings, MetricModels, Variant,
                         fp_variant, load_clip, quantized_variant, run_benchmark)
from quant.bench.generation import image_path
from quant.bench.metrics import ImageRewardModel, load_images, psnr_per_image, ssim_per_image
from quant.cli import main
from quant.errors import MixDQError


def _real_images(folder, n=5):
    """Stand-in real photographs: smooth colour fields, larger than 64 px and not square."""
    folder.mkdir()
    g = torch.Generator().manual_seed(9)
    for i in range(n):
        field = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 5, generator=g),
                                                size=(96, 80), mode="bicubic")
        array = (field[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0)
        Image.fromarray(array.numpy()).save(folder / f"real_{i}.jpg")
    return folder


@pytest.fixture
def models(extractor, tiny_clip_dir):
    return MetricModels(fid_extractor=extractor, clip=load_clip(str(tiny_clip_dir)),
                        image_reward=ImageRewardModel(note="n/a (package not installed)"))


def test_benchmark_end_to_end(tiny_dir, quant_dirs, models, extractor, coco_prompts, tmp_path):
    from torchmetrics.image.fid import FrechetInceptionDistance

    prompts = coco_prompts[:4]
    config = BenchmarkConfig(out_dir=str(tmp_path / "report"), latency_repeats=3,
                             latency_warmup=1, real_images=str(_real_images(tmp_path / "real")),
                             generation=GenerationSettings(seed=11), device="cpu")
    w4_variant = quantized_variant(str(tiny_dir), quant_dirs["W4A8"], device="cpu", name="w4")
    variants = [fp_variant(str(tiny_dir), device="cpu"),
                quantized_variant(str(tiny_dir), quant_dirs["W8A8"], device="cpu"), w4_variant]
    report = run_benchmark(variants, prompts, config, models=models, prompts_source="coco")

    on_disk = json.loads((tmp_path / "report" / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    fp, w8, w4 = on_disk["variants"]
    assert [v["name"] for v in on_disk["variants"]] == ["fp", "W8A8", "w4"]
    assert fp["reference"] and not w4["reference"]
    # 8-bit is closer to full precision than 4-bit weights
    assert w8["metrics"]["psnr_vs_fp"] > w4["metrics"]["psnr_vs_fp"]
    assert w8["metrics"]["ssim_vs_fp"] > w4["metrics"]["ssim_vs_fp"]
    # every metric is a number computed from the generated images
    for key in ("fid_vs_fp", "fid_vs_real", "clip_score", "psnr_vs_fp", "ssim_vs_fp"):
        assert isinstance(w4["metrics"][key], float) and math.isfinite(w4["metrics"][key]), key
    for key in ("fid_vs_real", "clip_score"):
        assert isinstance(fp["metrics"][key], float), key
    assert w4["metrics"]["image_reward"] == "n/a (package not installed)"
    assert w4["metrics"]["fid_vs_fp"] > 0 and 0 < w4["metrics"]["ssim_vs_fp"] < 1
    assert 5 < w4["metrics"]["psnr_vs_fp"] < 100

    # the numbers agree with torchmetrics on the PNGs themselves
    folder = tmp_path / "report" / "images"
    fp_images = load_images([image_path(folder / "fp", i) for i in range(4)])
    w4_images = load_images([image_path(folder / "w4", i) for i in range(4)])
    assert fp_images.shape == (4, 3, 64, 64) and not torch.equal(fp_images, w4_images)
    metric = FrechetInceptionDistance(feature=extractor)
    metric.update(fp_images, real=True)
    metric.update(w4_images, real=False)
    assert w4["metrics"]["fid_vs_fp"] == pytest.approx(float(metric.compute()), rel=1e-4)
    assert w4["metrics"]["psnr_vs_fp"] == pytest.approx(
        float(psnr_per_image(w4_images, fp_images).mean()), rel=1e-6)
    assert w4["metrics"]["ssim_vs_fp"] == pytest.approx(
        float(ssim_per_image(w4_images, fp_images).mean()), rel=1e-6)

    # CLIPScore: max(100 * mean cosine, 0) of each variant's PNGs and prompts
    clip_model, processor = models.clip
    for v, images in ((fp, fp_images), (w4, w4_images)):
        inputs = processor(text=prompts, images=list(images), return_tensors="pt", padding=True)
        with torch.no_grad():
            out = clip_model.model(**inputs)
        hand = float((100 * (out.image_embeds * out.text_embeds).sum(-1)).mean())
        assert v["metrics"]["clip_score"] == pytest.approx(max(hand, 0.0), abs=1e-4)
        assert abs(hand) > 0.01

    # latency, memory and weight bytes
    for v in (fp, w8, w4):
        assert v["perf"]["latency_ms"] > 0 and v["perf"]["timer"] == "wall-clock"
        assert v["perf"]["peak_memory_bytes"] is None
    sizes = [v["perf"]["weight_bytes"] for v in (fp, w8, w4)]
    assert sizes[0] > 3.5 * sizes[1] and sizes[1] > 1.7 * sizes[2]

    markdown = (tmp_path / "report" / "report.md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(rows) == 4 and "FID vs FP" in rows[0] and "CLIPScore" in rows[0]
    assert rows[1].startswith("| fp (reference)") and rows[3].startswith("| w4 ")
    assert f"{w4['metrics']['ssim_vs_fp']:.4f}" in rows[3]
    with Image.open(tmp_path / "report" / "grid.png") as grid:
        assert grid.size[0] > 600 and grid.size[1] > 600  # 4 rows, 3 image columns + captions

    # a rerun generates nothing and gives the same numbers
    def no_load():
        raise AssertionError("a complete variant must not be regenerated")

    stamps = {p: p.stat().st_mtime_ns for p in folder.rglob("*.png")}
    config.latency = False
    again = run_benchmark([Variant(v.name, no_load, v.source, v.reference) for v in variants],
                          prompts, config, models=models)
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*.png")} == stamps
    assert again["variants"][2]["metrics"] == w4["metrics"]


def test_identical_variant_scores_as_reference(tiny_dir, extractor, coco_prompts, tmp_path):
    """The same pipeline under two names: FID ~0, SSIM 1, PSNR at its cap."""
    config = BenchmarkConfig(out_dir=str(tmp_path), latency=False, clip=False, device="cpu")
    fp = fp_variant(str(tiny_dir), device="cpu")
    twin = Variant("twin", fp.load, source=fp.source)
    report = run_benchmark([fp, twin], coco_prompts[:3], config,
                           models=MetricModels(fid_extractor=extractor))
    m = report["variants"][1]["metrics"]
    assert abs(m["fid_vs_fp"]) < 1e-6 and m["ssim_vs_fp"] == pytest.approx(1.0, abs=1e-6)
    assert m["psnr_vs_fp"] == 100.0
    assert "clip_score" not in m


def test_single_prompt_reports_why_fid_is_missing(tiny_dir, quant_dirs, extractor, coco_prompts,
                                                  tmp_path):
    config = BenchmarkConfig(out_dir=str(tmp_path), latency=False, device="cpu")
    w4_variant = quantized_variant(str(tiny_dir), quant_dirs["W4A8"], device="cpu")
    report = run_benchmark([fp_variant(str(tiny_dir), device="cpu"), w4_variant],
                           coco_prompts[:1], config, models=MetricModels(fid_extractor=extractor))
    assert report["variants"][1]["metrics"]["fid_vs_fp"].startswith("n/a")
    assert isinstance(report["variants"][1]["metrics"]["ssim_vs_fp"], float)


def test_cli_benchmark_with_quantized_folders(tiny_dir, quant_dirs, bundled_data, coco_prompts,
                                             tmp_path, capsys):
    """The CLI end to end, offline: built-in stand-in metric networks, real quantized folders."""
    import os

    coco = os.path.join(bundled_data, "coco_captions_val2017.json")
    out = tmp_path / "report"
    assert main(["benchmark", "--model", str(tiny_dir), "--device", "cpu", "--prompts", coco,
                 "--num-prompts", "3", "--inception", "tiny", "--clip", "tiny",
                 "--real-images", str(_real_images(tmp_path / "real")), "--out", str(out),
                 "--latency-repeats", "2", "--quantized", str(quant_dirs["W8A8"]),
                 "--quantized", str(quant_dirs["W4A8"])]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["num_prompts"] == 3
    assert report["settings"]["prompts_source"].startswith("3 prompts from")
    manifest = json.loads((out / "images" / "fp" / "manifest.json").read_text())
    assert manifest["prompts"] == coco_prompts[:3]  # the first caption of the first images
    assert sorted(p.name for p in (out / "images" / "W4A8").glob("*.png")) == [
        "00000.png", "00001.png", "00002.png"]
    assert [v["name"] for v in report["variants"]] == ["fp", "W8A8", "W4A8"]
    for v in report["variants"]:
        assert v["metrics"]["clip_score"] > 1 and v["metrics"]["fid_vs_real"] > 0
        assert v["perf"]["latency_ms"] > 0
    for v in report["variants"][1:]:
        m = v["metrics"]
        assert m["fid_vs_fp"] >= 0 and 0 < m["ssim_vs_fp"] < 1 and 20 < m["psnr_vs_fp"] < 100
    assert report["variants"][1]["source"]["quantized"] == str(quant_dirs["W8A8"].resolve())
    assert any("tiny" in note for note in report["notes"])
    printed = capsys.readouterr().out
    assert "| fp (reference)" in printed and "| W4A8 |" in printed
    assert (out / "grid.png").is_file()


@pytest.mark.parametrize("extra,message", [
    ([], "no prompts"),
    (["--prompts", "MISSING"], "does not exist"),
    (["--prompt", "a cat", "--real-images", "MISSING"], "--real-images .*no such folder"),
    (["--prompt", "a cat", "--quantized", "MISSING"], "--quantized .*no such folder"),
    (["--prompt", "a cat", "--quantized", "EMPTY"], "missing quant_config.json"),
    (["--prompt", "a cat", "--inception", "MISSING"], "--inception .*no such file"),
    (["--prompt", "a cat", "--num-prompts", "2"], "asked for 2 prompts but only 1"),
    (["--prompt", "a cat", "--resolution", "60"], "multiple of 8"),
])
def test_cli_bad_inputs_are_one_line(tiny_dir, tmp_path, capsys, extra, message):
    (tmp_path / "empty").mkdir()
    extra = [str(tmp_path / e.lower()) if e in ("MISSING", "EMPTY") else e for e in extra]
    status = main(["benchmark", "--model", str(tiny_dir), "--out", str(tmp_path / "r")] + extra)
    assert status == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    import re

    assert re.search(message, lines[0]), lines[0]


def test_cli_without_inception_weights_names_the_flags(tiny_dir, tmp_path, capsys):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        status = main(["benchmark", "--model", str(tiny_dir), "--prompt", "a cat", "--prompt",
                       "a dog", "--no-clip", "--out", str(tmp_path / "r")])
    finally:
        torch.hub.set_dir(old)
    assert status == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--inception" in lines[0] and "--no-fid" in lines[0]


def test_config_validation():
    with pytest.raises(MixDQError, match="--out"):
        BenchmarkConfig(out_dir="")
    with pytest.raises(MixDQError, match="latency_repeats"):
        BenchmarkConfig(out_dir="x", latency_repeats=0)
    with pytest.raises(MixDQError, match="unknown benchmark setting"):
        BenchmarkConfig.from_dict({"out_dir": "x", "fdi": True})
    config = BenchmarkConfig.from_dict({"out_dir": "x", "generation": {"steps": 2}})
    assert config.generation.steps == 2
    assert BenchmarkConfig.from_dict(config.to_dict()) == config


def test_duplicate_variant_names_are_refused(tiny_dir, tmp_path):
    fp = fp_variant(str(tiny_dir), device="cpu")
    with pytest.raises(MixDQError, match="two variants named 'fp'"):
        run_benchmark([fp, fp], ["a cat"], BenchmarkConfig(out_dir=str(tmp_path)),
                      models=MetricModels())
