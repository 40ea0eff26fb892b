"""Pipeline families through the stage options, the CLI and the run config (fast: nothing runs).

Every bundled run config loads and validates; ``--model tiny-sd15|tiny-sd21|tiny-sdxl`` is
listed by every stage that loads a model; ``range_reduction`` is a checked quantize option; the
model's usual steps/guidance come from its folder (family, scheduler, LoRA, override).
"""

import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from quant.errors import MixDQError
from quant.models.families import usual_settings
from quant.models.spec import ModelSpec
from quant.run import RunConfig
from quant.stages import BenchmarkOptions, CalibrateOptions, QuantizeOptions

CONFIGS = sorted(Path(str(resources.files("quant.configs"))).glob("*.yaml"))


def test_every_preset_is_bundled():
    names = {p.name for p in CONFIGS}
    assert {"sd15_lcm_lora_w8a8.yaml", "sd_turbo_w8a8.yaml", "sdxl_lightning_w4a8.yaml",
            "tiny_sd15.yaml", "tiny_sd21.yaml", "tiny_sdxl.yaml", "tiny.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_bundled_run_config_validates(path):
    config = RunConfig.load(path)
    assert config.variants and config.calibrate.prompts
    assert Path(config.calibrate.prompts).is_file()  # resolved next to the config


@pytest.mark.parametrize("name,model,steps,guidance", [
    ("tiny_sd15.yaml", "tiny-sd15", 4, 1.0),
    ("tiny_sd21.yaml", "tiny-sd21", 2, 0.0),
    ("tiny_sdxl.yaml", "tiny-sdxl", 2, 3.0),
    ("sd15_lcm_lora_w8a8.yaml", "stable-diffusion-v1-5/stable-diffusion-v1-5", 4, 1.0),
    ("sdxl_lightning_w4a8.yaml", "stabilityai/stable-diffusion-xl-base-1.0", 4, 0.0),
])
def test_family_presets_plan(name, model, steps, guidance):
    config = RunConfig.load(Path(str(resources.files("quant.configs"))) / name)
    assert config.model.model == model
    assert (config.calibrate.steps, config.calibrate.guidance) == (steps, guidance)
    assert (config.benchmark.steps, config.benchmark.guidance) == (steps, guidance)


def test_run_config_model_scheduler_and_negative_prompt(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: tiny-sdxl\nscheduler: LCMScheduler\n"
                    "calibrate: {prompts: p.txt, guidance: 3.0, negative_prompt: blurry}\n"
                    "variants: [{name: a, quantize: {w_bits: 8, a_bits: 8, "
                    "range_reduction: minmax}}]\n"
                    "benchmark: {prompt: [a cat], negative_prompt: blurry}\n")
    config = RunConfig.load(path)
    assert config.model.scheduler == "LCMScheduler"
    assert config.calibrate.negative_prompt == "blurry" and config.calibrate.steps is None
    assert config.benchmark.negative_prompt == "blurry"
    assert config.variants[0].quantize.range_reduction == "minmax"
    with pytest.raises(MixDQError, match=r"a\.quantize\.range_reduction: expected one of"):
        RunConfig.load(path, ["variants=[{name: a, quantize: {w_bits: 8, a_bits: 8, "
                              "range_reduction: median}}]"])
    with pytest.raises(MixDQError, match="model.scheduler: 'Euler' is not a diffusers scheduler"):
        RunConfig.load(path, ["scheduler=Euler"])


def test_option_types_and_defaults():
    assert QuantizeOptions(w_bits=8, a_bits=8).range_reduction == "auto"
    assert QuantizeOptions.from_dict({"w_bits": 8, "a_bits": 8, "range_reduction": "ema"}
                                     ).range_reduction == "ema"
    with pytest.raises(MixDQError, match="quantize.range_reduction: expected one of auto, ema, "
                                         "minmax, mean, got 'max'"):
        QuantizeOptions(w_bits=8, a_bits=8, range_reduction="max")
    assert CalibrateOptions(prompts="x").steps is None  # the model's usual
    with pytest.raises(MixDQError, match="calibrate.negative_prompt: expected a string"):
        CalibrateOptions.from_dict({"prompts": "x", "negative_prompt": ["a"]})
    with pytest.raises(MixDQError, match="benchmark.steps: must be positive"):
        BenchmarkOptions(prompt=("a",), steps=0)


@pytest.mark.parametrize("model,lora,scheduler,expected", [
    ("tiny", None, None, (1, 0.0)),  # SDXL-Turbo shaped
    ("tiny-sd15", None, None, (4, 1.0)),  # SD 1.5 + LCM
    ("tiny-sd21", None, None, (1, 0.0)),  # SD-Turbo
    ("tiny-sdxl", None, None, (4, 0.0)),  # SDXL-Lightning (Euler, trailing)
    ("tiny-sdxl", None, "LCMScheduler", (4, 1.0)),  # the override decides
    ("tiny-sdxl", None, "DDIMScheduler", (25, 7.5)),  # an undistilled sampler: base settings
])
def test_usual_settings_from_the_folder(model, lora, scheduler, expected):
    assert ModelSpec(model, scheduler=scheduler, lora=lora).usual_settings() == expected


def test_usual_settings_follow_the_lora():
    sd = {"_class_name": "StableDiffusionPipeline", "scheduler": ["diffusers", "PNDMScheduler"]}
    xl = {"_class_name": "StableDiffusionXLPipeline",
          "scheduler": ["diffusers", "EulerDiscreteScheduler"]}
    assert usual_settings(sd) == (25, 7.5)  # SD 1.5 base
    assert usual_settings(sd, "latent-consistency/lcm-lora-sdv1-5") == (4, 1.0)
    assert usual_settings(
        xl, "ByteDance/SDXL-Lightning/sdxl_lightning_4step_lora.safetensors") == (4, 0.0)
    assert usual_settings({"_class_name": "KandinskyPipeline"}) == (25, 7.5)


@pytest.mark.parametrize("command", ["calibrate", "sensitivity", "quantize", "benchmark",
                                     "generate"])
def test_every_model_stage_lists_the_tiny_families(command):
    out = subprocess.run([sys.executable, "-m", "quant", command, "--help"],
                         capture_output=True, text=True, check=True).stdout
    flat = " ".join(out.split())
    for name in ("tiny-sd15", "tiny-sd21", "tiny-sdxl", "--scheduler"):
        assert name in flat, (command, name)
    if command == "quantize":
        assert "--range-reduction {auto,ema,minmax,mean}" in flat
    if command in ("calibrate", "benchmark", "generate"):
        assert "--negative-prompt" in flat


def test_cli_flags_reach_the_options():
    from quant.cli import build_parser
    from quant.cli.common import model_spec, stage_options

    args = build_parser().parse_args(
        ["quantize", "--model", "tiny-sd21", "--scheduler", "EulerDiscreteScheduler",
         "--calib", "c", "--w-bits", "8", "--a-bits", "8", "--range-reduction", "minmax",
         "--out", "q"])
    assert stage_options(QuantizeOptions, args).range_reduction == "minmax"
    assert model_spec(args) == ModelSpec("tiny-sd21", scheduler="EulerDiscreteScheduler")
    args = build_parser().parse_args(["calibrate", "--model", "tiny-sd15", "--prompts", "p",
                                      "--negative-prompt", "low quality", "--out", "c"])
    options = stage_options(CalibrateOptions, args)
    assert (options.steps, options.guidance, options.negative_prompt) == (None, None,
                                                                          "low quality")
