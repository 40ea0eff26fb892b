"""What-was-quantized reports and checkpoint byte accounting (tiny, and SDXL on the meta device)."""

import json
from importlib import resources

import pytest
import torch

from quant.bitmap import BitMap, LayerBits
from quant.checkpoint import WEIGHTS_FILE, save_quantized
from quant.measure import format_size_table, measure_checkpoint_sizes, random_unet
from quant.quantize import prepare
from quant.report import planned_report, quantization_report, safetensors_sizes, weight_bytes
from quant.structure import quantizable_layers


def sdxl_config():
    return json.loads(resources.files("quant.configs").joinpath("sdxl_unet.json").read_text())


def test_weight_bytes_formula():
    assert weight_bytes((10, 24), None) == 480
    assert weight_bytes((10, 24), 8) == 240 + 40
    assert weight_bytes((10, 3, 3, 3), 4) == 10 * 14 + 40  # K = 27 -> 14 bytes per row
    assert weight_bytes((10, 27), 2) == 10 * 7 + 40
    assert weight_bytes((10, 27), 5) == 10 * 27 + 40  # 3, 5, 6, 7 bits are stored as int8


def test_report_counts_layers_by_kind_and_bits(fp_unet):
    names = list(quantizable_layers(fp_unet))
    bits = {n: LayerBits(4 if "attn" in n else 8, None if n in ("conv_in", "conv_out") else 8)
            for n in names}
    prepare(fp_unet, BitMap(bits))
    report = quantization_report(fp_unet)
    assert report.layers == 263
    by = {(r.kind, r.w, r.a): r.layers for r in report.rows}
    assert by[("conv2d", 8, None)] == 2 and by[("linear", 4, 8)] == sum(
        "attn" in n for n in names)
    assert sum(v for (k, _, _), v in by.items() if k == "conv2d") == sum(
        isinstance(m, torch.nn.Conv2d) for m in quantizable_layers(fp_unet).values())
    params = sum(m.weight.numel() for m in quantizable_layers(fp_unet).values())
    assert report.bytes_before == 2 * params
    text = report.format()
    assert text.splitlines()[0].split()[:3] == ["kind", "W", "A"] and "% of fp16" in text


def test_checkpoint_bytes_match_the_accounting(fp_unet, tmp_path):
    """Every stored qweight/wscale has exactly the predicted size."""
    names = list(quantizable_layers(fp_unet))
    cycle = [2, 3, 4, 5, 6, 7, 8, None]
    prepare(fp_unet, BitMap({n: LayerBits(cycle[i % 8], None) for i, n in enumerate(names)}),
            weight_scale="minmax")
    out = save_quantized(fp_unet, tmp_path / "q", base_model="tiny")
    sizes = safetensors_sizes(out / WEIGHTS_FILE)
    for name, layer in quantizable_layers(fp_unet).items():
        shape, w = tuple(layer.weight.shape), layer.active_w_bits
        stored = sizes.get(f"{name}.qweight", 0) + sizes.get(f"{name}.wscale", 0)
        scales = 2 if layer.split_weight else 1  # conv_shortcut: one scale per input slice
        assert stored == (0 if w is None else weight_bytes(shape, w, scales)), name
    assert quantization_report(fp_unet).bytes_after == sum(
        weight_bytes(tuple(m.weight.shape), m.active_w_bits, 2 if m.split_weight else 1)
        for m in quantizable_layers(fp_unet).values())


# 26,880 bytes of these are the second float32 scale of the 9 conv_shortcut layers (6,720
# output channels): the original's per-slice weight quantizers.
@pytest.mark.parametrize("bits,limit,expected", [(4, 0.27, 1_288_944_656),
                                                 (8, 0.52, 2_571_884_816)])
def test_sdxl_checkpoint_bytes(bits, limit, expected):
    unet = random_unet(sdxl_config(), meta=True)
    report = planned_report(unet, BitMap.uniform(quantizable_layers(unet), bits, 8))
    assert report.layers == 794 and report.bytes_before == 2 * 2_565_880_320
    assert report.bytes_after == expected
    assert report.bytes_after / report.bytes_before <= limit


def test_measured_sizes_on_a_scaled_down_unet(session_pipe, tmp_path):
    unet = random_unet(dict(session_pipe.unet.config), dtype=torch.float32)
    rows = measure_checkpoint_sizes(unet, [4, 8], tmp_path)
    table = format_size_table(rows)
    print("\n" + table)
    for row, limit in zip(rows, (0.27, 0.52)):
        assert row["weight_bytes"] == row["predicted_bytes"]
        assert row["ratio"] <= limit and row["file_bytes"] > row["weight_bytes"]
    assert len(table.splitlines()) == 3
