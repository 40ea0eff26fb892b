import math

import pytest
import torch

from quant.errors import MixDQError
from quant.proxy.metrics import fidelity, frechet_distance, sqnr_db


def test_fid_of_identical_sets_is_zero():
    feats = torch.randn(300, 16, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(feats, feats) < 1e-6


def test_fid_measures_a_mean_shift_and_a_scale():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(4000, 8, generator=g)
    b = torch.randn(4000, 8, generator=g)
    same = frechet_distance(a, b)
    assert same < 0.05
    shifted = frechet_distance(a, b + 2.0)  # |mu|^2 = 8 * 4
    assert abs(shifted - 32.0) < 0.5
    scaled = frechet_distance(a, 3 * b)  # per dim (1 - 3)^2 = 4, times 8
    assert abs(scaled - 32.0) < 2.0
    with pytest.raises(MixDQError):
        frechet_distance(a[:1], b)


def test_sqnr_and_fidelity():
    ref = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    assert sqnr_db(ref, ref) == math.inf
    noisy = ref + 0.01 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(3))
    expected = 10 * math.log10(ref.pow(2).sum().item() / (noisy - ref).pow(2).sum().item())
    assert abs(sqnr_db(ref, noisy) - expected) < 1e-6
    same = fidelity(ref, ref)
    assert same["ssim"] > 0.999 and same["sqnr_db"] == math.inf
    worse = fidelity(noisy.clamp(0, 1), ref)
    assert 30 < worse["psnr_db"] < 50 and worse["ssim"] < 1
    with pytest.raises(MixDQError):
        fidelity(ref[:2], ref)
