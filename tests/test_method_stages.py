"""``--method paper`` through the stage API, the CLI and ``mixdq run``: each row of the original's
choices holds (issue 15's table), and ``plus`` differs from ``paper`` only by named switches."""

import json
from pathlib import Path

import pytest
import torch

from quant.errors import MixDQError
from quant.methods import PAPER, PLUS_SWITCHES, SWITCHES
from quant.stages import (AllocateOptions, BenchmarkOptions, CalibrateOptions, ModelSpec,
                          QuantizeOptions, SensitivityOptions, allocate, calibrate, quantize,
                          sensitivity)

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "configs" / "prompts" / "coco2017_val_first1024.txt"
STAGES = {"calibrate": (CalibrateOptions, {"prompts": "p.txt"}),
          "sensitivity": (SensitivityOptions, {}),
          "allocate": (AllocateOptions, {"weight_bits": 4.0}),
          "quantize": (QuantizeOptions, {"w_bits": 4, "a_bits": 8}),
          "benchmark": (BenchmarkOptions, {"prompt": ["a cat"]})}
#: options field of a library key where the names differ
ALIASES = {"dtype": "compute_dtype"}


def _resolved(stage, **extra):
    cls, required = STAGES[stage]
    return cls.from_dict({**required, **extra}).to_dict()


@pytest.mark.parametrize("stage", list(STAGES))
def test_paper_is_the_default_of_every_stage(stage):
    options = _resolved(stage)
    assert options["method"] == "paper" and options["switches"] == []
    for key, value in PAPER[stage].items():
        field = ALIASES.get(key, key)
        if field in options:
            assert options[field] == value, (stage, key)


@pytest.mark.parametrize("stage", list(STAGES))
def test_plus_and_each_switch_differ_from_paper_only_by_the_switch(stage):
    paper = _resolved(stage)
    plus = _resolved(stage, method="plus")
    named = {ALIASES.get(k, k) for s in PLUS_SWITCHES for k in SWITCHES[s].get(stage, {})}
    assert {k for k in paper if paper[k] != plus[k]} == {"method"} | named
    for name, switch in SWITCHES.items():
        on = _resolved(stage, switches=[name])
        changed = {k for k in paper if paper[k] != on[k]}
        expected = {ALIASES.get(k, k) for k in switch.get(stage, {})} & set(paper)
        assert changed == {"switches"} | expected, (stage, name)
        # an explicit setting wins over the switch
        for key in expected:
            assert _resolved(stage, switches=[name], **{key: paper[key]})[key] == paper[key]


def test_method_errors_name_the_key():
    with pytest.raises(MixDQError, match=r"^sensitivity\.method: expected one of paper, plus"):
        SensitivityOptions(method="mixdq")
    with pytest.raises(MixDQError, match=r"^quantize\.switches: unknown method switch 'turbo'"):
        QuantizeOptions(w_bits=4, a_bits=8, switches=("turbo",))
    with pytest.raises(MixDQError, match=r"^allocate\.switches: unknown method switch"):
        AllocateOptions(weight_bits=4.0, switches=("turbo",))
    with pytest.raises(MixDQError, match=r"^allocate\.pick_prompts: a measured pick needs at "
                                         r"least 4 prompts, got 3"):
        AllocateOptions(weight_bits=4.0, pick_prompts=3)


def test_allocate_config_file_overrides_the_method_and_options_override_the_file(tmp_path):
    config = tmp_path / "alloc.yaml"
    config.write_text("mode: joint\nweight_storage: int4\n")
    options = AllocateOptions(weight_bits=4.0, config=str(config))
    assert (options.mode, options.weight_storage, options.measured_pick) == ("joint", "int4",
                                                                            False)
    options = AllocateOptions(weight_bits=4.0, config=str(config), mode="split")
    assert options.alloc_config().mode == "split" and options.measured_pick


