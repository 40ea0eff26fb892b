"""The CUDA kernels' own source, run by the CPU emulator, against the torch reference.

Every GEMM tile shape the extension compiles, int8 and packed-int4 weights, linear and
implicit-GEMM convolution with borders, strides and dilation, M/N/K tails: the int32
accumulators and the float32 epilogue must equal the reference bit for bit. The emulator
(kernels/emu) checks alignment and bounds as the hardware would, and lands cp.async copies only
at their wait, so pipeline and indexing errors fail here too.
"""

import pytest
import torch

from quant.kernels import reference as ref
from quant.kernels.layout import pack_int4, round_up, tap_sums, weight_sums

CONFIGS = [0, 1, 2, 3]  # 128x128, 64x128, 64x64, 64x32 tiles


def _linear_case(m, n, k, wbits, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-128, 128, (m, k), generator=g, dtype=torch.int8)
    lim = 1 << (wbits - 1)
    w = torch.randint(-lim, lim, (n, k), generator=g, dtype=torch.int8)
    scale = torch.rand(n, generator=g) * 0.01 + 1e-4
    bias = torch.randn(n, generator=g)
    return x, w, scale, bias


slow = pytest.mark.slow
LINEAR_CASES = (  # (m, n, k, config): every tile shape, then tails in M, N (odd) and K
    [(70, 72, 96, c) for c in CONFIGS]
    + [(1, 40, 16, 3), pytest.param(1, 40, 16, 0, marks=slow)]
    + [pytest.param(130, 37, 208, c, marks=slow) for c in CONFIGS])


@pytest.mark.parametrize("int4", [False, True])
@pytest.mark.parametrize("m,n,k,config", LINEAR_CASES)
def test_linear(emulator, int4, m, n, k, config):
    x, w, scale, bias = _linear_case(m, n, k, 4 if int4 else 8, seed=m + n + k)
    wt = pack_int4(w) if int4 else w
    op = ref.w4a8_linear if int4 else ref.w8a8_linear
    args = (weight_sums(w), scale, 0.031, -17)
    for out_dtype, b in ((torch.int32, None), (torch.float32, bias)):
        got = emulator.linear(x, wt, *args, b, out_dtype, config, int4)
        assert torch.equal(got, op(x, wt, *args, b, out_dtype)), out_dtype


CONV_CASES = [  # batch, H, W, C, N, kernel, stride, padding, dilation
    (2, 9, 7, 32, 40, (3, 3), (1, 1), (1, 1), (1, 1)),
    (1, 8, 8, 16, 24, (3, 3), (2, 2), (1, 1), (1, 1)),  # a downsampler
    (1, 7, 9, 16, 33, (3, 3), (1, 1), (2, 2), (2, 2)),
    pytest.param((1, 6, 5, 48, 20, (1, 1), (1, 1), (0, 0), (1, 1)), marks=slow),
    pytest.param((2, 5, 6, 16, 16, (1, 3), (1, 2), (0, 1), (1, 1)), marks=slow),
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("int4", [False, True])
def test_conv2d(emulator, case, int4):
    b, h, w_, c, n, kernel, stride, padding, dilation = case
    g = torch.Generator().manual_seed(h * w_ + c)
    x = torch.randint(-128, 128, (b, h, w_, c), generator=g, dtype=torch.int8)
    lim = 8 if int4 else 128
    w = torch.randint(-lim, lim, (n,) + kernel + (c,), generator=g, dtype=torch.int8)
    scale = torch.rand(n, generator=g) * 0.01
    bias = torch.randn(n, generator=g)
    wt = pack_int4(w.reshape(n, -1)) if int4 else w
    sums = (weight_sums(w), tap_sums(w), scale, 0.02, 9)
    geo = (stride, padding, dilation)
    config = 3 if int4 else 0  # the largest and the smallest tile
    for out_dtype in (torch.int32, torch.float32):
        got = emulator.conv2d(x, wt, *sums, bias, kernel, *geo, out_dtype, config, int4)
        want = (ref.w4a8_conv2d(x, wt, *sums, bias, kernel, *geo, out_dtype) if int4 else
                ref.w8a8_conv2d(x, wt, *sums, bias, *geo, out_dtype))
        assert torch.equal(got, want), out_dtype


@pytest.mark.parametrize("rows,k,pad_to,vec,nthreads", [
    (3, 40, 1, True, 7),     # flat, vectorised, no tail
    (5, 13, 1, True, 3),     # 65 values: 8 groups and a tail of 1
    (5, 13, 1, False, 64),   # unaligned input: scalar path
    (4, 20, 16, False, 5),   # padded rows
])
def test_quantize(emulator, rows, k, pad_to, vec, nthreads):
    g = torch.Generator().manual_seed(rows * k)
    x = torch.randn(rows, k, generator=g) * 3
    x[0, 0] = 0.25 * 0.5  # a tie at scale 0.25: rounds to even
    for bits, zp in ((8, -3), (6, 10)):
        got = emulator.quantize(x, 0.25, zp, bits, pad_to, vec, nthreads)
        assert got.shape == (rows, round_up(k, pad_to))
        assert torch.equal(got, ref.quantize_act(x, 0.25, zp, bits, pad_to))


def test_dequantize(emulator):
    x, w, scale, bias = _linear_case(20, 24, 64, 8, seed=3)
    acc = torch._int_mm(x, w.t())
    args = (weight_sums(w), scale, 0.05, 4)
    for out_dtype, b in ((torch.int32, None), (torch.float32, bias), (torch.float32, None)):
        got = emulator.dequantize(acc, *args, b, out_dtype, nthreads=13)
        assert torch.equal(got, ref.dequantize_acc(acc, *args, b, out_dtype))
