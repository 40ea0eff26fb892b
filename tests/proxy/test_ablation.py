"""MixDQ's ablation on the trained proxy (issue: the benchmark's ablation table)."""

import json

import pytest

from quant.errors import MixDQError
from quant.proxy.ablation import (
    AblationConfig,
    Stages,
    _variants,
    markdown,
    run_ablation,
)


def test_variants_cover_the_ablation():
    names = list(_variants())
    assert names == ["naive-w8a8", "naive-w8a8+bos", "uniform-w4a8", "mixdq-sqnr-w4a8",
                     "mixdq-w8a8", "mixdq-w5a8", "mixdq-w4a8"]
    specs = {n: (spec, opts) for n, (_, spec, opts) in _variants().items()}
    assert specs["naive-w8a8"] == (("uniform", 8, 8), {"weight_scale": "minmax", "bos": False})
    assert specs["naive-w8a8+bos"][1]["bos"] is True
    assert specs["mixdq-sqnr-w4a8"][0][-1] == "sqnr" and specs["mixdq-w4a8"][0][-1] == "ssim"
    assert specs["mixdq-w5a8"][0] == ("allocate", 5.0, 8.0, "ssim")


def test_every_variant_is_a_valid_stage_call():
    """Each variant's bit-map recipe and quantize options are accepted by the stage API."""
    import inspect

    from quant.quantize import quantize_unet
    from quant.stages import AllocateOptions, QuantizeOptions

    accepted = set(inspect.signature(quantize_unet).parameters)
    descriptions = [d for d, _, _ in _variants().values()]
    assert len(set(descriptions)) == len(descriptions) == 7
    kinds = set()
    for name, (_, how, options) in _variants().items():
        assert set(options) <= accepted, name
        kinds.add(how[0])
        if how[0] == "uniform":
            QuantizeOptions(w_bits=how[1], a_bits=how[2],
                            weight_scale=options.get("weight_scale", "mse"))
        else:
            _, w, a, metric = how
            AllocateOptions(weight_bits=w, act_bits=a, content_metric=metric).alloc_config()
    assert kinds == {"uniform", "allocate"}


def test_ablation_config_and_method():
    with pytest.raises(MixDQError):
        AblationConfig(calib_prompts=0)
    # >= 512 held-out images per variant by default
    from quant.proxy.scenes import HELD_OUT

    assert AblationConfig().split == "heldout"
    assert len(HELD_OUT) * AblationConfig().eval_repeats == 602
    # the method preset reaches every stage's options that has the field
    from quant.models import ModelSpec
    from quant.stages import CalibrateOptions, SensitivityOptions

    assert AblationConfig(method="plus").method == "plus"
    stages = Stages(ModelSpec("proxy"), method="plus")
    assert stages.options(SensitivityOptions, batch_size=3).method == "plus"
    assert stages.options(CalibrateOptions, prompts="p.txt").method == "plus"
    assert Stages(ModelSpec("proxy")).options(SensitivityOptions).method == "paper"


def test_markdown_table():
    report = {"eval_captions": 2, "settings": {"split": "heldout", "method": None}, "variants": {
        "fp": {"description": "full precision", "content_acc": 1.0, "content_lo": 0.342,
               "content_hi": 1.0, "fid": 3.0, "weight_mb": 2.0},
        "x": {"description": "X", "content_acc": 0.5, "fid": 9.0, "sqnr_db": 20.0,
              "ssim": 0.9, "quality": 12.34, "weight_mb": 0.5}}}
    lines = markdown(report).splitlines()
    assert lines[0].endswith("(2 heldout captions, 1 step, method: library defaults)")
    assert lines[-2] == "| fp (full precision) | 1.000 [0.342, 1.000] | 3.00 | — | — | — | 2.000 |"
    assert lines[-1] == "| x (X) | 0.500 | 9.00 | 12.3 | 20.00 | 0.9000 | 0.500 |"


@pytest.mark.slow
def test_ablation_end_to_end(tmp_path):
    report = run_ablation(tmp_path, AblationConfig(calib_prompts=16, eval_repeats=2),
                          device="cpu", progress=False, log=lambda s: None)
    rows = report["variants"]
    assert list(rows) == ["fp"] + list(_variants())
    assert rows["fp"]["content_acc"] >= 0.9
    for name in _variants():
        assert {"content_acc", "content_lo", "content_hi", "fid", "quality", "sqnr_db", "ssim",
                "weight_mb"} <= set(rows[name])
        assert rows[name]["content_lo"] <= rows[name]["content_acc"] <= rows[name]["content_hi"]
        assert rows[name]["weight_mb"] < rows["fp"]["weight_mb"]
    # one-step epsilon amplifies 4-bit errors on the noise path: uniform W4A8 loses the content
    # that mixed precision at the same bytes keeps (it protects that path)
    assert rows["uniform-w4a8"]["content_acc"] + 0.1 < rows["mixdq-w4a8"]["content_acc"]
    assert rows["mixdq-w8a8"]["content_acc"] >= 0.85
    assert rows["uniform-w4a8"]["weight_mb"] < rows["naive-w8a8"]["weight_mb"] / 1.7
    assert json.loads((tmp_path / "ablation.json").read_text())["variants"].keys() == rows.keys()
    grid = (tmp_path / "ablation_grid.png").read_bytes()
    assert len(grid) > 1000
    # resumed: every variant comes from its cache, and the grid still shows all of them
    (tmp_path / "ablation_grid.png").unlink()
    lines = []
    again = run_ablation(tmp_path, AblationConfig(calib_prompts=16, eval_repeats=2),
                         device="cpu", progress=False, log=lines.append)
    assert not [line for line in lines if line.startswith(tuple(f"[ablation] {n}:"
                                                                 for n in _variants()))]
    assert again["variants"] == rows
    assert (tmp_path / "ablation_grid.png").read_bytes() == grid