def test_ssim_of_the_paper_sensitivity_sees_a_5x5_blur_of_a_512px_image():
    from quant.sensitivity.metrics import SsimMeter, to_uint8_levels

    gen = torch.Generator().manual_seed(0)  # 1/f noise: a natural-image-like spectrum
    freq = torch.fft.fftfreq(512)
    radius = (freq[:, None] ** 2 + freq[None, :] ** 2).sqrt().clamp(min=1.0 / 512)
    noise = torch.fft.ifft2(torch.randn(3, 512, 512, generator=gen, dtype=torch.complex64)
                            / radius).real
    natural = (0.5 + 0.18 * (noise - noise.mean()) / noise.std()).clamp(0, 1).unsqueeze(0)
    config = SensitivityOptions().measure_config()
    image = to_uint8_levels(natural)
    blurred = torch.nn.functional.avg_pool2d(
        torch.nn.functional.pad(image, (2, 2, 2, 2), mode="reflect"), 5, stride=1)
    meter = SsimMeter(image, config.ssim_config)
    assert (meter.factor, meter.window) == (1, 511)
    assert float(meter.scores(blurred, torch.arange(1))) < 0.9
    # ssim_size 0 also means the decoded resolution; N downsamples (blind to the blur)
    assert SensitivityOptions(ssim_size=0).measure_config().ssim_size is None
    small = SsimMeter(image, SensitivityOptions(ssim_size=32).measure_config().ssim_config)
    assert float(small.scores(blurred, torch.arange(1))) > 0.99


def test_fp32_calibration_and_sensitivity_on_cuda_unless_the_model_says_otherwise():
    from quant.precision import resolve_dtype

    for options in (CalibrateOptions(prompts="p.txt"), SensitivityOptions()):
        assert options.compute_dtype == "float32"
    spec = CalibrateOptions(prompts="p.txt").model(ModelSpec("tiny"))
    assert resolve_dtype("cuda", spec.dtype) == torch.float32
    assert resolve_dtype("cuda", ModelSpec("tiny").dtype) == torch.float16  # the stages' default
    fast = CalibrateOptions(prompts="p.txt", switches=("fp16_sensitivity",))
    assert resolve_dtype("cuda", fast.model(ModelSpec("tiny")).dtype) == torch.float16
    assert SensitivityOptions(switches=("fp16_sensitivity",)).measure_config().dtype == "float16"
    explicit = ModelSpec("tiny", dtype="bf16")
    assert CalibrateOptions(prompts="p.txt").model(explicit) is explicit


def test_calibrate_stage_reads_coco_in_annotation_order(tiny_dir, tmp_path):
    coco = tmp_path / "captions.json"
    captions = [f"a photo number {i}" for i in range(6)]
    images = [{"id": 10 + i} for i in range(6)]
    order = [4, 1, 5, 0, 3, 2]  # first appearance in annotations differs from the images list
    annotations = [{"image_id": 10 + i, "id": k, "caption": captions[i]}
                   for k, i in enumerate(order)]
    annotations += [{"image_id": 10 + i, "id": 10 + i, "caption": f"second {i}"} for i in range(6)]
    coco.write_text(json.dumps({"images": images, "annotations": annotations}))
    model = ModelSpec(str(tiny_dir), device="cpu")
    out = calibrate(model, CalibrateOptions(prompts=str(coco), num_prompts=4, batch_size=4,
                                            no_progress=True), tmp_path / "calib",
                    log=lambda line: None)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["prompts"] == [captions[i] for i in order[:4]]
    options = CalibrateOptions(prompts=str(coco), num_prompts=4, coco_order="images")
    from quant.calib.prompts import read_prompts

    assert read_prompts(str(coco), num_prompts=4, coco_order=options.coco_order).prompts == \
        captions[:4]


@pytest.fixture(scope="module")
def paper_run(tiny_dir, tmp_path_factory):
    """Calibration (4 prompts), a sensitivity table and a paper allocation, by the stage API."""
    out = tmp_path_factory.mktemp("paper")
    model = ModelSpec(str(tiny_dir), device="cpu")
    calib = calibrate(model, CalibrateOptions(prompts=str(PROMPTS), num_prompts=4, batch_size=4,
                                              no_progress=True), out / "calib",
                      log=lambda line: None)
    sens = out / "sens.csv"
    summary = sensitivity(model, SensitivityOptions(batch_size=4, weight_bits=(2, 4, 8),
                                                    act_bits=(4, 8), no_progress=True),
                          calib, sens, log=lambda line: None)
    return model, calib, sens, summary


