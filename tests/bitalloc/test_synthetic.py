"""Synthetic tables with real layer sizes, and the SDXL-sized programs."""

import pytest

from quant.bitalloc import AllocConfig, Budget, allocate
from quant.bitalloc.synthetic import default_group, layer_sizes, synthetic_table


def test_layer_sizes_of_tiny_unet(tiny_pipe):
    from quant.structure import quantizable_layers

    unet = tiny_pipe.unet
    weights, acts = layer_sizes(unet, latent=16)
    layers = quantizable_layers(unet)
    assert list(weights) == list(layers) == list(acts)
    assert weights["conv_in"] == 32 * 4 * 3 * 3 and acts["conv_in"] == 4 * 16 * 16
    name = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"
    assert acts[name] == 77 * 96 and default_group(name) == "content"
    assert default_group("down_blocks.1.attentions.0.proj_in") == "quality"
    table = synthetic_table(weights, acts, seed=1)
    for (layer, target), m in table.entries.items():
        values = [m.sqnr_db[b] for b in sorted(m.sqnr_db)]
        assert values == sorted(values)
        assert bool(m.ssim) == (default_group(layer) == "content")


@pytest.mark.slow
def test_sdxl_sized_programs_are_optimal_within_budget():
    from quant.bitalloc.synthetic import sdxl_sizes

    weights, acts = sdxl_sizes()
    assert len(weights) == 794 and sum(weights.values()) == 2_565_880_320
    table = synthetic_table(weights, acts, seed=0, act_bits=(4, 6, 8))
    three = {"content": (4, 6, 8), "quality": (4, 6, 8)}
    result = allocate(table, Budget.bits("4"), Budget.bits("6"),
                      AllocConfig(act_candidates=three, mode="joint"))
    for r in (result.weight, result.act):
        assert r.status == "Optimal" and r.cost <= r.budget.capacity(r.total_size)
        assert r.avg_bits > float(r.budget.value) - 0.01  # the budget is used, not wasted
    assert len(result.bit_map) == 794
