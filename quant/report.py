"""What was quantized: layers by kind and bits, weight bytes before and after, and SQNR tables."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import struct
from pathlib import Path
from typing import Callable, Iterable, Mapping

from torch import nn

from .bitmap import BitMap
from .errors import MixDQError
from .packing import values_per_byte
from .structure import quantizable_layers

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
                     f"  ({100 * ratio:.1f}% of fp16)")
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
    from .quantize import SPLIT_LEAVES, concat_splits

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


def checkpoint_weight_bytes(quant_dir: str | Path) -> int:
    """Bytes of the packed weights and their scales in a checkpoint folder."""
    from .checkpoint import WEIGHTS_FILE

    sizes = safetensors_sizes(Path(quant_dir) / WEIGHTS_FILE)
    return sum(v for k, v in sizes.items() if k.endswith((".qweight", ".wscale")))


def random_unet(config: str | Path | Mapping, *, dtype=None, seed: int = 0, meta: bool = False):
    """A diffusers UNet built from ``config`` (a dict or a ``config.json``) with random weights.

    Built on the meta device and filled in place (normal, std 0.02) in ``dtype`` (default fp16),
    so a full SDXL UNet needs only its fp16 bytes (~5 GB) of memory. ``meta=True`` returns the
    meta-device model (shapes only).
    """
    import torch
    from diffusers import UNet2DConditionModel

    if not isinstance(config, Mapping):
        config = json.loads(Path(config).read_text(encoding="utf-8"))
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(dict(config))
    if meta:
        return unet
    unet = unet.to(dtype=dtype or torch.float16).to_empty(device="cpu")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in list(unet.parameters()) + list(unet.buffers()):
            tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.02)
    return unet.eval()


def measure_checkpoint_sizes(unet: nn.Module, weight_bits: Iterable[int], work_dir: str | Path,
                             base_model: str = "random") -> list[dict]:
    """Quantize ``unet`` at each uniform weight width (float activations) and weigh the checkpoints.

    Uses min-max scales (the byte count does not depend on the scale) and frees each width's
    cached integers before the next.

    Returns:
        One dict per width: ``bits``, ``layers``, ``fp16_bytes`` (the layers' weights in fp16),
        ``weight_bytes`` (packed weights + scales, read from the file), ``file_bytes``,
        ``ratio``, and ``predicted_bytes`` (from :func:`weight_bytes`).
    """
    from .checkpoint import WEIGHTS_FILE, save_quantized
    from .quantize import prepare

    names = list(quantizable_layers(unet))
    rows = []
    for bits in weight_bits:
        bit_map = BitMap.uniform(names, bits, None)
        prepare(unet, bit_map, bos=False, weight_scale="minmax")
        out = save_quantized(unet, Path(work_dir) / f"W{bits}", base_model=base_model)
        for layer in quantizable_layers(unet).values():
            layer.clear_cache()
        report = quantization_report(unet)
        stored = checkpoint_weight_bytes(out)
        rows.append({"bits": bits, "layers": report.layers, "fp16_bytes": report.bytes_before,
                     "weight_bytes": stored, "predicted_bytes": report.bytes_after,
                     "file_bytes": (out / WEIGHTS_FILE).stat().st_size,
                     "ratio": stored / report.bytes_before})
    return rows


def format_size_table(rows: list[dict]) -> str:
    """The rows of :func:`measure_checkpoint_sizes` as a plain-text table."""
    lines = [f"{'weights':<8} {'layers':>7} {'fp16 MB':>10} {'ckpt MB':>10} {'predicted MB':>13} "
             f"{'file MB':>10} {'ratio':>7}"]
    for r in rows:
        lines.append(f"{'W' + str(r['bits']):<8} {r['layers']:>7} {r['fp16_bytes'] / 1e6:>10.2f} "
                     f"{r['weight_bytes'] / 1e6:>10.2f} {r['predicted_bytes'] / 1e6:>13.2f} "
                     f"{r['file_bytes'] / 1e6:>10.2f} {100 * r['ratio']:>6.1f}%")
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Setting:
    """One row of an SQNR comparison: a uniform preset and BOS handling on or off."""

    preset: str
    bos: bool = True

    @property
    def label(self) -> str:
        return f"{self.preset} {'BOS' if self.bos else 'no BOS'}"


DEFAULT_SETTINGS = (Setting("W8A8", True), Setting("W8A8", False), Setting("W4A8", True),
                    Setting("W4A8", False))


def sqnr_table(fp_unet: nn.Module, batches: Callable[[], Iterable[Mapping]],
               settings: Iterable[Setting] = DEFAULT_SETTINGS, *, weight_scale: str = "mse",
               momentum: float = 0.95) -> list[tuple[Setting, float]]:
    """UNet-output SQNR against full precision for each setting, on the calibration inputs.

    Args:
        fp_unet: the float UNet (left untouched; each setting quantizes a copy).
        batches: returns a fresh iterable of calibration batches (with ``output``) per call.
        settings: presets and BOS switches to compare.
        weight_scale: ``"mse"`` or ``"minmax"``.
        momentum: activation-range momentum.

    Returns:
        ``(setting, sqnr_db)`` pairs in order.
    """
    from .quantize import output_sqnr, quantize_unet

    names = list(quantizable_layers(fp_unet))
    rows = []
    for setting in settings:
        unet = copy.deepcopy(fp_unet)
        quantize_unet(unet, BitMap.preset(names, setting.preset), batches(), bos=setting.bos,
                      weight_scale=weight_scale, momentum=momentum, progress=False)
        rows.append((setting, output_sqnr(unet, batches())))
        del unet
    return rows


def format_sqnr_table(rows: list[tuple[Setting, float]]) -> str:
    """``setting | SQNR dB`` as a plain-text table."""
    lines = [f"{'setting':<16} {'SQNR dB':>8}"]
    lines += [f"{s.label:<16} {v:>8.2f}" for s, v in rows]
    return "\n".join(lines)
