"""Integer layers against the simulated quantized layers of the core (quant.qmodules).

For every layer: the int32 accumulators equal the integer sums computed from the simulation's
own quantizers exactly, and the float outputs agree with the fake-quantized float computation
to float32 rounding.
"""

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quant import quantizer
from quant.deploy import build_integer_layer
from quant.qmodules import QuantConv2d, QuantLinear

_TRITON = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                             reason="triton not installed (pip install mixdq[triton])")


def _skip_unrunnable(backend, device):
    """Triton runs CUDA tensors, or CPU ones under the interpreter (the CPU-only CI)."""
    if backend.startswith("triton"):
        from quant.kernels.backends import triton_available

        if not triton_available(device):
            pytest.skip(f"Triton does not run on {device.type} tensors here")
TRITON_BACKENDS = [pytest.param("triton", marks=_TRITON),
                   pytest.param("triton_fused", marks=_TRITON)]


def _sqnr(ref, x):
    return quantizer.sqnr_db(ref, x)


def _min_db(device, float_db):
    """On CUDA with the kernels the GEMM writes float16: agreement to fp16 rounding only."""
    import quant.kernels

    return 60 if device.type == "cuda" and quant.kernels.is_available() else float_db


def _calibrate(layer, x, slices):
    layer.set_act_range([(float(s.min()), float(s.max())) for s in slices])
    return layer


def _exact_linear_acc(layer, x):
    bits = layer.active_a_bits
    (scale, zp), = layer.act_params(bits)
    xq = quantizer.quantize_act(x, scale, zp, bits).long()
    q, _ = layer.quantized_weight(layer.active_w_bits)
    return (xq - zp) @ q.long().t()


@pytest.mark.parametrize("w_bits,a_bits", [(8, 8), (4, 8), (2, 8), (5, 8), (8, 6), (3, 4)])
@pytest.mark.parametrize("backend", ["kernels", "int_mm"] + TRITON_BACKENDS)
def test_linear_matches_simulation(device, w_bits, a_bits, backend):
    _skip_unrunnable(backend, device)
    torch.manual_seed(w_bits * 10 + a_bits)
    lin = nn.Linear(40, 24).to(device)  # K = 40: padded to 48 inside
    x = torch.randn(3, 21, 40, device=device) * 2 + 0.5
    sim = _calibrate(QuantLinear.from_module(lin, w_bits, a_bits, name="fc",
                                             weight_scale="minmax"), x, [x])
    layer = build_integer_layer(sim.integer_form(), backend).to(device)
    assert layer.gemm.int4 == (w_bits <= 4)
    with torch.no_grad():
        acc, = layer.accumulators(x)
        assert torch.equal(acc.cpu().long(), _exact_linear_acc(sim, x).cpu())
        y_sim, y = sim(x), layer(x)
    assert y.dtype == x.dtype and y.shape == y_sim.shape
    assert _sqnr(y_sim, y) > _min_db(device, 100)


def test_bos_linear(device):
    torch.manual_seed(0)
    lin = nn.Linear(32, 16).to(device)
    x = torch.randn(2, 77, 32, device=device)
    x[:, 0] = torch.linspace(-300, 300, 32)  # a CLIP-like outlier, identical across prompts
    sim = QuantLinear.from_module(lin, 8, 8, name="attn2.to_k", weight_scale="minmax", bos=True)
    bos_input, slices = sim.calibration_view(x)
    _calibrate(sim, x, slices)
    sim.set_bos_input(bos_input[0])
    layer = build_integer_layer(sim.integer_form()).to(device)
    assert layer.bos_row is not None
    with torch.no_grad():
        y_sim, y = sim(x), layer(x)
        acc, = layer.accumulators(x)
    assert torch.equal(y[:, 0], y_sim[:, 0])  # the precomputed row, as is
    assert _sqnr(y_sim[:, 1:], y[:, 1:]) > _min_db(device, 100)
    assert torch.equal(acc.cpu().long(), _exact_linear_acc(sim, x[:, 1:]).cpu())


CONVS = [  # in, out, kernel, stride, padding, split
    (32, 16, 3, 1, 1, None),
    (32, 32, 3, 2, 1, None),        # downsampler
    (48, 16, 1, 1, 0, 32),          # shortcut conv of concat(hidden, skip)
    (48, 24, 3, 1, 1, 16),          # resnet conv1 of a concat
    (4, 16, 3, 1, 1, None),         # conv_in: 4 channels, padded to 16
]


