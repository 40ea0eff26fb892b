"""Weight layouts of the CUDA kernels, made at conversion time from the integer weights.

Checkpoints keep the layout of :mod:`quant.packing` (``[out, K]`` in torch's order, low nibble
first). The kernels want:

- convolutions channels last: ``[out, kh, kw, in]`` (K runs over taps, then channels, so that
  one 16-byte load of the NHWC input is 16 channels of one tap);
- K padded with zero weights to a multiple of 16 (the GEMM's 16-byte loads); for convolutions the
  channels are padded instead, so that no load straddles two taps;
- int4 weights in the kernel layout: per row, each 32 consecutive k become 16 bytes, byte ``j``
  holding k = ``j`` in its low nibble and k = ``16 + j`` in its high nibble. A tensor-core thread
  then finds its 8 values of an ``mma.m16n8k32`` B fragment in one 32-bit word.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import MixDQError


def round_up(value: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``value``."""
    return (value + multiple - 1) // multiple * multiple


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Pack int8 values in ``[-8, 7]`` of shape ``[N, K]`` into the kernel's int4 layout.

    Returns:
        uint8 ``[N, round_up(K, 32) / 2]``; K is padded with zeros.
    """
    if q.dim() != 2:
        raise MixDQError(f"pack_int4 expects a 2-D weight, got shape {tuple(q.shape)}")
    if q.numel() and (int(q.min()) < -8 or int(q.max()) > 7):
        raise MixDQError(f"values out of the int4 range: [{int(q.min())}, {int(q.max())}]")
    n, k = q.shape
    kp = round_up(k, 32)
    u = F.pad(q.to(torch.int16), (0, kp - k)) & 0xF
    u = u.reshape(n, kp // 32, 2, 16)
    return (u[:, :, 0] | (u[:, :, 1] << 4)).reshape(n, kp // 2).to(torch.uint8)


def unpack_int4(packed: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: int8 ``[N, k]``."""
    n = packed.shape[0]
    u = packed.to(torch.int16).reshape(n, -1, 1, 16)
    v = torch.cat([u & 0xF, (u >> 4) & 0xF], dim=2).reshape(n, -1)[:, :k]
    return torch.where(v >= 8, v - 16, v).to(torch.int8)


def conv_weight_nhwc(q: torch.Tensor) -> torch.Tensor:
    """``[out, in, kh, kw]`` -> ``[out, kh, kw, in]`` (contiguous)."""
    return q.permute(0, 2, 3, 1).contiguous()


def pad_last(t: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the last dimension of ``t`` to a multiple of ``multiple``."""
    pad = round_up(t.shape[-1], multiple) - t.shape[-1]
    return F.pad(t, (0, pad)) if pad else t


def weight_sums(q: torch.Tensor) -> torch.Tensor:
    """int32 ``[N]``: the sum of each output channel's integer weights (any trailing shape)."""
    return q.reshape(q.shape[0], -1).to(torch.int32).sum(1, dtype=torch.int32)


def tap_sums(q_nhwc: torch.Tensor) -> torch.Tensor:
    """int32 ``[N, kh * kw]``: per-tap sums over input channels of a ``[N, kh, kw, C]`` weight."""
    n = q_nhwc.shape[0]
    return q_nhwc.to(torch.int32).sum(-1, dtype=torch.int32).reshape(n, -1).contiguous()
