"""What the benchmark compares: a variant is a name plus a function that returns a pipeline."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Callable

from ..errors import MixDQError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclasses.dataclass
class Variant:
    """One pipeline to benchmark.

    Attributes:
        name: column title and image folder name (letters, digits, ``.``, ``_``, ``-``).
        load: returns the pipeline; called only when it is needed (missing images, latency).
        source: what the pipeline is (model, quantized folder, dtype), JSON-able; recorded in the
            image folder's manifest so a rerun never mixes images of different pipelines.
        reference: the full-precision variant that FID/PSNR/SSIM "vs FP" compare against.
    """

    name: str
    load: Callable[[], Any]
    source: dict = dataclasses.field(default_factory=dict)
    reference: bool = False

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise MixDQError(f"variant name {self.name!r}: use letters, digits, '.', '_', '-'")
        if not callable(self.load):
            raise MixDQError(f"variant {self.name}: load must be callable")


def _dtype_name(device, dtype) -> str:
    from ..precision import default_device, resolve_dtype

    import torch

    device = torch.device(device) if device is not None else default_device()
    return str(resolve_dtype(device, dtype)).replace("torch.", "")


def fp_variant(model: str, device=None, dtype=None, name: str = "fp", lora: str | None = None,
               lora_scale: float = 1.0, scheduler: str | None = None) -> Variant:
    """The full-precision pipeline of ``model`` (the reference).

    Args:
        model: Hub id, local diffusers folder or ``"tiny"``.
        device, dtype: as in :func:`quant.models.load_fp_pipeline`.
        name: column name.
        lora, lora_scale: a LoRA fused into the model first.
        scheduler: a diffusers scheduler class name replacing the model's.
    """
    from ..models import load_fp_pipeline

    return Variant(name=name, load=lambda: load_fp_pipeline(model, device, dtype, lora=lora,
                                                            lora_scale=lora_scale,
                                                            scheduler=scheduler),
                   source={"model": model, "dtype": _dtype_name(device, dtype), "lora": lora},
                   reference=True)


def variant_name(quant_dir: str | Path) -> str:
    """A column name for a quantized folder: its base name, cleaned up."""
    base = Path(quant_dir).expanduser().resolve().name
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-._")
    return name or "quantized"


def quantized_variant(model: str, quant_dir: str | Path, device=None, dtype=None,
                      name: str | None = None, execution: str = "auto", lora: str | None = None,
                      lora_scale: float = 1.0, scheduler: str | None = None) -> Variant:
    """``model``'s pipeline with the UNet loaded from the quantized folder ``quant_dir``.

    Args:
        model: the full-precision model the folder was made from.
        quant_dir: a folder written by ``mixdq quantize``.
        device, dtype: as in :func:`quant.models.load_fp_pipeline`.
        name: column name; default the folder's base name.
        execution: as in :func:`quant.load_pipeline` (integer kernels when available, or
            simulation); the pipeline's ``mixdq_execution`` says which ran.
        lora, lora_scale: the LoRA fused before the checkpoint was made.
        scheduler: a diffusers scheduler class name replacing the model's.

    Raises:
        MixDQError: the folder does not exist or is not a quantized checkpoint.
    """
    from ..checkpoint import WEIGHTS_FILE, read_config

    quant_dir = Path(quant_dir).expanduser()
    if not quant_dir.is_dir():
        raise MixDQError(f"--quantized {quant_dir}: no such folder")
    read_config(quant_dir)  # a broken folder fails now, not after the other variants ran

    def load():
        from ..api import load_pipeline

        return load_pipeline(model, quant_dir, device=device, dtype=dtype, execution=execution,
                             lora=lora, lora_scale=lora_scale, scheduler=scheduler)

    return Variant(name=name or variant_name(quant_dir), load=load,
                   source={"model": model, "quantized": str(quant_dir.resolve()),
                           "checkpoint_sha256": _file_sha256(quant_dir / WEIGHTS_FILE),
                           "dtype": _dtype_name(device, dtype), "lora": lora})


def _file_sha256(path: Path) -> str:
    """Identifies the checkpoint's weights, so images of an older quantization in the same
    folder are never mixed with new ones."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_variants(variants: list[Variant]) -> Variant:
    """Validate a variant list; returns the reference variant (the first one marked, else the
    first variant)."""
    if not variants:
        raise MixDQError("no variants to benchmark")
    names = [v.name for v in variants]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise MixDQError(f"two variants named {duplicates[0]!r}; give them distinct names")
    return next((v for v in variants if v.reference), variants[0])
