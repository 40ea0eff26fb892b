"""SQNR and SSIM meters, and the images the content metric compares."""

import math

import pytest
import torch

from quant.errors import MixDQError
from quant.sensitivity.metrics import SqnrMeter, SsimConfig, SsimMeter, to_uint8_levels


def test_sqnr_sums_over_batches():
    ref = [torch.full((2, 3), 2.0), torch.full((1, 3), 1.0)]
    noisy = [r + 0.1 for r in ref]
    meter = SqnrMeter()
    for y, r in zip(noisy, ref):
        meter.add(y, r)
    # signal 6 * 4 + 3 * 1 = 27, noise 9 * 0.01 (float32 0.1 and 2.1 - 2 rounding aside)
    assert meter.value() == pytest.approx(10 * math.log10(27 / 0.09), abs=1e-4)
    exact = SqnrMeter()
    exact.add(ref[0], ref[0])
    assert exact.value() == math.inf
    broken = SqnrMeter()
    broken.add(torch.tensor([float("nan")]), torch.tensor([1.0]))
    assert broken.value() == -math.inf
    with pytest.raises(MixDQError):
        SqnrMeter().value()


def test_uint8_levels_match_pil_rounding():
    x = torch.tensor([0.0, 0.5 / 255, 1.5 / 255, 0.2, 1.2, float("nan")])
    assert (to_uint8_levels(x) * 255).round().tolist() == [0, 0, 2, 51, 255, 0]


def test_ssim_near_global_window_and_ordering():
    torch.manual_seed(0)
    refs = torch.rand(3, 3, 64, 64)
    meter = SsimMeter(to_uint8_levels(refs), SsimConfig(size=32))
    assert meter.factor == 2 and meter.window == 31  # 64 px -> 32 px, window 31
    index = torch.arange(3)
    same = meter.scores(refs, index)
    assert torch.allclose(same, torch.ones(3), atol=1e-5)
    slight = meter.scores(refs + 0.02 * torch.randn_like(refs), index)
    strong = meter.scores(refs + 0.2 * torch.randn_like(refs), index)
    assert (strong < slight).all() and (slight < 1 - 1e-5).all()
    # Content, not texture: a shuffled layout costs more than fine noise of the same energy.
    shuffled = meter.scores(refs.roll(16, dims=-1), index)
    assert (shuffled < strong).all()
    meter.add(refs, index)
    meter.add(refs + 0.2 * torch.randn_like(refs), index)
    assert meter.value() == pytest.approx((3 + float(strong.sum())) / 6, abs=0.02)
    assert SsimMeter(refs[:1, :, :20, :20], SsimConfig(size=64)).window == 19


def natural_image(side=512, seed=0):
    """A 1/f ("pink") noise colour image in [0, 1]: natural-image-like spectrum and texture."""
    gen = torch.Generator().manual_seed(seed)
    freq = torch.fft.fftfreq(side)
    radius = (freq[:, None] ** 2 + freq[None, :] ** 2).sqrt().clamp(min=1.0 / side)
    spectrum = torch.randn(3, side, side, generator=gen, dtype=torch.complex64) / radius
    image = torch.fft.ifft2(spectrum).real
    image = (image - image.mean()) / image.std()
    return (0.5 + 0.18 * image).clamp(0, 1).unsqueeze(0)


def test_ssim_at_decoded_resolution_sees_a_5x5_blur():
    image = to_uint8_levels(natural_image())
    blurred = torch.nn.functional.avg_pool2d(
        torch.nn.functional.pad(image, (2, 2, 2, 2), mode="reflect"), 5, stride=1)
    meter = SsimMeter(image)  # the original's: 512 px, uniform window 511
    assert meter.factor == 1 and meter.window == 511
    index = torch.arange(1)
    assert float(meter.scores(image, index)) == pytest.approx(1.0, abs=1e-5)
    full = float(meter.scores(blurred, index))
    assert full < 0.9
    # Downsampled to 32 px first (the old default), the blur is invisible.
    small = float(SsimMeter(image, SsimConfig(size=32)).scores(blurred, index))
    assert small > 0.99


def test_uniform_ssim_matches_torchmetrics():
    from torchmetrics.functional.image import structural_similarity_index_measure

    from quant.sensitivity.metrics import uniform_ssim

    torch.manual_seed(1)
    a = torch.rand(2, 3, 40, 40)
    b = (a + 0.1 * torch.randn_like(a)).clamp(0, 1)
    for window in (7, 39):
        ours = uniform_ssim(b, a, window)
        ref = structural_similarity_index_measure(b, a, gaussian_kernel=False, kernel_size=window,
                                                  data_range=1.0, reduction="none")
        assert torch.allclose(ours, ref, atol=1e-5)


def test_ssim_config_validation():
    with pytest.raises(MixDQError, match="size"):
        SsimConfig(size=4)
    with pytest.raises(MixDQError, match="odd"):
        SsimConfig(window=8)
    with pytest.raises(MixDQError, match="exceeds"):
        SsimMeter(torch.rand(1, 3, 16, 16), SsimConfig(size=16, window=21))
