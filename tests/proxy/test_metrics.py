import math

import pytest
import torch

from quant.errors import MixDQError
from quant.proxy.metrics import (
    fidelity,
    frechet_distance,
    high_frequency,
    quality_scores,
    sqnr_db,
    wilson_interval,
)


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


def test_wilson_interval():
    lo, hi = wilson_interval(50, 100)
    assert abs(lo - 0.4038) < 1e-4 and abs(hi - 0.5962) < 1e-4
    lo, hi = wilson_interval(516, 516)  # all right: the upper end is 1, the lower one below
    assert hi == 1.0 and abs(lo - 0.99261) < 1e-4
    assert wilson_interval(0, 10)[0] == 0.0
    with pytest.raises(MixDQError):
        wilson_interval(3, 2)


def _shapes(n=8):
    from quant.proxy.metrics import real_images

    return real_images(["a large red circle at the top left",
                        "a small blue triangle in the center"] * (n // 2), seed=5)


def test_quality_score_reacts_to_blur_and_noise_not_identity():
    import torch.nn.functional as F

    ref = _shapes()
    same = quality_scores(ref.clone(), ref)
    assert same["quality"] == 0.0 and same["sharpness"] == 1.0
    blur = F.avg_pool2d(F.pad(ref, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    noisy = (ref + 0.03 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(0)))
    b, n = quality_scores(blur, ref), quality_scores(noisy.clamp(0, 1), ref)
    assert b["quality"] > 40 and b["sharpness"] < 0.7  # blur removes the fine detail
    assert n["quality"] > 40 and n["sharpness"] > 1.2  # noise adds detail that is not there
    # monotone in the amount of noise
    more = quality_scores((ref + 0.06 * torch.randn(ref.shape, generator=torch.Generator()
                                                     .manual_seed(0))).clamp(0, 1), ref)
    assert more["quality"] > n["quality"]
    assert high_frequency(torch.full((1, 3, 8, 8), 0.4)).abs().max() < 1e-12
    with pytest.raises(MixDQError):
        quality_scores(ref[:2], ref)
