"""Quantized layer modules: registry, float equivalence, switches, caching, integer form."""

import pytest
import torch
from torch import nn

from quant.errors import MixDQError
from quant.qmodules import (QMODULES, QuantConv2d, QuantLinear, qmodule_class,
                            register_qmodule)
from quant.quantizer import (act_qparams, dequantize_weight, fake_quantize_act,
                             quantize_weight, weight_scale)


def _linear(seed=0, bias=True, device="cpu"):
    torch.manual_seed(seed)
    return nn.Linear(24, 10, bias=bias).to(device)


def _calibrated(layer, x):
    layer.set_act_range([(float(x.min()), float(x.max()))])
    return layer


def test_registry():
    assert QMODULES[nn.Linear] is QuantLinear and QMODULES[nn.Conv2d] is QuantConv2d
    assert qmodule_class(nn.Linear(2, 2)) is QuantLinear
    assert qmodule_class(nn.LayerNorm(2)) is None
    assert QuantLinear.is_quantized_module and QuantConv2d.is_quantized_module

    class Marker(nn.Module):
        pass

    @register_qmodule(Marker)
    class QuantMarker(Marker):
        pass

    try:
        assert qmodule_class(Marker()) is QuantMarker
    finally:
        del QMODULES[Marker]


@pytest.mark.parametrize("make", [
    lambda: nn.Linear(24, 10), lambda: nn.Linear(24, 10, bias=False),
    lambda: nn.Conv2d(6, 8, 3, padding=1), lambda: nn.Conv2d(6, 8, 1, stride=2, bias=False),
    lambda: nn.Conv2d(6, 8, 3, padding="same", groups=2, dilation=2)])
def test_float_mode_is_bit_identical(make):
    torch.manual_seed(0)
    module = make()
    q = qmodule_class(module).from_module(module, None, None, name="x")
    assert q.weight is module.weight and q.bias is module.bias  # shared, not copied
    x = torch.randn(3, 24) if isinstance(module, nn.Linear) else torch.randn(2, 6, 9, 9)
    assert torch.equal(q(x), module(x))
    assert dict(q.named_parameters()).keys() == dict(module.named_parameters()).keys()


def test_weight_fake_quant_matches_formulas(device):
    module = _linear(device=device)
    q = QuantLinear.from_module(module, 4, None, name="l", weight_scale="mse")
    scale = weight_scale(module.weight, 4, "mse")
    w_hat = dequantize_weight(quantize_weight(module.weight, scale, 4), scale,
                              module.weight.shape)
    x = torch.randn(5, 24, device=device)
    assert torch.equal(q.effective_weight(), w_hat)
    default = QuantLinear.from_module(module, 4, None, name="l")  # paper: min-max
    minmax = weight_scale(module.weight, 4, "minmax")
    assert default.weight_scale == "minmax"
    assert torch.equal(default.effective_weight(), dequantize_weight(
        quantize_weight(module.weight, minmax, 4), minmax, module.weight.shape))
    assert torch.equal(q(x), nn.functional.linear(x, w_hat, module.bias))
    assert q.weight is module.weight  # the float weight stays available


def test_act_fake_quant_matches_formulas():
    module = _linear()
    x = torch.randn(5, 24) * 3
    q = _calibrated(QuantLinear.from_module(module, None, 8, name="l"), x)
    scale, zp = act_qparams(x.min(), x.max(), 8)
    expected = module(fake_quantize_act(x, scale, zp, 8))
    assert torch.equal(q(x), expected)


def test_switches_and_cheap_bit_changes():
    module = _linear()
    x = torch.randn(5, 24)
    q = _calibrated(QuantLinear.from_module(module, 4, 8, name="blk.l"), x)
    y48 = q(x)
    q4 = q.quantized_weight(4)[0]
    q.set_bits(w=8)
    y88 = q(x)
    q.set_bits(w=4)
    assert q.quantized_weight(4)[0] is q4  # cached, not recomputed
    assert torch.equal(q(x), y48) and not torch.equal(y48, y88)
    q.enable(weight=False, act=False)
    assert torch.equal(q(x), module(x)) and (q.w_bits, q.a_bits) == (4, 8)
    q.enable(weight=True)
    assert q.active_w_bits == 4 and q.active_a_bits is None
    q.set_bits(a=None)
    q.enable(act=True)
    assert q.active_a_bits is None
    q.clear_cache()
    assert q._wcache == {}


def test_bad_bits_name_the_layer():
    q = QuantLinear.from_module(_linear(), 8, 8, name="down.0.to_q")
    with pytest.raises(MixDQError, match=r"unsupported weight bit width 9 for layer down\.0\.to_q"):
        q.set_bits(w=9)
    with pytest.raises(MixDQError, match=r"unsupported activation bit width 2 for layer down"):
        q.set_bits(a=2)
    with pytest.raises(MixDQError, match="unsupported weight bit width 1 for layer c"):
        QuantConv2d.from_module(nn.Conv2d(2, 2, 1), 1, None, name="c")
    with pytest.raises(MixDQError, match="unknown weight scale method"):
        QuantLinear.from_module(_linear(), 8, 8, name="l", weight_scale="max")


