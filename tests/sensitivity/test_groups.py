"""Grouping and block naming, on the real SDXL UNet configuration (meta device, no weights)."""

import json
from importlib import resources

import pytest
import torch

from quant.errors import MixDQError
from quant.sensitivity.groups import GroupRule, block_of, block_order
from quant.sensitivity.replay import unit_candidates
from quant.structure import quantizable_layers


@pytest.fixture(scope="module")
def sdxl():
    from diffusers import UNet2DConditionModel

    cfg = json.loads(resources.files("quant.configs").joinpath("sdxl_unet.json").read_text())
    with torch.device("meta"):
        return UNet2DConditionModel.from_config(cfg)


def test_default_rule_splits_sdxl_420_content_374_quality(sdxl):
    rule = GroupRule()
    groups = [rule.group(n) for n in quantizable_layers(sdxl)]
    assert groups.count("content") == 420 and groups.count("quality") == 374
    assert rule.group("down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k") == "content"
    assert rule.group("mid_block.attentions.0.transformer_blocks.3.ff.net.2") == "content"
    assert rule.group("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k") == "quality"


def test_custom_rule_and_validation():
    rule = GroupRule(("attn1",))
    assert rule.group("x.attn1.to_q") == "content" and rule.group("x.attn2.to_q") == "quality"
    assert GroupRule.from_dict(rule.to_dict()) == rule
    with pytest.raises(MixDQError, match="non-empty"):
        GroupRule(("",))


def test_blocks_and_units_of_sdxl(sdxl):
    blocks = block_order([block_of(n) for n in quantizable_layers(sdxl)])
    assert blocks == ["conv_in", "time_embedding", "add_embedding", "down_blocks.0",
                      "down_blocks.1", "down_blocks.2", "mid_block", "up_blocks.0",
                      "up_blocks.1", "up_blocks.2", "conv_out"]
    units = unit_candidates(sdxl)
    # 70 transformer blocks, 6 + 2 + 9 resnets, 4 + 1 + 6 attentions (Transformer2DModel).
    assert sum(".transformer_blocks." in u for u in units) == 70
    parents = [u.split(".")[-2] for u in units if "." in u]
    assert parents.count("resnets") == 17 and parents.count("attentions") == 11
