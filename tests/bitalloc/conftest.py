"""Small random sensitivity tables for the allocator's tests."""

import random

import pytest

from quant.bitalloc.table import Measurement, SensitivityTable


def random_table(seed: int, layers: int = 6, weight_bits=(2, 4, 8), act_bits=(4, 6, 8),
                 ssim_all: bool = False) -> SensitivityTable:
    """Layers alternate between the groups; metrics random but monotone in bits."""
    rng = random.Random(seed)
    names = [f"blk.{i}.{'attn2' if i % 2 else 'attn1'}.to_q" for i in range(layers)]
    entries = {}
    for i, name in enumerate(names):
        group = "content" if i % 2 else "quality"
        for target, widths in (("weight", weight_bits), ("act", act_bits)):
            m = Measurement(name, group, target, rng.randint(1, 40) * rng.choice([1, 9, 320]))
            sqnr = sorted(rng.uniform(0, 60) for _ in widths)
            ssim = sorted(rng.uniform(0.2, 1.0) for _ in widths)
            m.sqnr_db = dict(zip(widths, sqnr))
            if group == "content" or ssim_all:
                m.ssim = dict(zip(widths, ssim))
            entries[name, target] = m
    return SensitivityTable(names, entries)


@pytest.fixture
def make_table():
    return random_table
