"""Sub-byte packing of signed integer weights, shared by checkpoints and the CUDA kernels.

Layout (the kernels rely on it): the weight is viewed as ``[rows, K]`` (for convolutions
``K = in_channels * kh * kw`` in torch's ``[out, in, kh, kw]`` order); values are two's
complement; 4-bit packs two per byte, element ``2j`` in the low nibble and ``2j+1`` in the high
nibble; 2-bit packs four per byte, element ``4j+i`` in bits ``2i..2i+1``. ``K`` is padded with
zeros to a multiple of the values per byte. 8-bit (and 5..7-bit) weights are stored as plain int8.
"""

from __future__ import annotations

import torch

from .errors import MixDQError


def values_per_byte(bits: int) -> int:
    """How many ``bits``-bit values one stored byte holds (1 for 3, 5, 6, 7, 8 bits)."""
    return {2: 4, 4: 2}.get(bits, 1)


def pack(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer values ``q`` (any shape, last dim K) into uint8 ``[..., ceil(K / per_byte)]``.

    For bit widths stored one per byte the result is ``q`` as int8.
    """
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if q.numel() and (int(q.min()) < lo or int(q.max()) > hi):
        raise MixDQError(f"values out of range for {bits}-bit packing: "
                         f"[{int(q.min())}, {int(q.max())}]")
    per = values_per_byte(bits)
    if per == 1:
        return q.to(torch.int8)
    k = q.shape[-1]
    pad = (-k) % per
    u = q.to(torch.int16)
    if pad:
        u = torch.nn.functional.pad(u, (0, pad))
    u = (u & ((1 << bits) - 1)).reshape(*q.shape[:-1], -1, per)
    shifts = torch.arange(per, dtype=torch.int16, device=q.device) * bits
    return (u << shifts).sum(-1).to(torch.uint8)


def unpack(packed: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    """Inverse of :func:`pack`: int8 values ``[..., k]``."""
    per = values_per_byte(bits)
    if per == 1:
        return packed.to(torch.int8)[..., :k]
    u = packed.to(torch.int16).unsqueeze(-1)
    shifts = torch.arange(per, dtype=torch.int16, device=packed.device) * bits
    v = (u >> shifts) & ((1 << bits) - 1)
    v = torch.where(v >= (1 << (bits - 1)), v - (1 << bits), v)
    return v.reshape(*packed.shape[:-1], -1)[..., :k].to(torch.int8)
