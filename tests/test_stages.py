"""The stage API (``quant.stages``): typed options, and ``mixdq run`` reproduced byte for byte."""

import dataclasses
from pathlib import Path

import pytest

from quant.errors import MixDQError
from quant.stages import (AllocateOptions, BenchmarkOptions, CalibrateOptions, ModelSpec,
                          QuantizeOptions, SensitivityOptions, allocate, benchmark, calibrate,
                          quantize, sensitivity)

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "configs" / "prompts" / "coco2017_val_first1024.txt"
ALL_OPTIONS = [CalibrateOptions, SensitivityOptions, AllocateOptions, QuantizeOptions,
               BenchmarkOptions]


def _valid(cls):
    return {CalibrateOptions: {"prompts": "p.txt"}, AllocateOptions: {"weight_bits": 4.0},
            QuantizeOptions: {"w_bits": 8, "a_bits": 8},
            BenchmarkOptions: {"prompt": ["a cat"]}}.get(cls, {})


@pytest.mark.parametrize("cls", ALL_OPTIONS)
def test_options_round_trip_and_reject_unknown_keys_and_wrong_types(cls):
    options = cls.from_dict(_valid(cls))
    assert cls.from_dict(options.to_dict()) == options
    with pytest.raises(MixDQError, match=rf"^{cls.SECTION}\.batch_sise: unknown setting"):
        cls.from_dict({**_valid(cls), "batch_sise": 8})
    with pytest.raises(MixDQError, match=r"^my\.section\.nope: unknown setting"):
        cls.from_dict({"nope": 1}, "my.section")
    typed = next(f for f in dataclasses.fields(cls) if f.type in ("int", "int | None"))
    with pytest.raises(MixDQError, match=rf"^{cls.SECTION}\.{typed.name}: expected an integer"):
        cls.from_dict({**_valid(cls), typed.name: "8"})


def test_option_types_and_values():
    assert SensitivityOptions.from_dict({"weight_bits": [2, 4]}).weight_bits == (2, 4)
    assert SensitivityOptions.from_dict({"protect_fraction": 1}).protect_fraction == 1.0
    with pytest.raises(MixDQError, match="sensitivity.no_bos: expected true or false"):
        SensitivityOptions.from_dict({"no_bos": "yes"})
    with pytest.raises(MixDQError, match=r"sensitivity.weight_bits\[1\]: expected an integer"):
        SensitivityOptions.from_dict({"weight_bits": [2, "four"]})
    with pytest.raises(MixDQError, match=r"sensitivity.protect_fraction: must be in \(0, 1\]"):
        SensitivityOptions(protect_fraction=0.0)
    with pytest.raises(MixDQError, match="calibrate.prompts: required"):
        CalibrateOptions.from_dict({})
    with pytest.raises(MixDQError, match="allocate.weight_mb: give weight_bits or weight_mb"):
        AllocateOptions(weight_bits=4.0, weight_mb=1.0)
    alloc = AllocateOptions.from_dict({"act_bits": 8, "weight_candidates": {"content": [2, 4]}})
    assert alloc.weight_candidates == {"content": (2, 4)}
    assert list(alloc.alloc_config().weight_candidates["content"]) == [2, 4]
    with pytest.raises(MixDQError, match="benchmark: give either prompts"):
        BenchmarkOptions(prompts="p.txt", prompt=("a cat",))
    with pytest.raises(MixDQError, match="model.lora_scale: expected a number"):
        ModelSpec("tiny", lora_scale="strong")
    with pytest.raises(MixDQError, match="model.dtyp: unknown setting"):
        ModelSpec.from_dict({"model": "tiny", "dtyp": "fp16"})


RUN = """
model: {model}
calibrate: {{prompts: {prompts}, num_prompts: 2, batch_size: 2}}
sensitivity: {{batch_size: 2, weight_bits: [4, 8], act_bits: [8], no_progress: true}}
variants:
  - {{name: w8a8, quantize: {{w_bits: 8, a_bits: 8, batch_size: 2, no_progress: true}}}}
  - {{name: mixed, quantize: {{batch_size: 2}},
      allocate: {{weight_bits: 6.0, act_bits: 10.0, weight_candidates: {{content: [4, 8]}},
                  act_candidates: {{content: [8], quality: [8]}}}}}}
benchmark: {{prompt: [a red bus, two cats], inception: tiny, clip: tiny, no_latency: true,
             no_image_reward: true}}
"""


