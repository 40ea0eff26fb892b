"""The paper / plus presets: paper is every library default, plus only named switches."""

import inspect

import pytest

from quant.bitalloc import AllocConfig
from quant.calib.prompts import read_prompts
from quant.errors import MixDQError
from quant.methods import (
    PAPER,
    PLUS_SWITCHES,
    SWITCHES,
    apply_switches,
    describe,
    method_settings,
)
from quant.quantize import prepare, quantize_unet
from quant.sensitivity.config import SensitivityConfig


def _default(fn, name):
    return inspect.signature(fn).parameters[name].default


def test_paper_is_the_library_default():
    paper = method_settings()
    assert paper == method_settings("paper") == PAPER
    sens = SensitivityConfig()
    for key, value in paper["sensitivity"].items():
        assert getattr(sens, key) == value, key
    alloc = AllocConfig()
    for key, value in paper["allocate"].items():
        if key not in ("pick", "pick_prompts"):
            assert getattr(alloc, key) == value, key
    for key, value in paper["quantize"].items():
        assert _default(quantize_unet, key) == value and _default(prepare, key) == value
    assert _default(read_prompts, "coco_order") == paper["calibrate"]["coco_order"]


def test_plus_is_paper_with_named_switches():
    plus = method_settings("plus")
    assert plus == apply_switches(PAPER, PLUS_SWITCHES)
    changed = {(stage, key) for stage, values in plus.items() for key, value in values.items()
               if PAPER[stage].get(key) != value}
    from_switches = {(stage, key) for name in PLUS_SWITCHES
                     for stage, values in SWITCHES[name].items() if stage != "doc"
                     for key in values}
    assert changed == from_switches
    assert method_settings("paper", ["joint_objective"])["allocate"]["mode"] == "joint"
    AllocConfig(**{k: v for k, v in plus["allocate"].items()
                   if k not in ("pick", "pick_prompts")})
    SensitivityConfig(**plus["sensitivity"])
    assert all(name in describe() for name in SWITCHES)
    with pytest.raises(MixDQError, match="unknown method"):
        method_settings("mixdq")
    with pytest.raises(MixDQError, match="unknown method switch"):
        method_settings("paper", ["turbo"])
    assert PAPER["calibrate"]["coco_order"] == "annotations"  # not mutated
