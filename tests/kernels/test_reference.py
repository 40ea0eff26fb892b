"""The pure-torch references against the quantizer of the simulation and independent formulas.

Integer results are compared exactly; float results against the simulated (fake-quantized)
float computation with a tolerance of a few float32 ulps of the output's magnitude.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from quant import quantizer
from quant.kernels import reference as ref
from quant.kernels.layout import pack_int4, tap_sums, weight_sums


def _close(a, b, rel=1e-5):
    scale = b.abs().max().clamp(min=1e-12)
    return float((a.double() - b.double()).abs().max() / scale) < rel


@pytest.mark.parametrize("bits", [4, 6, 8])
def test_quantize_act_matches_simulation(device, bits):
    g = torch.Generator().manual_seed(bits)
    x = (torch.randn(33, 47, generator=g) * 4).to(device)
    lo, hi = float(x.min()) * 0.7, float(x.max()) * 0.8  # clamps at both ends too
    scale, zp = quantizer.act_qparams(lo, hi, bits)
    got = ref.quantize_act(x, float(scale), zp, bits)
    want = quantizer.quantize_act(x, scale.to(device), zp, bits)
    assert torch.equal(got, want)
    qmin, qmax = ref.qrange(bits)
    assert int(got.min()) == qmin and int(got.max()) == qmax


def test_quantize_act_rounds_half_to_even(device):
    # scale 0.5: x / scale is exact, so every .5 is a tie
    x = torch.tensor([0.25, 0.75, 1.25, -0.25, -0.75, 1.0], device=device)
    got = ref.quantize_act(x, 0.5, 0, 8)
    assert got.tolist() == [0, 2, 2, 0, -2, 2]


def test_quantize_act_true_division(device):
    # a correctly rounded float32 division (numpy's), not a multiplication by the reciprocal
    scale = 0.0123
    x = torch.linspace(-1.5, 1.5, 200_001)
    got = ref.quantize_act(x.to(device), scale, 3, 8).cpu()
    s32 = np.float32(scale)
    want = np.clip(np.round(x.numpy() / s32) + 3, -128, 127).astype(np.int8)
    assert np.array_equal(got.numpy(), want)
    recip = np.clip(np.round(x.numpy() * (np.float32(1) / s32)) + 3, -128, 127).astype(np.int8)
    assert (recip != want).sum() > 0  # the test can tell the two apart


def test_quantize_act_pads():
    x = torch.randn(2, 3, 20)
    q = ref.quantize_act(x, 0.1, 5, 8, pad_to=16)
    assert q.shape == (2, 3, 32) and not q[..., 20:].any()
    assert torch.equal(q[..., :20], ref.quantize_act(x, 0.1, 5, 8))


def _int_problem(m, n, k, wbits=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-128, 128, (m, k), generator=g, dtype=torch.int8)
    lim = 1 << (wbits - 1)
    w = torch.randint(-lim, lim, (n, k), generator=g, dtype=torch.int8)
    scale = torch.rand(n, generator=g) * 0.01 + 1e-4
    bias = torch.randn(n, generator=g)
    return x, w, scale, bias


@pytest.mark.parametrize("wbits", [8, 4])
def test_linear_exact_and_simulated(device, wbits):
    x, w, ws, bias = _int_problem(37, 24, 80, wbits)
    x, w, ws, bias = x.to(device), w.to(device), ws.to(device), bias.to(device)
    zp, xs = -11, 0.037
    packed = pack_int4(w) if wbits == 4 else w
    op = ref.w4a8_linear if wbits == 4 else ref.w8a8_linear
    acc = op(x, packed, weight_sums(w), ws, xs, zp, bias, torch.int32)
    exact = (x.long() - zp).cpu() @ w.long().cpu().t()
    assert torch.equal(acc.cpu().long(), exact)
    y = op(x, packed, weight_sums(w), ws, xs, zp, bias, torch.float32)
    x_hat = (x.float() - zp) * torch.tensor(xs)
    w_hat = w.float() * ws[:, None]
    assert _close(y, F.linear(x_hat, w_hat, bias))
    assert op(x, packed, weight_sums(w), ws, xs, zp, None, torch.float16).dtype == torch.float16


GEOMETRIES = [  # kernel, stride, padding, dilation
    ((3, 3), (1, 1), (1, 1), (1, 1)),
    ((3, 3), (2, 2), (1, 1), (1, 1)),
    ((1, 1), (1, 1), (0, 0), (1, 1)),
    ((3, 3), (1, 1), (2, 2), (2, 2)),
    ((1, 3), (1, 2), (0, 1), (1, 1)),
]


@pytest.mark.parametrize("kernel,stride,padding,dilation", GEOMETRIES)
def test_conv_exact_at_borders(device, kernel, stride, padding, dilation):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(-128, 128, (2, 9, 7, 16), generator=g, dtype=torch.int8)
    w = torch.randint(-128, 128, (12, 16) + kernel, generator=g, dtype=torch.int8)
    ws = torch.rand(12, generator=g) * 0.01
    zp, xs = 23, 0.05
    w_nhwc = w.permute(0, 2, 3, 1).contiguous()
    args = (weight_sums(w).to(device), tap_sums(w_nhwc).to(device), ws.to(device), xs, zp, None,
            stride, padding, dilation)
    acc = ref.w8a8_conv2d(x.to(device), w_nhwc.to(device), *args, torch.int32)
    # the float convolution of the dequantized input, zero padded: (x - zp) padded with 0
    exact = F.conv2d(x.permute(0, 3, 1, 2).double() - zp, w.double(), None, stride, padding,
                     dilation).permute(0, 2, 3, 1)
    assert torch.equal(acc.cpu().double(), exact)
    packed = pack_int4(w_nhwc.clamp(-8, 7).reshape(12, -1))
    w4 = w.clamp(-8, 7)
    args4 = (weight_sums(w4).to(device), tap_sums(w4.permute(0, 2, 3, 1)).to(device),
             ws.to(device), xs, zp, None, kernel, stride, padding, dilation)
    acc4 = ref.w4a8_conv2d(x.to(device), packed.to(device), *args4, torch.int32)
    exact4 = F.conv2d(x.permute(0, 3, 1, 2).double() - zp, w4.double(), None, stride, padding,
                      dilation).permute(0, 2, 3, 1)
    assert torch.equal(acc4.cpu().double(), exact4)


def test_dequantize_acc_after_int_mm_equals_linear():
    x, w, ws, bias = _int_problem(40, 32, 64)
    acc = torch._int_mm(x, w.t())
    for dtype in (torch.int32, torch.float32, torch.float16):
        a = ref.dequantize_acc(acc, weight_sums(w), ws, 0.02, 7, bias, dtype)
        b = ref.w8a8_linear(x, w, weight_sums(w), ws, 0.02, 7, bias, dtype)
        assert torch.equal(a, b)


def test_ops_dispatch_to_reference_on_cpu():
    x, w, ws, bias = _int_problem(20, 16, 32)
    got = torch.ops.mixdq.w8a8_linear(x, w, weight_sums(w), ws, 0.1, 2, bias, torch.float32)
    assert torch.equal(got, ref.w8a8_linear(x, w, weight_sums(w), ws, 0.1, 2, bias,
                                            torch.float32))
