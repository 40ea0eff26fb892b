"""Pure-torch reference implementations of the ``mixdq::`` ops (any device, CPU in CI).

They define what the CUDA kernels compute, bit for bit:

- integer accumulation is exact (int8 products summed in float64, exact below 2^53);
- the zero-point correction uses the weight sums passed in, as the kernels do:
  ``v = acc - zero_point * weight_sum`` (for convolutions, summed over the in-bounds taps only);
- the float epilogue is float32 with one rounding per operation, in this order:
  ``float(v) * (x_scale * weight_scale[n]) + bias[n]``, then one rounding to ``out_dtype``;
- ``out_dtype=torch.int32`` returns ``v`` itself (the exact corrected accumulator), which is how
  the GPU tests compare kernels with these functions on the int32 accumulators.

Activation quantization is ``clamp(round(x / scale) + zero_point, qmin, qmax)`` with a true
float32 division (the scale is a tensor on ``x``'s device: torch turns a division by a Python
float on CUDA into a multiplication by its reciprocal) and round-half-to-even. Scalars become
device tensors with ``torch.full`` (a fill kernel, no host copy), so the references can run
inside a CUDA graph capture too.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .layout import round_up, unpack_int4


def qrange(bits: int) -> tuple[int, int]:
    """``(qmin, qmax)`` of signed ``bits``-bit storage."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def quantize_act(x: torch.Tensor, scale: float, zero_point: int, bits: int,
                 pad_to: int = 1) -> torch.Tensor:
    """Quantize ``x`` per tensor to int8; the last dimension is zero-padded to ``pad_to``.

    Args:
        x: float tensor of rank >= 1.
        scale: activation scale (rounded to float32).
        zero_point: integer zero point in ``[qmin, qmax]``.
        bits: activation bits (values are clamped to the signed ``bits``-bit range).
        pad_to: the output's last dimension is ``x``'s rounded up to a multiple of this.

    Returns:
        int8 tensor; NaN inputs become ``qmin``.
    """
    qmin, qmax = qrange(bits)
    s = torch.full((), scale, dtype=torch.float32, device=x.device)
    q = torch.round(x.to(torch.float32) / s) + zero_point
    q = torch.where(torch.isnan(q), torch.full_like(q, qmin), q)
    q = q.clamp(qmin, qmax).to(torch.int8)
    pad = round_up(x.shape[-1], pad_to) - x.shape[-1]
    return F.pad(q, (0, pad)) if pad else q


def _finish(v: torch.Tensor, weight_scale: torch.Tensor, x_scale: float,
            bias: torch.Tensor | None, out_dtype: torch.dtype) -> torch.Tensor:
    """The epilogue on exact integer values ``v`` (float64 holding integers, channels last)."""
    if out_dtype == torch.int32:
        return v.to(torch.int32)
    s = torch.full((), x_scale, dtype=torch.float32, device=v.device) * weight_scale.float()
    y = v.to(torch.float32) * s
    if bias is not None:
        y = y + bias.float()
    return y.to(out_dtype)


def _linear(x, weight, weight_sum, weight_scale, x_scale, x_zero_point, bias, out_dtype):
    acc = x.to(torch.float64) @ weight.to(torch.float64).t()
    v = acc - x_zero_point * weight_sum.to(torch.float64)
    return _finish(v, weight_scale, x_scale, bias, out_dtype)


def w8a8_linear(x: torch.Tensor, weight: torch.Tensor, weight_sum: torch.Tensor,
                weight_scale: torch.Tensor, x_scale: float, x_zero_point: int,
                bias: torch.Tensor | None, out_dtype: torch.dtype,
                config: int = -1) -> torch.Tensor:
    """Int8 linear: ``x`` int8 ``[..., K]``, ``weight`` int8 ``[N, K]`` -> ``[..., N]``.

    Args:
        x: quantized input.
        weight: int8 weight (values of any bit width up to 8).
        weight_sum: int32 ``[N]``, ``weight.sum(1)``.
        weight_scale: float32 ``[N]``.
        x_scale: the input's scale.
        x_zero_point: the input's zero point.
        bias: float32 ``[N]`` or None.
        out_dtype: float16 / float32 (scaled output) or int32 (exact corrected accumulator).
        config: the CUDA kernel's tile shape; ignored here.

    Returns:
        ``(x @ weight.T - x_zero_point * weight_sum) * (x_scale * weight_scale) + bias``.
    """
    return _linear(x, weight, weight_sum, weight_scale, x_scale, x_zero_point, bias, out_dtype)


