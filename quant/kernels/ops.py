"""The ``mixdq::`` operators: declared once, with the pure-torch reference as the default kernel.

The reference (:mod:`quant.kernels.reference`) is registered for every device
(``CompositeExplicitAutograd``), so the ops run on CPU and, for comparison, on CUDA without the
extension. Importing the compiled extension ``quant._C`` registers its CUDA kernels for the
same ops, which then take precedence on CUDA tensors. Meta kernels give shapes for tracing.
"""

from __future__ import annotations

import torch

from . import reference
from .layout import round_up

NAMESPACE = "mixdq"

SCHEMAS = {
    "quantize_act":
        "quantize_act(Tensor x, float scale, int zero_point, int bits, int pad_to=1) -> Tensor",
    "w8a8_linear":
        "w8a8_linear(Tensor x, Tensor weight, Tensor weight_sum, Tensor weight_scale, "
        "float x_scale, int x_zero_point, Tensor? bias, ScalarType out_dtype, int config=-1) "
        "-> Tensor",
    "w4a8_linear":
        "w4a8_linear(Tensor x, Tensor weight, Tensor weight_sum, Tensor weight_scale, "
        "float x_scale, int x_zero_point, Tensor? bias, ScalarType out_dtype, int config=-1) "
        "-> Tensor",
    "w8a8_conv2d":
        "w8a8_conv2d(Tensor x, Tensor weight, Tensor weight_sum, Tensor tap_sum, "
        "Tensor weight_scale, float x_scale, int x_zero_point, Tensor? bias, int[2] stride, "
        "int[2] padding, int[2] dilation, ScalarType out_dtype, int config=-1) -> Tensor",
    "w4a8_conv2d":
        "w4a8_conv2d(Tensor x, Tensor weight, Tensor weight_sum, Tensor tap_sum, "
        "Tensor weight_scale, float x_scale, int x_zero_point, Tensor? bias, "
        "int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
        "ScalarType out_dtype, int config=-1) -> Tensor",
    "dequantize_acc":
        "dequantize_acc(Tensor acc, Tensor weight_sum, Tensor weight_scale, float x_scale, "
        "int x_zero_point, Tensor? bias, ScalarType out_dtype) -> Tensor",
}


def _conv_out(size, k, stride, padding, dilation):
    return (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def _meta_quantize_act(x, scale, zero_point, bits, pad_to=1):
    shape = list(x.shape)
    shape[-1] = round_up(shape[-1], pad_to)
    return x.new_empty(shape, dtype=torch.int8)


def _meta_linear(x, weight, weight_sum, weight_scale, x_scale, x_zero_point, bias, out_dtype,
                 config=-1):
    return x.new_empty(list(x.shape[:-1]) + [weight.shape[0]], dtype=out_dtype)


def _meta_conv(x, n, kernel_size, stride, padding, dilation, out_dtype):
    b, h, w, _ = x.shape
    oh = _conv_out(h, kernel_size[0], stride[0], padding[0], dilation[0])
    ow = _conv_out(w, kernel_size[1], stride[1], padding[1], dilation[1])
    return x.new_empty([b, oh, ow, n], dtype=out_dtype)


def _meta_w8a8_conv2d(x, weight, weight_sum, tap_sum, weight_scale, x_scale, x_zero_point, bias,
                      stride, padding, dilation, out_dtype, config=-1):
    return _meta_conv(x, weight.shape[0], weight.shape[1:3], stride, padding, dilation, out_dtype)


def _meta_w4a8_conv2d(x, weight, weight_sum, tap_sum, weight_scale, x_scale, x_zero_point, bias,
                      kernel_size, stride, padding, dilation, out_dtype, config=-1):
    return _meta_conv(x, weight.shape[0], kernel_size, stride, padding, dilation, out_dtype)


def _meta_dequantize_acc(acc, weight_sum, weight_scale, x_scale, x_zero_point, bias, out_dtype):
    return acc.new_empty(acc.shape, dtype=out_dtype)


_META = {
    "quantize_act": _meta_quantize_act,
    "w8a8_linear": _meta_linear,
    "w4a8_linear": _meta_linear,
    "w8a8_conv2d": _meta_w8a8_conv2d,
    "w4a8_conv2d": _meta_w4a8_conv2d,
    "dequantize_acc": _meta_dequantize_acc,
}


def _defined() -> bool:
    try:
        getattr(torch.ops, NAMESPACE).quantize_act.default
        return True
    except (AttributeError, RuntimeError):
        return False


def _define() -> torch.library.Library | None:
    """Define the ops and register the reference and meta kernels (once per process)."""
    if _defined():  # e.g. a second import of this file under another module name
        return None
    lib = torch.library.Library(NAMESPACE, "DEF")
    for name, schema in SCHEMAS.items():
        lib.define(schema)
        lib.impl(name, getattr(reference, name), "CompositeExplicitAutograd")
        lib.impl(name, _META[name], "Meta")
    return lib


# The registration handle: torch drops an op's kernels when its Library object is collected.
_LIBRARY = _define()
