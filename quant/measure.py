"""Measurements over whole checkpoints: their weight bytes per bit width, SQNR per preset.

Used by ``scripts/checkpoint_size.py`` and ``scripts/sqnr_table.py``.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Callable, Iterable, Mapping

from torch import nn

from .bitmap import BitMap
from .checkpoint import WEIGHTS_FILE, save_quantized
from .quantize import output_sqnr, prepare, quantize_unet
from .report import quantization_report, safetensors_sizes
from .structure import quantizable_layers
from .unet import random_unet

__all__ = ["checkpoint_weight_bytes", "measure_checkpoint_sizes", "format_size_table", "Setting",
           "DEFAULT_SETTINGS", "sqnr_table", "format_sqnr_table", "random_unet"]


def checkpoint_weight_bytes(quant_dir: str | Path) -> int:
    """Bytes of the packed weights and their scales in a checkpoint folder."""
    sizes = safetensors_sizes(Path(quant_dir) / WEIGHTS_FILE)
    return sum(v for k, v in sizes.items() if k.endswith((".qweight", ".wscale")))


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
