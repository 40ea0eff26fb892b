"""The integer layers under ``torch.compile``: every op has a fake (shape) implementation, the
layers trace without graph breaks (``fullgraph=True``) and the compiled result is bit-identical.

On CPU: the torch references, ``torch._int_mm`` and the Triton interpreter; ``aot_eager`` checks
the tracing (Dynamo + AOT autograd on fake tensors) quickly, one Inductor run checks that the
quantize/dequantize neighbours compile too.
"""

import copy
import importlib.util

import pytest
import torch
from torch import nn

from quant.deploy import build_integer_layer
from quant.kernels.backends import triton_available
from quant.kernels.layout import pack_int4, tap_sums, weight_sums
from quant.qmodules import QuantConv2d, QuantLinear

HAS_TRITON = importlib.util.find_spec("triton") is not None
DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # where Triton runs
BACKENDS = ["kernels", "int_mm"] + [
    pytest.param(b, marks=pytest.mark.skipif(not HAS_TRITON, reason="triton not installed"))
    for b in ("triton", "triton_fused")]


def _op_cases():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-128, 127, (5, 32), generator=g, dtype=torch.int8)
    w = torch.randint(-8, 8, (8, 32), generator=g, dtype=torch.int8)
    ws, sc, b = weight_sums(w), torch.rand(8, generator=g), torch.randn(8, generator=g)
    xi = torch.randint(-128, 127, (1, 5, 6, 16), generator=g, dtype=torch.int8)
    wc = torch.randint(-8, 8, (8, 3, 3, 16), generator=g, dtype=torch.int8)
    cs = (weight_sums(wc), tap_sums(wc), sc, 0.1, 2, b)
    m = torch.ops.mixdq
    cases = [
        (m.quantize_act.default, (torch.randn(3, 7, generator=g), 0.1, 3, 8, 16)),
        (m.w8a8_linear.default, (x, w, ws, sc, 0.1, 3, b, torch.float16, -1)),
        (m.w4a8_linear.default, (x, pack_int4(w), ws, sc, 0.1, 3, None, torch.float32, -1)),
        (m.w8a8_conv2d.default, (xi, wc, *cs, [2, 1], [1, 1], [1, 1], torch.float16, -1)),
        (m.w4a8_conv2d.default, (xi, pack_int4(wc.reshape(8, -1)), *cs, [3, 3], [1, 1], [1, 1],
                                 [1, 1], torch.int32, -1)),
        (m.dequantize_acc.default, (torch.randint(-99, 99, (5, 8), dtype=torch.int32), ws, sc,
                                    0.1, 3, b, torch.float32)),
    ]
    if HAS_TRITON and triton_available(DEV):
        from quant.kernels import triton_ops  # noqa: F401

        def d(*args):
            return tuple(a.to(DEV) if isinstance(a, torch.Tensor) else a for a in args)

        cases += [
            (m.triton_quantize_act.default, d(torch.randn(3, 7, generator=g), 0.1, 3, 8, 16)),
            (m.triton_linear.default, d(torch.randn(5, 30, generator=g), w, ws, sc, 0.1, 3, b,
                                        torch.float16, False, 8)),
            (m.triton_conv2d.default, d(xi, wc.reshape(8, -1), *cs, [3, 3], [1, 2], [1, 0],
                                        [1, 1], torch.float16, False, 8)),
        ]
    return cases


@pytest.mark.parametrize("case", range(len(_op_cases())))
def test_opcheck(case):
    """Schema, fake tensors (shapes, dtypes, devices) and AOT dispatch agree with the real op."""
    op, args = _op_cases()[case]
    result = torch.library.opcheck(op, args)
    assert set(result.values()) == {"SUCCESS"}, result


class _Small(nn.Module):
    """A linear and a conv with float neighbours (which Inductor may fuse with the ops)."""

    def __init__(self, backend):
        super().__init__()
        torch.manual_seed(1)
        self.x = torch.randn(2, 5, 16)
        self.xc = torch.randn(1, 24, 5, 6)
        lin = QuantLinear.from_module(nn.Linear(16, 24), 8, 8, name="fc", weight_scale="minmax")
        lin.set_act_range([(float(self.x.min()), float(self.x.max()))])
        conv = QuantConv2d.from_module(nn.Conv2d(24, 8, 3, 1, 1), 4, 8, name="conv",
                                       weight_scale="minmax")
        conv.set_act_range([(float(self.xc.min()), float(self.xc.max()))])
        self.lin = build_integer_layer(lin.integer_form(), backend)
        self.conv = build_integer_layer(conv.integer_form(), backend)

    def forward(self, x, xc):
        # IEEE-exact neighbours (one rounding each, same in eager and in generated code)
        return torch.relu(self.lin(x * 1.5)), self.conv(xc - 0.25) * 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_fullgraph(backend):
    torch._dynamo.reset()
    model = _Small(backend)
    dev = DEV if backend.startswith("triton") else torch.device("cpu")
    if backend.startswith("triton") and not triton_available(dev):
        pytest.skip(f"Triton does not run on {dev.type} tensors here")
    model.to(dev)
    x, xc = model.x.to(dev), model.xc.to(dev)
    with torch.no_grad():
        eager = model(x, xc)
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")(x, xc)
    for a, b in zip(eager, compiled):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_compile_inductor():
    """Inductor (C++ on CPU) compiles the layers with their float neighbours, bit-identically."""
    torch._dynamo.reset()
    model = _Small("int_mm")
    with torch.no_grad():
        eager = model(model.x, model.xc)
        compiled = torch.compile(model, fullgraph=True)(model.x, model.xc)
    for a, b in zip(eager, compiled):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_tiny_unet_compiles_without_graph_breaks(tiny_dir):
    """The whole converted tiny UNet (diffusers) traces as one graph and runs bit-identically."""
    from diffusers import UNet2DConditionModel

    from quant.bitmap import BitMap
    from quant.deploy import convert
    from quant.quantize import quantize_unet
    from quant.structure import quantizable_layers

    fp = UNet2DConditionModel.from_pretrained(str(tiny_dir), subfolder="unet").eval()
    cfg = fp.config
    g = torch.Generator().manual_seed(0)
    batch = {"sample": torch.randn(1, 4, cfg.sample_size, cfg.sample_size, generator=g),
             "timestep": torch.tensor(999),
             "encoder_hidden_states": torch.randn(1, 77, cfg.cross_attention_dim, generator=g),
             "added_cond_kwargs": {"text_embeds": torch.randn(1, 32, generator=g),
                                   "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}}
    unet = quantize_unet(copy.deepcopy(fp), BitMap.uniform(quantizable_layers(fp), 8, 8), [batch],
                         weight_scale="minmax", progress=False)
    unet, _ = convert(unet)
    torch._dynamo.reset()
    with torch.no_grad():
        eager = unet(**batch, return_dict=False)[0]
        compiled = torch.compile(unet, fullgraph=True, backend="aot_eager")(
            **batch, return_dict=False)[0]
    assert torch.equal(eager, compiled)
