"""MixDQ's ablation on the trained proxy (issue: the benchmark's ablation table)."""

import json

import pytest

from quant.proxy.ablation import AblationConfig, _variants, markdown, run_ablation
from quant.errors import MixDQError


def test_every_variant_is_a_valid_stage_call():
    """Each variant's bit-map recipe and quantize options are accepted by the stage API."""
    import inspect

    from quant.quantize import quantize_unet
    from quant.stages import AllocateOptions, QuantizeOptions

    accepted = set(inspect.signature(quantize_unet).parameters)
    descriptions = [d for d, _, _ in _variants().values()]
    assert len(set(descriptions)) == len(descriptions) == 6
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
    with pytest.raises(MixDQError):
        AblationConfig(calib_prompts=0)


def test_markdown_table():
    report = {"eval_captions": 2, "variants": {
        "fp": {"description": "full precision", "content_acc": 1.0, "fid": 3.0, "weight_mb": 2.0},
        "x": {"description": "X", "content_acc": 0.5, "fid": 9.0, "sqnr_db": 20.0,
              "ssim": 0.9, "weight_mb": 0.5}}}
    lines = markdown(report).splitlines()
    assert lines[-2] == "| fp (full precision) | 1.000 | 3.00 | — | — | 2.000 |"
    assert lines[-1] == "| x (X) | 0.500 | 9.00 | 20.00 | 0.9000 | 0.500 |"


@pytest.mark.slow
def test_ablation_end_to_end(tmp_path):
    report = run_ablation(tmp_path, AblationConfig(calib_prompts=16, eval_repeats=1),
                          device="cpu", progress=False, log=lambda s: None)
    rows = report["variants"]
    assert list(rows) == ["fp"] + list(_variants())
    assert rows["fp"]["content_acc"] >= 0.9
    for name in _variants():
        assert {"content_acc", "fid", "sqnr_db", "ssim", "weight_mb"} <= set(rows[name])
        assert rows[name]["weight_mb"] < rows["fp"]["weight_mb"]
    # 8-bit weights and activations stay close to full precision on this model
    assert rows["mixdq-w8a8"]["sqnr_db"] > 15 and rows["mixdq-w8a8"]["content_acc"] >= 0.85
    assert rows["uniform-w4a8"]["weight_mb"] < rows["naive-w8a8"]["weight_mb"] / 1.7
    assert json.loads((tmp_path / "ablation.json").read_text())["variants"].keys() == rows.keys()
    assert (tmp_path / "ablation_grid.png").stat().st_size > 1000
