"""Measured rows against an independent, naive computation with the quantization core."""

import math

import pytest
import torch

from quant.sensitivity.config import SensitivityConfig
from quant.sensitivity.measure import Measurer

LAYERS = ["conv_in",
          "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",  # BOS-aware
          "up_blocks.1.attentions.0.transformer_blocks.0.ff.net.2",
          "up_blocks.2.resnets.0.conv_shortcut",  # input = concat(hidden, skip): split
          "conv_out"]


@pytest.fixture
def measurer(pipe, calib):
    config = SensitivityConfig(batch_size=4)  # as recorded: the float model reproduces it
    return Measurer(pipe, calib, config, LAYERS, device=torch.device("cpu"),
                    dtype=torch.float32)


@torch.no_grad()
def naive_sqnr(tiny_dir, calib, name, target, bits):
    """Full forwards of a freshly quantized UNet with only ``name``'s ``target`` switched on."""
    from quant.bitmap import BitMap
    from quant.models import load_fp_pipeline
    from quant.quantize import quantize_unet, run_unet
    from quant.structure import quantizable_layers

    unet = load_fp_pipeline(str(tiny_dir), device="cpu").unet
    batches = list(calib.batches(4))
    quantize_unet(unet, BitMap.uniform(quantizable_layers(unet), 8, 8), batches, progress=False)
    for layer_name, layer in quantizable_layers(unet).items():
        layer.enable(weight=False, act=False)
        if layer_name != name:
            layer.bos = False
    layer = unet.get_submodule(name)
    layer.set_bits(**{"w" if target == "weight" else "a": bits})
    layer.enable(**{target if target == "weight" else "act": True})
    signal = noise = 0.0
    for batch in batches:
        y = run_unet(unet, batch).double()
        ref = batch["output"].double()
        signal += float(ref.square().sum())
        noise += float((y - ref).square().sum())
    return 10 * math.log10(signal / noise)


def test_rows_agree_with_naive_full_forwards(measurer, tiny_dir, calib):
    assert measurer.baseline.sqnr_db == math.inf  # the unperturbed model is the float model
    assert measurer.baseline.max_pixel_diff <= 1.0 + 1e-4
    rows = {name: measurer.measure(name) for name in LAYERS}
    for name, target, bits in [("down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",
                                "act", 4),
                               ("up_blocks.2.resnets.0.conv_shortcut", "weight", 2),
                               ("conv_in", "act", 8)]:
        row = next(r for r in rows[name] if (r.target, r.bits) == (target, bits))
        assert row.sqnr_db == pytest.approx(naive_sqnr(tiny_dir, calib, name, target, bits),
                                            abs=1e-6)
    for name, layer_rows in rows.items():
        assert [(r.target, r.bits) for r in layer_rows] == [
            ("weight", 2), ("weight", 4), ("weight", 8), ("act", 4), ("act", 8)]
        w = [r.sqnr_db for r in layer_rows[:3]]
        a = [r.sqnr_db for r in layer_rows[3:]]
        assert w[0] < w[1] < w[2] and a[0] < a[1], name
        assert all(3 < s < 120 for s in w + a), name
        content = "attn2" in name or "ff" in name
        assert all((r.ssim is not None) == content for r in layer_rows)
        assert all(r.group == ("content" if content else "quality") for r in layer_rows)
        for r in layer_rows:
            if r.ssim is not None:
                assert 0.99 < r.ssim <= 1 + 1e-6
    sizes = {name: (layer_rows[0].size, layer_rows[-1].size) for name, layer_rows in rows.items()}
    assert sizes["conv_in"] == (32 * 4 * 3 * 3, 4 * 16 * 16)
    assert sizes["down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"] == (96 * 64, 77 * 96)
    assert measurer.evaluations_done == 25 and measurer.unet_seconds > 0


def test_measuring_restores_the_layer_and_repeats_exactly(measurer):
    name = "up_blocks.2.resnets.0.conv_shortcut"
    first = measurer.measure(name)
    layer = measurer.switch.layers[name]
    assert (layer.w_enabled, layer.a_enabled, layer.bos) == (False, False, False)
    assert measurer.measure(name) == first
    kv = measurer.switch.layers["down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"]
    assert kv.bos is False and measurer.switch._bos[
        "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"] is True