def _files(root: Path) -> dict[str, bytes]:
    skip = ("stage.json", "run_config.json", "summary.json", "report.json", "report.md",
            ".jsonl")  # records of the run itself and files with timings
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith(skip)}


def _same(name: str, a: bytes, b: bytes) -> bool:
    """Byte equality, except two things that are not this API's: the safetensors writer orders
    its ``__metadata__`` map arbitrarily (the header is compared as JSON, the tensor bytes
    exactly), and the image records hold the seconds each image took."""
    import json
    import struct

    if a == b:
        return True
    if name.endswith(".safetensors"):
        (na,), (nb,) = struct.unpack("<Q", a[:8]), struct.unpack("<Q", b[:8])
        return (json.loads(a[8:8 + na]) == json.loads(b[8:8 + nb])
                and a[8 + na:] == b[8 + nb:])
    if name.startswith("benchmark/images/") and name.endswith("images.json"):
        def clean(data):
            return json.loads(data, object_hook=lambda d: {k: v for k, v in d.items()
                                                           if k != "seconds"})
        return clean(a) == clean(b)
    return False


@pytest.mark.slow
def test_python_api_reproduces_mixdq_run_byte_for_byte(tiny_dir, tmp_path, monkeypatch):
    from quant.cli import main

    config = tmp_path / "run.yaml"
    config.write_text(RUN.format(model=tiny_dir, prompts=PROMPTS))
    (tmp_path / "cli").mkdir()
    monkeypatch.chdir(tmp_path / "cli")  # both runs write to the same relative paths
    assert main(["run", "--config", str(config), "--out", "run"]) == 0

    (tmp_path / "api").mkdir()
    monkeypatch.chdir(tmp_path / "api")
    model, out = ModelSpec(str(tiny_dir)), Path("run")
    calibrate(model, CalibrateOptions(prompts=str(PROMPTS), num_prompts=2, batch_size=2),
              out / "calib")
    sens = out / "sensitivity" / "sens.csv"
    sensitivity(model, SensitivityOptions(batch_size=2, weight_bits=(4, 8), act_bits=(8,),
                                          no_progress=True), out / "calib", sens)
    w8a8 = out / "variants" / "w8a8" / "quant"
    quantize(model, QuantizeOptions(w_bits=8, a_bits=8, batch_size=2, no_progress=True),
             out / "calib", w8a8)
    bitmap = out / "variants" / "mixed" / "bitmap.json"
    allocate(AllocateOptions(weight_bits=6.0, act_bits=10.0, weight_candidates={"content": (4, 8)},
                             act_candidates={"content": (8,), "quality": (8,)},
                             protect=str(sens.with_name("sens.protect.txt"))), sens, bitmap)
    mixed = out / "variants" / "mixed" / "quant"
    quantize(model, QuantizeOptions(bit_map=str(bitmap), batch_size=2), out / "calib", mixed)
    benchmark(model, BenchmarkOptions(prompt=("a red bus", "two cats"), inception="tiny",
                                      clip="tiny", no_latency=True, no_image_reward=True),
              {"w8a8": w8a8, "mixed": mixed}, out / "benchmark")

    cli, api = _files(tmp_path / "cli" / "run"), _files(tmp_path / "api" / "run")
    assert sorted(cli) == sorted(api)
    for must in ("calib/manifest.json", "sensitivity/sens.csv", "sensitivity/sens.protect.txt",
                 "variants/mixed/bitmap.json", "variants/mixed/quant/quant_config.json",
                 "variants/w8a8/quant/quant_config.json", "benchmark/grid.png"):
        assert must in cli
    images = [n for n in cli if n.startswith("benchmark/images/") and n.endswith(".png")]
    assert len(images) == 6  # 3 variants x 2 prompts
    differ = [name for name in cli if not _same(name, cli[name], api[name])]
    assert differ == [], differ