def w4a8_linear(x: torch.Tensor, weight: torch.Tensor, weight_sum: torch.Tensor,
                weight_scale: torch.Tensor, x_scale: float, x_zero_point: int,
                bias: torch.Tensor | None, out_dtype: torch.dtype,
                config: int = -1) -> torch.Tensor:
    """As :func:`w8a8_linear` with ``weight`` packed int4, uint8 ``[N, round_up(K, 32) / 2]``
    in the kernel layout (:func:`quant.kernels.layout.pack_int4`)."""
    w = unpack_int4(weight, x.shape[-1])
    return _linear(x, w, weight_sum, weight_scale, x_scale, x_zero_point, bias, out_dtype)


def _conv(x, weight_nchw, tap_sum, weight_scale, x_scale, x_zero_point, bias, stride, padding,
          dilation, out_dtype):
    n, kh, kw = weight_nchw.shape[0], weight_nchw.shape[2], weight_nchw.shape[3]
    xd = x.permute(0, 3, 1, 2).to(torch.float64)
    acc = F.conv2d(xd, weight_nchw.to(torch.float64), None, stride, padding, dilation)
    # The weight sum over the taps that fall inside the image, per output pixel: a convolution
    # of an all-ones image with the per-tap sums, zero padded like the input.
    ones = torch.ones((1, 1) + tuple(xd.shape[2:]), dtype=torch.float64, device=x.device)
    wsum_map = F.conv2d(ones, tap_sum.reshape(n, 1, kh, kw).to(torch.float64), None, stride,
                        padding, dilation)
    v = (acc - x_zero_point * wsum_map).permute(0, 2, 3, 1)
    return _finish(v, weight_scale, x_scale, bias, out_dtype)


def w8a8_conv2d(x: torch.Tensor, weight: torch.Tensor, weight_sum: torch.Tensor,
                tap_sum: torch.Tensor, weight_scale: torch.Tensor, x_scale: float,
                x_zero_point: int, bias: torch.Tensor | None, stride: Sequence[int],
                padding: Sequence[int], dilation: Sequence[int], out_dtype: torch.dtype,
                config: int = -1) -> torch.Tensor:
    """Int8 convolution on NHWC: ``x`` int8 ``[B, H, W, C]``, ``weight`` int8 ``[N, KH, KW, C]``.

    Args:
        x: quantized input image, channels last.
        weight: int8 weight, channels last.
        weight_sum: int32 ``[N]`` (the kernels use it for interior pixels; here unused because
            ``tap_sum`` covers every pixel).
        tap_sum: int32 ``[N, KH * KW]``, per-tap sums over the input channels.
        weight_scale, x_scale, x_zero_point, bias, out_dtype, config: as in :func:`w8a8_linear`.
        stride, padding, dilation: two values each; the padding is zeros of the dequantized
            input, i.e. taps outside the image contribute nothing.

    Returns:
        ``[B, OH, OW, N]``, channels last.
    """
    return _conv(x, weight.permute(0, 3, 1, 2), tap_sum, weight_scale, x_scale, x_zero_point,
                 bias, stride, padding, dilation, out_dtype)


def w4a8_conv2d(x: torch.Tensor, weight: torch.Tensor, weight_sum: torch.Tensor,
                tap_sum: torch.Tensor, weight_scale: torch.Tensor, x_scale: float,
                x_zero_point: int, bias: torch.Tensor | None, kernel_size: Sequence[int],
                stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                out_dtype: torch.dtype, config: int = -1) -> torch.Tensor:
    """As :func:`w8a8_conv2d` with ``weight`` packed int4 ``[N, round_up(KH*KW*C, 32) / 2]``
    over K in (kh, kw, c) order."""
    kh, kw = kernel_size
    c = x.shape[-1]
    w = unpack_int4(weight, kh * kw * c).reshape(weight.shape[0], kh, kw, c)
    return _conv(x, w.permute(0, 3, 1, 2), tap_sum, weight_scale, x_scale, x_zero_point, bias,
                 stride, padding, dilation, out_dtype)


def dequantize_acc(acc: torch.Tensor, weight_sum: torch.Tensor, weight_scale: torch.Tensor,
                   x_scale: float, x_zero_point: int, bias: torch.Tensor | None,
                   out_dtype: torch.dtype) -> torch.Tensor:
    """The epilogue alone, on a raw int32 accumulator ``[..., N]`` (the ``torch._int_mm`` path)."""
    v = acc.to(torch.float64) - x_zero_point * weight_sum.to(torch.float64)
    return _finish(v, weight_scale, x_scale, bias, out_dtype)
