"""The compiled CUDA kernels against the torch reference, on the GPU (skipped without one).

Integer accumulators (``out_dtype=torch.int32``) must be bit-exact; so must the float16 outputs,
since the kernels compute the epilogue with the reference's float32 operations in its order.
Shapes: tails and the SDXL-Turbo layer shapes at 512x512 (batch 1 and 2).
"""

import pytest
import torch

from quant.kernels import reference as ref
from quant.kernels.layout import pack_int4, tap_sums, weight_sums


def _rand_int(shape, lim, g, device):
    return torch.randint(-lim, lim, shape, generator=g, dtype=torch.int8).to(device)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("rows,k,pad_to,offset", [
    (4096, 640, 1, 0), (152, 2048, 1, 0), (7, 143, 1, 0), (33, 40, 1, 1), (64 * 64, 4, 16, 0)])
def test_quantize(cuda_kernels, dtype, rows, k, pad_to, offset):
    g = torch.Generator().manual_seed(rows + k)
    flat = (torch.randn(rows * k + offset, generator=g) * 5).to(dtype).to(cuda_kernels)
    x = flat[offset:].view(rows, k)  # offset 1: misaligned, the scalar path
    for scale, zp, bits in ((0.0371, -5, 8), (0.25, 0, 8), (0.11, 3, 6)):
        got = torch.ops.mixdq.quantize_act(x, scale, zp, bits, pad_to)
        assert torch.equal(got, ref.quantize_act(x, scale, zp, bits, pad_to))


LINEAR_SHAPES = [  # M, N, K
    (70, 72, 96), (1, 40, 16), (130, 37, 208),
    (4096, 640, 640),     # 32x32 latent tokens x2 (batch 4 at level 1 is 4x this)
    (1024, 5120, 640),    # GEGLU projection at 32x32
    (1024, 640, 2560),    # ff.net.2 at 32x32
    (256, 1280, 1280),    # 16x16 attention projections
    (152, 1280, 2048),    # cross-attention K/V, batch 2, tokens 1..76
    (1, 1280, 2816),      # add_embedding.linear_1
]


@pytest.mark.parametrize("int4", [False, True])
@pytest.mark.parametrize("m,n,k", LINEAR_SHAPES)
def test_linear(cuda_kernels, int4, m, n, k):
    g = torch.Generator().manual_seed(m + n + k)
    dev = cuda_kernels
    x = _rand_int((m, k), 128, g, dev)
    w = _rand_int((n, k), 8 if int4 else 128, g, dev)
    wt = pack_int4(w) if int4 else w
    scale = (torch.rand(n, generator=g) * 1e-3).to(dev)
    bias = torch.randn(n, generator=g).to(dev)
    op = torch.ops.mixdq.w4a8_linear if int4 else torch.ops.mixdq.w8a8_linear
    reference = ref.w4a8_linear if int4 else ref.w8a8_linear
    args = (weight_sums(w), scale, 0.0173, 11)
    want_acc = reference(x, wt, *args, None, torch.int32)
    want = reference(x, wt, *args, bias, torch.float16)
    for config in (-1, 0, 1, 2, 3):
        assert torch.equal(op(x, wt, *args, None, torch.int32, config), want_acc), config
        assert torch.equal(op(x, wt, *args, bias, torch.float16, config), want), config


CONV_CASES = [  # batch, H, W, C, N, kernel, stride, padding, dilation
    (2, 9, 7, 32, 40, (3, 3), (1, 1), (1, 1), (1, 1)),
    (1, 8, 8, 16, 24, (3, 3), (2, 2), (1, 1), (1, 1)),
    (1, 7, 9, 16, 33, (3, 3), (1, 1), (2, 2), (2, 2)),
    (2, 5, 6, 16, 16, (1, 3), (1, 2), (0, 1), (1, 1)),
    (1, 64, 64, 320, 320, (3, 3), (1, 1), (1, 1), (1, 1)),   # level-0 resnet conv at 512 px
    (1, 64, 64, 320, 320, (3, 3), (2, 2), (1, 1), (1, 1)),   # downsampler
    (1, 16, 16, 1280, 1280, (3, 3), (1, 1), (1, 1), (1, 1)),  # level-2 resnet conv
    (1, 64, 64, 16, 320, (3, 3), (1, 1), (1, 1), (1, 1)),    # conv_in, channels padded to 16
]


@pytest.mark.parametrize("int4", [False, True])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d(cuda_kernels, int4, case):
    b, h, w_, c, n, kernel, stride, padding, dilation = case
    g = torch.Generator().manual_seed(h * w_ + c + n)
    dev = cuda_kernels
    x = _rand_int((b, h, w_, c), 128, g, dev)
    w = _rand_int((n,) + kernel + (c,), 8 if int4 else 128, g, dev)
    wt = pack_int4(w.reshape(n, -1)) if int4 else w
    scale = (torch.rand(n, generator=g) * 1e-3).to(dev)
    bias = torch.randn(n, generator=g).to(dev)
    sums = (weight_sums(w), tap_sums(w), scale, 0.021, -9)
    geo = (stride, padding, dilation)
    for out_dtype, bb in ((torch.int32, None), (torch.float16, bias)):
        if int4:
            got = torch.ops.mixdq.w4a8_conv2d(x, wt, *sums, bb, list(kernel), *geo, out_dtype)
            want = ref.w4a8_conv2d(x, wt, *sums, bb, kernel, *geo, out_dtype)
        else:
            got = torch.ops.mixdq.w8a8_conv2d(x, wt, *sums, bb, *geo, out_dtype)
            want = ref.w8a8_conv2d(x, wt, *sums, bb, *geo, out_dtype)
        assert torch.equal(got, want), out_dtype


def test_dequantize_after_int_mm(cuda_kernels):
    g = torch.Generator().manual_seed(0)
    x = _rand_int((1024, 640), 128, g, cuda_kernels)
    w = _rand_int((640, 640), 128, g, cuda_kernels)
    scale = (torch.rand(640, generator=g) * 1e-3).to(cuda_kernels)
    bias = torch.randn(640, generator=g).to(cuda_kernels)
    acc = torch._int_mm(x, w.t())
    args = (weight_sums(w), scale, 0.03, -4)
    for out_dtype in (torch.int32, torch.float32, torch.float16):
        got = torch.ops.mixdq.dequantize_acc(acc, *args, bias, out_dtype)
        assert torch.equal(got, ref.dequantize_acc(acc, *args, bias, out_dtype))


def test_kernels_capture_in_cuda_graph(cuda_kernels):
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(256, 640, generator=g)).half().to(cuda_kernels)
    w = _rand_int((640, 640), 128, g, cuda_kernels)
    scale = (torch.rand(640, generator=g) * 1e-3).to(cuda_kernels)

    def run(inp):
        xq = torch.ops.mixdq.quantize_act(inp, 0.02, 3, 8, 1)
        return torch.ops.mixdq.w8a8_linear(xq, w, weight_sums(w), scale, 0.02, 3, None,
                                           torch.float16, -1)

    eager = run(x)
    graph = torch.cuda.CUDAGraph()
    static = x.clone()
    run(static)  # warm up outside the capture
    torch.cuda.synchronize()
    with torch.cuda.graph(graph):
        out = run(static)
    graph.replay()
    assert torch.equal(out, eager)