def test_uncalibrated_activation_is_an_error():
    q = QuantLinear.from_module(_linear(), 8, 8, name="mid.ff.net.2")
    with pytest.raises(MixDQError, match=r"layer mid\.ff\.net\.2: no activation range"):
        q(torch.randn(2, 24))


def test_split_quantizes_slices_separately():
    torch.manual_seed(0)
    conv = nn.Conv2d(10, 4, 1)
    x = torch.cat([torch.randn(2, 6, 5, 5) * 0.1, torch.randn(2, 4, 5, 5) * 20], 1)
    q = QuantConv2d.from_module(conv, None, 8, name="c", split=6)
    q.set_act_range([(x[:, :6].min(), x[:, :6].max()), (x[:, 6:].min(), x[:, 6:].max())])
    (s0, z0), (s1, z1) = q.act_params(8)
    expected = conv(torch.cat([fake_quantize_act(x[:, :6], s0, z0, 8),
                               fake_quantize_act(x[:, 6:], s1, z1, 8)], 1))
    assert torch.equal(q(x), expected)
    whole = _calibrated(QuantConv2d.from_module(conv, None, 8, name="c"), x)
    err_split = (q._quantize_input(x) - x)[:, :6].square().sum()
    err_whole = (whole._quantize_input(x) - x)[:, :6].square().sum()
    assert err_split < err_whole / 100  # the small-range slice keeps its resolution
    with pytest.raises(MixDQError, match="expected 2 activation range"):
        q.set_act_range([(0.0, 1.0)])
    with pytest.raises(MixDQError, match="split 10 outside"):
        QuantConv2d.from_module(conv, None, 8, name="c", split=10)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_integer_form_reproduces_the_linear(bits):
    """The kernel formula on the integer form equals the fake-quantized forward."""
    module = _linear(seed=bits)
    x = torch.randn(7, 24) * 2 + 0.5
    q = _calibrated(QuantLinear.from_module(module, bits, 8, name="l"), x)
    f = q.integer_form()
    assert f.kind == "linear" and f.w_bits == bits and f.a_bits == 8 and f.split is None
    assert f.qweight.dtype == torch.int8 and f.qweight.shape == (10, 24)
    assert f.wscale.dtype == torch.float32 and f.wscale.shape == (10,)
    assert f.act_scale.shape == (1,) and f.act_zero_point.dtype == torch.int32
    assert int(f.qweight.min()) >= -(1 << (bits - 1)) and int(f.qweight.max()) < 1 << (bits - 1)
    s, zp = f.act_scale[0], int(f.act_zero_point[0])
    xq = torch.clamp(torch.round(x / s) + zp, -128, 127).long()
    wq = f.qweight.long()
    acc = xq @ wq.T - zp * wq.sum(1)
    y = acc.float() * (s * f.wscale) + f.bias
    torch.testing.assert_close(y, q(x), rtol=1e-5, atol=1e-5)


def test_integer_form_of_conv_and_float_weight():
    conv = nn.Conv2d(6, 8, 3, padding=1)
    f = QuantConv2d.from_module(conv, 4, None, name="c").integer_form()
    assert f.qweight.shape == (8, 54) and f.act_scale is None and f.weight is None
    assert f.conv == {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 1,
                      "padding_mode": "zeros"}
    f = QuantConv2d.from_module(conv, None, None, name="c").integer_form()
    assert f.qweight is None and torch.equal(f.weight, conv.weight)


def test_dtype_and_device_moves_keep_integer_caches(device):
    module = _linear()
    x = torch.randn(5, 24)
    q = _calibrated(QuantLinear.from_module(module, 4, 8, name="l"), x)
    q(x)
    q.to(device=device, dtype=torch.bfloat16)
    qw, scale = q.quantized_weight(4)
    assert qw.dtype == torch.int8 and scale.dtype == torch.float32 and qw.device == q.weight.device
    y = q(x.to(device, torch.bfloat16))
    assert y.dtype == torch.bfloat16
    assert q.integer_form().act_scale.dtype == torch.float32


def test_pin_weight_adopts_integers():
    module = _linear()
    src = QuantLinear.from_module(module, 4, None, name="l")
    qw, scale = src.quantized_weight(4)
    dst = QuantLinear.from_module(_linear(seed=1), None, None, name="l")
    dst.pin_weight(4, qw, scale)
    x = torch.randn(3, 24)
    assert torch.equal(dst.effective_weight(), src.effective_weight())
    dst.clear_cache()
    assert dst.quantized_weight(4)[0] is dst._wcache[4][0]  # pinned entries survive
    with pytest.raises(MixDQError, match="does not fit"):
        dst.pin_weight(4, qw[:, :5], scale)
    assert dst(x).shape == (3, 10)
