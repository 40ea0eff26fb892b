"""What was quantized: layers by kind and bits, weight bytes before and after, and SQNR tables."""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from pathlib import Path
from typing import Iterable

from torch import nn

from .bitmap import BitMap
from .errors import MixDQError
from .packing import values_per_byte
from .structure import SPLIT_LEAVES, concat_splits, quantizable_layers

FP16_BYTES = 2
SCALE_BYTES = 4  # float32 per output channel


def weight_bytes(shape: tuple[int, ...], bits: int | None, scales_per_channel: int = 1) -> int:
    """Bytes a layer's weight takes in a checkpoint: packed integers plus float32 scales.

    A float weight (``bits`` is ``None``) counts as fp16. ``scales_per_channel`` is 2 for a
    weight split into two input slices (the up-block ``conv_shortcut``: one scale per slice).
    """
    out, k = shape[0], math.prod(shape[1:])
    if bits is None:
        return FP16_BYTES * out * k
    return out * -(-k // values_per_byte(bits)) + SCALE_BYTES * out * scales_per_channel


@dataclasses.dataclass
class ReportRow:
    """Layers of one kind quantized with the same bits."""

    kind: str
    w: int | None
    a: int | None
    layers: int
    params: int
    bytes_before: int
    bytes_after: int


@dataclasses.dataclass
class QuantReport:
    """Layers grouped by kind and bits, with fp16 weight bytes before and checkpoint bytes after."""

    rows: list[ReportRow]

    @property
    def layers(self) -> int:
        return sum(r.layers for r in self.rows)

    @property
    def bytes_before(self) -> int:
        return sum(r.bytes_before for r in self.rows)

    @property
    def bytes_after(self) -> int:
        return sum(r.bytes_after for r in self.rows)

    def to_dict(self) -> dict:
        return {"rows": [dataclasses.asdict(r) for r in self.rows], "layers": self.layers,
                "bytes_before": self.bytes_before, "bytes_after": self.bytes_after}

    def format(self) -> str:
        """A plain-text table, one line per (kind, bits), and a total line."""
        def bits(b):
            return "fp" if b is None else str(b)

        lines = [f"{'kind':<8} {'W':>3} {'A':>3} {'layers':>7} {'params':>14} "
                 f"{'fp16 MB':>10} {'quant MB':>10}"]
        for r in self.rows:
            lines.append(f"{r.kind:<8} {bits(r.w):>3} {bits(r.a):>3} {r.layers:>7} "
                         f"{r.params:>14,} {r.bytes_before / 1e6:>10.2f} "
                         f"{r.bytes_after / 1e6:>10.2f}")
        ratio = self.bytes_after / self.bytes_before if self.bytes_before else float("nan")
        lines.append(f"{'total':<16} {self.layers:>7} {sum(r.params for r in self.rows):>14,} "
                     f"{self.bytes_before / 1e6:>10.2f} {self.bytes_after / 1e6:>10.2f}"
                     f"  ({100 * ratio:.1f}% of fp16; quantizable layers, MB = 10^6 bytes)")
        return "\n".join(lines)


def _build(entries: Iterable[tuple[str, tuple[int, ...], int | None, int | None, int]]
           ) -> QuantReport:
    groups: dict[tuple, list[int]] = {}
    for kind, shape, w, a, scales in entries:
        g = groups.setdefault((kind, w, a), [0, 0, 0, 0])
        g[0] += 1
        g[1] += math.prod(shape)
        g[2] += weight_bytes(shape, None)
        g[3] += weight_bytes(shape, w, scales)
    order = sorted(groups, key=lambda k: (k[0], -(k[1] or 99), -(k[2] or 99)))
    return QuantReport([ReportRow(k[0], k[1], k[2], *groups[k]) for k in order])


def quantization_report(unet: nn.Module) -> QuantReport:
    """Report on a prepared UNet's quantized layers at their active bits."""
    layers = [m for m in unet.modules() if getattr(m, "is_quantized_module", False)]
    if not layers:
        raise MixDQError("the UNet has no quantized layers")
    return _build((m.kind, tuple(m.weight.shape), m.active_w_bits, m.active_a_bits,
                   2 if getattr(m, "split_weight", False) else 1) for m in layers)


def planned_report(unet: nn.Module, bit_map: BitMap) -> QuantReport:
    """Report on what ``bit_map`` would do to a float UNet (works on the meta device), with
    ``conv_shortcut`` weights split as :func:`quant.quantize.prepare` does by default."""
    layers = quantizable_layers(unet)
    bit_map.validate(layers)
    split = set(concat_splits(unet, SPLIT_LEAVES))
    return _build(("conv2d" if isinstance(m, nn.Conv2d) else "linear", tuple(m.weight.shape),
                   bit_map[n].w, bit_map[n].a, 2 if n in split else 1)
                  for n, m in layers.items())


def safetensors_sizes(path: str | Path) -> dict[str, int]:
    """Bytes of each tensor stored in a safetensors file, read from its header only."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    return {k: v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items()
            if k != "__metadata__"}
