"""The real SD 1.5 and SD 2.1 (SD-Turbo) UNet configurations, built on the meta device."""

import json
from importlib import resources

import pytest
import torch
from torch import nn

from quant.structure import is_cross_attention_kv, quantizable_layers


def unet_meta(name):
    from diffusers import UNet2DConditionModel

    cfg = json.loads(resources.files("quant.configs").joinpath(name).read_text())
    with torch.device("meta"):
        return UNet2DConditionModel.from_config(cfg)


# (config, parameters, linear layers, conv layers, attn2+ff layers, cross-attention K/V layers)
CASES = [
    # SD 1.5: conv proj_in/proj_out (no linear projection), 16 transformer blocks, 768-d text.
    ("sd15_unet.json", 859_520_964, 184, 98, 96, 32),
    # SD 2.1 / SD-Turbo: linear projection (proj_in/out become Linear), 1024-d OpenCLIP text.
    ("sd21_unet.json", 865_910_724, 216, 66, 96, 32),
]


@pytest.mark.parametrize("name,params,linear,conv,attn2_ff,kv", CASES)
def test_sd_unet_structure(name, params, linear, conv, attn2_ff, kv):
    unet = unet_meta(name)
    assert sum(p.numel() for p in unet.parameters()) == params
    assert unet.config.addition_embed_type is None  # no pooled text / size conditions
    layers = quantizable_layers(unet)
    assert sum(isinstance(m, nn.Linear) for m in layers.values()) == linear
    assert sum(isinstance(m, nn.Conv2d) for m in layers.values()) == conv
    assert sum(("attn2" in n or "ff" in n) for n in layers) == attn2_ff
    names = [n for n in layers if is_cross_attention_kv(n, unet)]
    assert len(names) == kv
    assert names == [n for n in layers if is_cross_attention_kv(n)]
    text_dim = unet.config.cross_attention_dim
    assert all(layers[n].in_features == text_dim for n in names)