@pytest.mark.parametrize("cin,cout,k,stride,pad,split", CONVS)
@pytest.mark.parametrize("w_bits", [8, 4])
@pytest.mark.parametrize("backend", ["kernels"] + TRITON_BACKENDS)
def test_conv_matches_simulation(device, cin, cout, k, stride, pad, split, w_bits, backend):
    _skip_unrunnable(backend, device)
    torch.manual_seed(cin + cout + k)
    conv = nn.Conv2d(cin, cout, k, stride, pad).to(device)
    x = torch.randn(2, cin, 9, 10, device=device)
    if split is not None:
        x[:, split:] = x[:, split:] * 5 + 1  # the skip half has another range
    sim = QuantConv2d.from_module(conv, w_bits, 8, name="conv", weight_scale="minmax",
                                  split=split)
    _calibrate(sim, x, sim.calibration_view(x)[1])
    layer = build_integer_layer(sim.integer_form(), backend).to(device)
    assert len(layer.parts) == (1 if split is None else 2)
    with torch.no_grad():
        y_sim, y = sim(x), layer(x)
        accs = layer.accumulators(x)
    assert y.shape == y_sim.shape
    assert _sqnr(y_sim, y) > _min_db(device, 90)
    # each slice: the exact integer convolution of (x_q - zp), zero padded
    q, _ = sim.quantized_weight(w_bits)
    q = q.reshape(conv.weight.shape).double()
    bounds = [(0, cin)] if split is None else [(0, split), (split, cin)]
    for (lo, hi), (scale, zp), acc in zip(bounds, sim.act_params(8), accs):
        xq = quantizer.quantize_act(x[:, lo:hi], scale, zp, 8).double() - zp
        want = F.conv2d(xq, q[:, lo:hi], None, stride, pad).permute(0, 2, 3, 1)
        assert torch.equal(acc.cpu().double(), want.cpu())


def test_conv_output_is_channels_last_view():
    conv = nn.Conv2d(16, 16, 3, 1, 1)
    x = torch.randn(1, 16, 6, 6)
    sim = _calibrate(QuantConv2d.from_module(conv, 8, 8, weight_scale="minmax"), x, [x])
    layer = build_integer_layer(sim.integer_form())
    y = layer(x.contiguous(memory_format=torch.channels_last))
    assert y.shape == (1, 16, 6, 6) and y.is_contiguous(memory_format=torch.channels_last)
    # the module survives Module.to(memory_format=...), which restrides 4-D tensors
    layer.to(memory_format=torch.channels_last)
    assert torch.equal(layer(x), y)


@pytest.mark.parametrize("backend", ["int_mm"] + TRITON_BACKENDS)
def test_backends_bit_identical(device, backend):
    """Every backend gives the same output bits as the mixdq ops, linear (with BOS) and conv."""
    _skip_unrunnable(backend, device)
    torch.manual_seed(5)
    x = torch.randn(2, 77, 48, device=device)
    x[:, 0] = torch.linspace(-50, 50, 48)
    sim = QuantLinear.from_module(nn.Linear(48, 40).to(device), 4, 8, name="attn2.to_v",
                                  weight_scale="minmax", bos=True)
    bos_input, slices = sim.calibration_view(x)
    _calibrate(sim, x, slices)
    sim.set_bos_input(bos_input[0])
    xc = torch.randn(1, 48, 7, 6, device=device)
    csim = QuantConv2d.from_module(nn.Conv2d(48, 24, 3, 1, 1).to(device), 8, 8,
                                   weight_scale="minmax", split=16)
    _calibrate(csim, xc, csim.calibration_view(xc)[1])
    for s, inp in ((sim, x), (csim, xc)):
        base = build_integer_layer(s.integer_form(), "kernels").to(device)
        other = build_integer_layer(s.integer_form(), "kernels").to(device)
        other.set_backend(backend)
        assert other.backend == backend and backend in repr(other)
        with torch.no_grad():
            assert torch.equal(base(inp), other(inp))
            for a, b in zip(base.accumulators(inp), other.accumulators(inp)):
                assert torch.equal(a, b)
    with pytest.raises(ValueError, match="unknown backend"):
        other.set_backend("cutlass")