@pytest.mark.slow
def test_sensitivity_stage_protects_per_group_at_a8(paper_run):
    from quant.sensitivity.results import read_csv, read_protect

    _, _, sens, _ = paper_run
    rows = read_csv(sens)
    protect = read_protect(sens.with_name("sens.protect.txt"))
    act8 = [r for r in rows if r.target == "act" and r.bits == 8]
    quality = sorted((r for r in act8 if r.group == "quality"), key=lambda r: r.sqnr_db)
    content = sorted((r for r in act8 if r.group == "content"), key=lambda r: r.ssim)
    n_q, n_c = -(-len(quality) // 100), -(-len(content) // 100)  # 1% per group, rounded up
    assert protect == [r.layer for r in quality[:n_q]] + [r.layer for r in content[:n_c]]
    settings = json.loads((sens.parent / "sens.csv.parts" / "settings.json").read_text())
    assert {k: settings["config"][k] for k in ("protect_rule", "weight_scale", "dtype",
                                                 "ssim_size")} == {
        "protect_rule": "group", "weight_scale": "minmax", "dtype": "float32", "ssim_size": None}
    assert settings["dtype"] == "float32"


@pytest.mark.slow
def test_allocate_stage_splits_and_picks_by_images_of_4_prompts(paper_run, tmp_path):
    from quant.bitalloc import AllocConfig, Budget, SensitivityTable
    from quant.bitalloc import allocate as solve
    from quant.bitalloc.pick import ImageScore
    from quant.calib import CalibrationData

    model, calib, sens, _ = paper_run
    options = AllocateOptions(weight_bits=4.0, act_bits=8.0)
    assert options.measured_pick
    with pytest.raises(MixDQError, match="--calib"):
        allocate(options, sens, tmp_path / "m.json")
    lines = []
    result = allocate(options, sens, tmp_path / "map.json", model=model, calib=calib,
                      log=lines.append)
    assert any(line.startswith("measured pick: images of 4 calibration prompts")
               for line in lines)
    assert result.weight.mode == "split" and result.act.mode == "split"
    # the same as the library's split allocation scored by images of the first 4 prompts
    data = CalibrationData(calib)
    pipe = model.load()
    kwargs = data.generate_kwargs()
    seed = kwargs.pop("seed")
    score = ImageScore(pipe, data.prompts[:4], list(data.batches(8)), seed=seed,
                       generate_kwargs=kwargs)
    expected = solve(SensitivityTable.read(sens), Budget.bits("4.0"), Budget.bits("8.0"),
                     AllocConfig(), [], score)
    assert result.bit_map.layers == expected.bit_map.layers
    assert len({m.score for m in score.history}) > 1  # candidates were told apart by images
    predicted = allocate(options.replace(pick="predicted"), sens, tmp_path / "p.json")
    assert predicted.weight.mode == "split"


@pytest.mark.slow
def test_quantize_stage_paper_minmax_and_conv_shortcut_weight_and_act_split(paper_run, tmp_path):
    from safetensors.torch import load_file

    from quant.quantizer import weight_scale_minmax
    from quant.structure import concat_splits

    model, calib, _, _ = paper_run
    out = quantize(model, QuantizeOptions(w_bits=4, a_bits=8, batch_size=4, no_progress=True),
                   calib, tmp_path / "q", log=lambda line: None)
    tensors = load_file(str(out / "unet_quant.safetensors"))
    config = json.loads((out / "quant_config.json").read_text())
    unet = model.load().unet
    shortcuts = concat_splits(unet, ("conv_shortcut",))
    conv1 = concat_splits(unet, ("conv1",))
    assert shortcuts and conv1
    for name, split in shortcuts.items():
        w = unet.get_submodule(name).weight.detach().float()
        scale = tensors[f"{name}.wscale"]
        assert tuple(scale.shape) == (w.shape[0], 2)
        for i, part in enumerate((w[:, :split], w[:, split:])):
            assert torch.equal(scale[:, i], weight_scale_minmax(part.reshape(w.shape[0], -1), 4))
        assert tensors[f"{name}.act_scale"].numel() == 2
    for name in conv1:
        w = unet.get_submodule(name).weight.detach().float()
        assert torch.equal(tensors[f"{name}.wscale"],
                           weight_scale_minmax(w.reshape(w.shape[0], -1), 4))
        assert tensors[f"{name}.act_scale"].numel() == 1
    meta = json.dumps(config)
    assert '"method": "paper"' in meta and '"weight_scale": "minmax"' in meta
    # plus with the conv1 switch: conv1 gets per-slice activation quantizers, nothing else
    split = quantize(model, QuantizeOptions(w_bits=4, a_bits=8, batch_size=4, no_progress=True,
                                            method="plus", switches=("conv1_split",)),
                     calib, tmp_path / "q1", log=lambda line: None)
    more = load_file(str(split / "unet_quant.safetensors"))
    assert all(more[f"{name}.act_scale"].numel() == 2 for name in conv1)
    assert all(torch.equal(more[f"{name}.wscale"], tensors[f"{name}.wscale"])
               for name in shortcuts)


def test_cli_defaults_are_paper_and_switches_reach_the_options():
    from quant.cli import build_parser
    from quant.cli.common import stage_options

    parser = build_parser()
    cases = {"calibrate": ["--prompts", "p.txt", "--out", "c"],
             "sensitivity": ["--calib", "c", "--out", "s.csv"],
             "allocate": ["--sensitivity", "s.csv", "--weight-bits", "4", "--out", "m.json"],
             "quantize": ["--calib", "c", "--w-bits", "4", "--a-bits", "8", "--out", "q"],
             "benchmark": ["--prompt", "a cat", "--out", "b"]}
    for stage, argv in cases.items():
        cls, _ = STAGES[stage]
        args = parser.parse_args([stage, *argv])
        extra = {"weight_bits": 4.0} if stage == "allocate" else {}
        options = stage_options(cls, args, **extra).to_dict()
        assert options["method"] == "paper" and options["switches"] == []
        for key, value in PAPER[stage].items():
            if ALIASES.get(key, key) in options:
                assert options[ALIASES.get(key, key)] == value, (stage, key)
        plus = parser.parse_args([stage, *argv, "--method", "plus", "--switch", "mse_clipping"])
        options = stage_options(cls, plus, **extra)
        assert options.method == "plus" and options.switches == ("mse_clipping",)
        if stage in ("sensitivity", "quantize"):
            assert options.weight_scale == "mse"
    args = parser.parse_args(["sensitivity", *cases["sensitivity"], "--protect-rule", "global",
                              "--ssim-size", "32", "--compute-dtype", "float16"])
    options = stage_options(SensitivityOptions, args)
    assert (options.protect_rule, options.ssim_size, options.compute_dtype) == (
        "global", 32, "float16")
    args = parser.parse_args(["quantize", *cases["quantize"], "--conv1-split"])
    assert stage_options(QuantizeOptions, args).conv1_split is True


def test_run_config_method_applies_to_every_stage_and_records_resolved_values(tmp_path):
    from quant.run import RunConfig, plan

    config = RunConfig.load(ROOT / "configs" / "tiny.yaml")
    stages = plan(config, tmp_path / "run")
    records = {s.name: s.record for s in stages}
    assert records["sensitivity"]["options"]["weight_scale"] == "minmax"
    assert records["sensitivity"]["options"]["protect_rule"] == "group"
    assert records["calibrate"]["options"]["coco_order"] == "annotations"
    assert records["calibrate"]["options"]["compute_dtype"] == "float32"
    alloc = records["allocate mixdq-w4a8"]
    assert alloc["options"]["mode"] == "split" and alloc["options"]["pick"] == "images"
    assert alloc["calib"].endswith("calib") and alloc["model"]["model"] == "tiny"
    assert records["quantize w4a8"]["options"]["conv1_split"] is False
    plus = RunConfig.load(ROOT / "configs" / "tiny.yaml",
                          ["method=plus", "switches=[mse_clipping, conv1_split]"])
    records = {s.name: s.record for s in plan(plus, tmp_path / "plus")}
    assert all(r["options"]["method"] == "plus" for r in records.values())
    assert records["sensitivity"]["options"]["weight_scale"] == "mse"
    assert records["quantize w4a8"]["options"]["conv1_split"] is True
    over = RunConfig.load(ROOT / "configs" / "tiny.yaml",
                          ["switches=[mse_clipping]", "sensitivity.weight_scale=minmax"])
    assert (over.sensitivity.weight_scale, over.variants[0].quantize.weight_scale) == (
        "minmax", "mse")
    with pytest.raises(MixDQError, match=r"^sensitivity\.method: set method at the top level"):
        RunConfig.load(ROOT / "configs" / "tiny.yaml", ["sensitivity.method=plus"])
    with pytest.raises(MixDQError, match=r"^switches: unknown method switch 'turbo'"):
        RunConfig.load(ROOT / "configs" / "tiny.yaml", ["switches=[turbo]"])
    with pytest.raises(MixDQError, match=r"^method: unknown method 'mixdq'"):
        RunConfig.load(ROOT / "configs" / "tiny.yaml", ["method=mixdq"])
    for name in ("w4a8", "w5a8", "w8a8"):
        sdxl = RunConfig.load(ROOT / "configs" / f"sdxl_turbo_{name}.yaml")
        assert sdxl.calibrate.method == "paper" and sdxl.sensitivity.protect_rule == "group"
        assert sdxl.variants[0].allocate.measured_pick
