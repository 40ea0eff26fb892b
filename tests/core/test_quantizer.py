"""Quantizer math: the integer conventions of docs/DESIGN.md, error bounds, the MSE scale search."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quant.errors import MixDQError
from quant.quantizer import (act_qparams, act_qrange, dequantize_weight, fake_quantize_act,
                             fake_quantize_weight, quantize_act, quantize_weight, sqnr_db,
                             weight_qmax, weight_scale, weight_scale_minmax, weight_scale_mse)

FAST = settings(max_examples=40, deadline=None)


def test_weight_integers_by_hand():
    w = torch.tensor([[3.5, -7.0, 2.5, 0.0], [14.0, 5.0, -3.0, 0.2], [0.0, 0.0, 0.0, 0.0]])
    scale = weight_scale_minmax(w, 4)  # n = 7
    assert scale.dtype == torch.float32
    assert scale.tolist() == [1.0, 2.0, 1.0]  # an all-zero channel gets scale 1
    q = quantize_weight(w, scale, 4)
    assert q.dtype == torch.int8
    # round half to even: 3.5 -> 4, 2.5 -> 2, -1.5 -> -2
    assert q.tolist() == [[4, -7, 2, 0], [7, 2, -2, 0], [0, 0, 0, 0]]
    assert torch.equal(dequantize_weight(q, scale, w.shape), q.float() * scale[:, None])


def test_weight_clamps_to_minus_n_minus_one():
    w = torch.tensor([[1.0, -1.0, -2.0]])
    q = quantize_weight(w, torch.tensor([0.5]), 2)  # n = 1: range [-2, 1]
    assert q.tolist() == [[1, -2, -2]]


def test_act_params_and_integers_by_hand():
    scale, zp = act_qparams(-1.0, 3.0, 8)
    assert scale.dtype == torch.float32 and float(scale) == pytest.approx(4.0 / 255)
    assert zp == round(-128 + 1.0 / float(scale)) == -64
    x = torch.tensor([-1.0, 0.0, 3.0, 10.0, -5.0])
    q = quantize_act(x, scale, zp, 8)
    assert q.tolist() == [-128, -64, 127, 127, -128]
    assert fake_quantize_act(x, scale, zp, 8)[1] == 0.0  # zero is exact


def test_act_range_is_widened_to_include_zero():
    s_pos, zp_pos = act_qparams(2.0, 6.0, 8)  # as if [0, 6]
    assert float(s_pos) == pytest.approx(6 / 255) and zp_pos == -128
    s_neg, zp_neg = act_qparams(-4.0, -1.0, 4)  # as if [-4, 0]
    assert float(s_neg) == pytest.approx(4 / 15) and zp_neg == 7
    s0, zp0 = act_qparams(0.0, 0.0, 8)
    assert float(s0) == 1.0 and fake_quantize_act(torch.zeros(3), s0, zp0, 8).abs().sum() == 0


@pytest.mark.parametrize("bad", [1, 9, 16, 0, 3.5, True, "8"])
def test_unsupported_weight_bits(bad):
    with pytest.raises(MixDQError, match="unsupported weight bit width"):
        weight_scale_minmax(torch.ones(2, 2), bad)


@pytest.mark.parametrize("bad", [2, 3, 9, 16])
def test_unsupported_act_bits(bad):
    with pytest.raises(MixDQError, match="unsupported activation bit width"):
        act_qparams(-1.0, 1.0, bad)


def test_non_finite_range_and_unknown_method():
    with pytest.raises(MixDQError, match="not finite"):
        act_qparams(float("-inf"), 1.0, 8)
    with pytest.raises(MixDQError, match="unknown weight scale method 'percentile'"):
        weight_scale(torch.ones(2, 2), 4, "percentile")


@FAST
@given(bits=st.integers(2, 8), rows=st.integers(1, 6), cols=st.integers(1, 40),
       seed=st.integers(0, 2**31 - 1), spread=st.floats(1e-3, 1e3))
def test_weight_round_trip_error_bound(bits, rows, cols, seed, spread):
    """Min-max: every element within half a step of its channel; integers within range."""
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * spread
    scale = weight_scale_minmax(w, bits)
    q = quantize_weight(w, scale, bits)
    n = weight_qmax(bits)
    assert int(q.min()) >= -n - 1 and int(q.max()) <= n
    err = (dequantize_weight(q, scale, w.shape) - w).abs()
    assert bool((err <= scale[:, None] * (0.5 + 1e-5)).all())


@FAST
@given(bits=st.integers(4, 8), lo=st.floats(-100, 0), width=st.floats(1e-3, 200),
       seed=st.integers(0, 2**31 - 1))
def test_act_round_trip_error_bound(bits, lo, width, seed):
    """Inside the calibrated range every value is within half a step; outside it is clamped."""
    hi = lo + width
    scale, zp = act_qparams(lo, hi, bits)
    lo_, hi_ = min(lo, 0.0), max(hi, 0.0)
    g = torch.Generator().manual_seed(seed)
    x = lo_ + (hi_ - lo_) * torch.rand(200, generator=g)
    x = torch.cat([x, torch.tensor([lo_, hi_, 0.0])])
    qmin, qmax = act_qrange(bits)
    q = quantize_act(x, scale, zp, bits)
    assert int(q.min()) >= qmin and int(q.max()) <= qmax and qmin <= zp <= qmax
    err = (fake_quantize_act(x, scale, zp, bits) - x).abs()
    assert bool((err <= float(scale) * (0.5 + 1e-4) + 1e-6 * max(abs(lo_), hi_)).all())
    outside = torch.tensor([lo_ - 10 * width - 1, hi_ + 10 * width + 1])
    assert quantize_act(outside, scale, zp, bits).tolist() == [qmin, qmax]


@FAST
@given(bits=st.integers(2, 8), seed=st.integers(0, 2**31 - 1))
def test_mse_never_worse_than_minmax(bits, seed):
    w = torch.distributions.StudentT(3.0).sample((8, 64)) * (1 + seed % 5)
    mm = fake_quantize_weight(w, bits, "minmax")
    ms = fake_quantize_weight(w, bits, "mse")
    assert bool(((ms - w).square().sum(1) <= (mm - w).square().sum(1) * (1 + 1e-6)).all())


def _realistic_weights(seed: int) -> torch.Tensor:
    """Heavy-tailed rows with varied per-channel scales, as trained linear layers have."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    laplace = torch.distributions.Laplace(0.0, 1.0).sample((128, 640))
    student = torch.distributions.StudentT(4.0).sample((128, 640))
    return torch.cat([laplace, student]) * (0.2 + torch.rand(256, 1, generator=g)) * 0.02


