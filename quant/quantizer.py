"""Quantizer math, pure torch: the integer conventions of ``docs/DESIGN.md``, bit for bit.

Weights are quantized per output channel and symmetrically, activations per tensor and
asymmetrically (a zero point). Every division is a true float32 division and every rounding is
round-half-to-even (``torch.round``), because the CUDA kernels reproduce exactly these formulas.
Nothing here needs gradients; all functions work on any device.
"""

from __future__ import annotations

import torch

from .bitmap import check_bits
from .errors import MixDQError
from .unet import sqnr_db  # noqa: F401  (re-exported: quant.quantizer.sqnr_db)

WEIGHT_SCALES = ("mse", "minmax")

# Clipping ratios (fractions of max|W_c|) tried by the MSE search: a coarse grid over the whole
# useful range, then a fine grid around each channel's best coarse ratio. 1.0 (min-max) is on
# the coarse grid, so the search never does worse than min-max in weight MSE.
_COARSE = torch.linspace(0.10, 1.0, 19).tolist()
_FINE_STEP = 0.0125
_FINE_HALF_WIDTH = 4


def weight_qmax(bits: int) -> int:
    """``n = 2^(b-1) - 1``: the largest weight integer; the smallest is ``-n - 1``."""
    return (1 << (bits - 1)) - 1


def act_qrange(bits: int) -> tuple[int, int]:
    """``(qmin, qmax)`` of signed ``bits``-bit activation storage."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def as_matrix(weight: torch.Tensor) -> torch.Tensor:
    """The weight viewed as ``[out, K]`` float32 (``K = in * kh * kw`` in torch's order)."""
    return weight.detach().reshape(weight.shape[0], -1).float()


def _scale_from_clip(clip: torch.Tensor, bits: int) -> torch.Tensor:
    scale = clip / weight_qmax(bits)
    return torch.where(clip > 0, scale, torch.ones_like(scale))


def _quantize_rows(w: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    n = weight_qmax(bits)
    return torch.clamp(torch.round(w / scale[:, None]), -n - 1, n)


def _row_sq_error(w: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    return (_quantize_rows(w, scale, bits) * scale[:, None] - w).square().sum(1)


def weight_scale_minmax(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel scale ``max|W_c| / n`` (float32 ``[out]``; 1 for an all-zero channel)."""
    check_bits(bits, "weight")
    return _scale_from_clip(as_matrix(weight).abs().amax(1), bits)


def weight_scale_mse(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel scale whose clipping minimises the channel's squared weight error.

    A grid search over clipping ratios ``r * max|W_c|``, vectorised over channels: a coarse grid
    (0.10..1.00, step 0.05), then a fine one (step 0.0125) around each channel's best coarse
    ratio. Cost: 28 quantize-dequantize passes over the weight.

    Args:
        weight: float weight of any shape ``[out, ...]``.
        bits: weight bit width, 2..8.

    Returns:
        float32 scales ``[out]``; never worse than :func:`weight_scale_minmax` in squared error.
    """
    check_bits(bits, "weight")
    w = as_matrix(weight)
    absmax = w.abs().amax(1)
    best_ratio = torch.ones_like(absmax)
    best_err = _row_sq_error(w, _scale_from_clip(absmax, bits), bits)
    for r in _COARSE:
        err = _row_sq_error(w, _scale_from_clip(absmax * r, bits), bits)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_ratio = torch.where(better, torch.full_like(best_ratio, r), best_ratio)
    center = best_ratio.clone()
    for i in range(-_FINE_HALF_WIDTH, _FINE_HALF_WIDTH + 1):
        ratio = (center + i * _FINE_STEP).clamp(0.01, 1.0)
        err = _row_sq_error(w, _scale_from_clip(absmax * ratio, bits), bits)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_ratio = torch.where(better, ratio, best_ratio)
    return _scale_from_clip(absmax * best_ratio, bits)


def weight_scale(weight: torch.Tensor, bits: int, method: str = "minmax") -> torch.Tensor:
    """Per-channel weight scale by ``method``: ``"minmax"`` (the original's) or ``"mse"``."""
    if method == "mse":
        return weight_scale_mse(weight, bits)
    if method == "minmax":
        return weight_scale_minmax(weight, bits)
    raise MixDQError(f"unknown weight scale method {method!r}; "
                     f"use one of {', '.join(WEIGHT_SCALES)}")


def quantize_weight(weight: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer weight ``clamp(round(W / scale_c), -n - 1, n)`` as int8 ``[out, K]``."""
    return _quantize_rows(as_matrix(weight), scale.float(), bits).to(torch.int8)


def dequantize_weight(q: torch.Tensor, scale: torch.Tensor, shape: torch.Size | tuple,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``W_hat = q * scale_c`` (in float32), reshaped to ``shape`` and cast to ``dtype``."""
    return (q.float() * scale.float()[:, None]).reshape(shape).to(dtype)


def fake_quantize_weight(weight: torch.Tensor, bits: int, method: str = "minmax") -> torch.Tensor:
    """Quantize-dequantize ``weight`` per output channel; same shape and dtype."""
    scale = weight_scale(weight, bits, method)
    q = quantize_weight(weight, scale, bits)
    return dequantize_weight(q, scale, weight.shape, weight.dtype)


def act_qparams(lo: float | torch.Tensor, hi: float | torch.Tensor,
                bits: int) -> tuple[torch.Tensor, int]:
    """Scale and zero point of a per-tensor asymmetric quantizer for the range ``[lo, hi]``.

    The range is widened to include 0 (so that 0 is exact, which zero padding relies on).

    Returns:
        ``(scale, zero_point)``: a float32 0-dim tensor and a Python int.
    """
    check_bits(bits, "activation")
    qmin, qmax = act_qrange(bits)
    lo = torch.as_tensor(lo, dtype=torch.float32).detach().cpu().clamp(max=0.0)
    hi = torch.as_tensor(hi, dtype=torch.float32).detach().cpu().clamp(min=0.0)
    if not (torch.isfinite(lo) and torch.isfinite(hi)):
        raise MixDQError(f"activation range [{float(lo)}, {float(hi)}] is not finite")
    scale = (hi - lo) / float(qmax - qmin)
    if scale == 0:
        scale = torch.tensor(1.0)
    zero_point = int(torch.clamp(torch.round(qmin - lo / scale), qmin, qmax))
    return scale.reshape(()), zero_point


def quantize_act(x: torch.Tensor, scale: torch.Tensor, zero_point: int, bits: int) -> torch.Tensor:
    """``x_q = clamp(round(x / scale) + zero_point, qmin, qmax)`` as int8."""
    qmin, qmax = act_qrange(bits)
    return torch.clamp(torch.round(x.float() / scale) + zero_point, qmin, qmax).to(torch.int8)


def fake_quantize_act(x: torch.Tensor, scale: torch.Tensor, zero_point: int,
                      bits: int) -> torch.Tensor:
    """Quantize-dequantize ``x``: ``(x_q - zero_point) * scale``, in ``x``'s dtype."""
    qmin, qmax = act_qrange(bits)
    q = torch.clamp(torch.round(x.float() / scale) + zero_point, qmin, qmax)
    return ((q - zero_point) * scale).to(x.dtype)


