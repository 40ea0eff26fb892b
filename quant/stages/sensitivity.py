"""The sensitivity stage: every layer's sensitivity to quantization, one layer at a time."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from ..errors import MixDQError
from ..methods import DEFAULT_METHOD, fill_options
from ..models.spec import ModelSpec
from ..options import Options
from ..sensitivity.config import SensitivityConfig
from ..sensitivity.groups import DEFAULT_CONTENT_PATTERNS, GroupRule
from ..sensitivity.replay import TOP_LEVEL
from ..sensitivity.run import RunSummary, run_sensitivity


@dataclasses.dataclass(frozen=True)
class SensitivityOptions(Options):
    """Settings of ``mixdq sensitivity`` (the keys are its long flags, ``-`` written ``_``).

    ``method`` (``paper``/``plus``) and ``switches`` fill the settings left ``None``
    (:func:`quant.methods.fill_options`): ``protect_rule`` (``group``: the original's 1% per
    group at A8, quality by SQNR and content by SSIM; ``global``), ``ssim_size`` (``None`` or
    ``0``: SSIM at the decoded resolution with the original's near-global window; ``N``: images
    area-downsampled to at most N px first), ``weight_scale`` (``minmax``, the original's, or
    ``mse``) and ``compute_dtype`` (the pipeline's dtype when the model spec gives none:
    ``float32``, the original's, also on CUDA; ``float16``).
    """

    SECTION = "sensitivity"

    weight_bits: tuple[int, ...] = (2, 4, 8)
    act_bits: tuple[int, ...] = (4, 8)
    content_pattern: tuple[str, ...] | None = None
    ssim: str = "content"
    ssim_size: int | None = None
    batch_size: int = 8
    protect_fraction: float = 0.01
    weight_scale: str | None = None
    no_bos: bool = False
    block_cache: str = "fine"
    layers: str | None = None
    quantized_base: str | None = None
    no_progress: bool = False
    method: str = DEFAULT_METHOD
    switches: tuple[str, ...] = ()
    protect_rule: str | None = None
    compute_dtype: str | None = None

    def check(self):
        fill_options(self, "sensitivity", {"dtype": "compute_dtype"})
        self.choice("ssim", ("content", "all", "none"))
        self.choice("weight_scale", ("mse", "minmax"))
        self.choice("block_cache", ("fine", "blocks"))
        self.choice("protect_rule", ("group", "global"))
        self.choice("compute_dtype", ("float32", "float16"))
        self.positive("batch_size")
        if self.ssim_size is not None and self.ssim_size < 0:
            raise self.fail("ssim_size", f"must be 0 (decoded resolution) or positive, got "
                                         f"{self.ssim_size}")
        if not 0 < self.protect_fraction <= 1:
            raise self.fail("protect_fraction", f"must be in (0, 1], got {self.protect_fraction}")
        try:
            self.measure_config()  # the measurement's own checks (bit widths, layer regex)
        except MixDQError as e:
            raise MixDQError(f"{self.SECTION}: {e}") from None

    def measure_config(self) -> SensitivityConfig:
        """What to measure, as :func:`quant.sensitivity.run_sensitivity` takes it."""
        return SensitivityConfig(
            weight_bits=self.weight_bits, act_bits=self.act_bits,
            groups=GroupRule(tuple(self.content_pattern or DEFAULT_CONTENT_PATTERNS)),
            ssim=self.ssim, ssim_size=self.ssim_size or None, batch_size=self.batch_size,
            protect_fraction=self.protect_fraction, protect_rule=self.protect_rule,
            weight_scale=self.weight_scale, dtype=self.compute_dtype,
            bos=not self.no_bos, layers=self.layers,
            **({"containers": TOP_LEVEL} if self.block_cache == "blocks" else {}))


def sensitivity(model: ModelSpec, options: SensitivityOptions, calib: str | Path,
                out: str | Path, *, log: Callable[[str], None] = print) -> RunSummary:
    """Write the sensitivity table ``out`` (a .csv) and its protect list, heatmap and summary.

    Resumable, and sharded over the processes when run under ``torchrun``. The model's LoRA is
    fused before measuring.
    """
    summary = run_sensitivity(model, calib, out, options.measure_config(),
                              quantized_base=options.quantized_base,
                              progress=not options.no_progress)
    if summary.merged:
        log(summary.format())
    return summary