@pytest.mark.parametrize("bits,min_gain", [(4, 2.0), (3, 3.5), (2, 4.0)])
def test_mse_search_beats_minmax_at_low_bits(bits, min_gain):
    w = _realistic_weights(bits)
    gain = sqnr_db(w, fake_quantize_weight(w, bits, "mse")) - sqnr_db(
        w, fake_quantize_weight(w, bits, "minmax"))
    print(f"W{bits}: MSE clipping gains {gain:.2f} dB weight SQNR over min-max")
    assert gain >= min_gain


def test_mse_scale_is_vectorised_and_bounded():
    w = _realistic_weights(0)
    s = weight_scale_mse(w, 4)
    assert s.shape == (256,) and bool((s <= weight_scale_minmax(w, 4) * (1 + 1e-6)).all())


def test_device_and_dtype(device):
    w = torch.randn(16, 32, device=device, dtype=torch.bfloat16)
    out = fake_quantize_weight(w, 4)
    assert out.dtype == torch.bfloat16 and out.device == w.device
    scale, zp = act_qparams(-2.0, 2.0, 8)
    x = torch.randn(5, 7, device=device, dtype=torch.float16)
    y = fake_quantize_act(x, scale.to(device), zp, 8)
    assert y.dtype == torch.float16 and y.device == x.device
    cpu = fake_quantize_act(x.cpu(), scale, zp, 8)
    assert torch.equal(y.cpu(), cpu)


def test_sqnr_db():
    ref = torch.ones(100)
    assert sqnr_db(ref, ref) == float("inf")
    assert sqnr_db(ref, ref * 1.1) == pytest.approx(20.0)
