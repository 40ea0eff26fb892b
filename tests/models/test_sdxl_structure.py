"""The real SDXL(-Turbo) UNet configuration, built on the meta device: later stages rely on it."""

import json
from importlib import resources

import torch
from torch import nn

from quant.structure import is_cross_attention_kv, quantizable_layers


def sdxl_unet_meta():
    from diffusers import UNet2DConditionModel

    cfg = json.loads(resources.files("quant.configs").joinpath("sdxl_unet.json").read_text())
    with torch.device("meta"):
        return UNet2DConditionModel.from_config(cfg)


def test_sdxl_unet_structure():
    unet = sdxl_unet_meta()
    assert sum(p.numel() for p in unet.parameters()) == 2_567_463_684
    layers = quantizable_layers(unet)
    assert sum(isinstance(m, nn.Linear) for m in layers.values()) == 743
    assert sum(isinstance(m, nn.Conv2d) for m in layers.values()) == 51
    assert sum(("attn2" in n or "ff" in n) for n in layers) == 420
    kv = [n for n in layers if is_cross_attention_kv(n, unet)]
    assert len(kv) == 140
    assert kv == [n for n in layers if is_cross_attention_kv(n)]
