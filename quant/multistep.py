"""Multi-step quantization figures: UNet-output SQNR per denoising step and over all steps.

    record = calibrate_and_quantize(pipe, prompts, folder, steps=4, w_bits=8, a_bits=8)
    record.per_step_db, record.sqnr_db

Used to choose the activation-range reduction (``scripts/bench_range_reduction.py``) and by the
tests that check every pipeline family end to end.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import torch

from .bitmap import BitMap
from .calib.store import CalibrationData
from .calib.ranges import resolve_reduction
from .calib.record import record_calibration
from .errors import MixDQError
from .quantize import quantize_unet
from .unet import run_unet
from .structure import quantizable_layers


@dataclasses.dataclass
class StepSqnr:
    """SQNR of a quantized UNet's output against the recorded full-precision output.

    Attributes:
        sqnr_db: over every recorded sample (all steps and guidance rows; summed noise power).
        per_step_db: the same restricted to each denoising step, in step order.
        reduction: the activation-range reduction that was applied.
    """

    sqnr_db: float
    per_step_db: list[float]
    reduction: str


@torch.no_grad()
def step_sqnr(unet, calib, batch_size: int = 8) -> tuple[float, list[float]]:
    """``(all steps, per step)`` output SQNR in dB of ``unet`` on the calibration ``calib``.

    One pass over the calibration, step by step (one timestep per UNet call, as the pipeline
    runs it, so per-step activation ranges apply): the total sums every step's noise and signal
    power, so the figures equal :func:`quant.quantize.output_sqnr` over all steps and over each.
    """
    param = next(unet.parameters())
    signal = torch.zeros(calib.steps, dtype=torch.float64)
    noise = torch.zeros(calib.steps, dtype=torch.float64)
    for step in range(calib.steps):
        for batch in calib.batches(batch_size, param.device, param.dtype, steps=step):
            y = run_unet(unet, batch).double()
            ref = batch["output"].to(y.device, torch.float64)
            signal[step] += float(ref.square().sum())
            noise[step] += float((y - ref).square().sum())
    if float(signal.sum()) == 0.0 and float(noise.sum()) == 0.0:
        raise MixDQError("no batches to measure SQNR on")

    def db(sig, noi):
        return float("inf") if noi == 0 else float(10 * torch.log10(sig / noi))

    return db(signal.sum(), noise.sum()), [db(a, b) for a, b in zip(signal, noise)]


def quantize_and_measure(unet, calib, *, w_bits: int | None = 8, a_bits: int | None = 8,
                         reduction: str = "auto", bos: bool = True, batch_size: int = 8,
                         timestep_ranges: bool = False) -> StepSqnr:
    """Quantize a copy of ``unet`` uniformly on ``calib`` and measure it step by step."""
    qunet = copy.deepcopy(unet)
    names = list(quantizable_layers(qunet))
    param = next(qunet.parameters())
    quantize_unet(qunet, BitMap.uniform(names, w_bits, a_bits),
                  calib.batches(batch_size, param.device, param.dtype), bos=bos,
                  range_reduction=reduction, timestep_ranges=timestep_ranges, progress=False)
    # ``auto`` resolves as quantize_unet resolved it: every batch carries its ``step``.
    used = resolve_reduction(reduction, calib.steps)
    total, per_step = step_sqnr(qunet, calib, batch_size)
    return StepSqnr(total, per_step, used)


def calibrate_and_quantize(pipe, prompts: list[str], folder: str | Path, *, steps: int,
                           guidance: float = 0.0, w_bits: int = 8, a_bits: int = 8,
                           reduction: str = "auto", batch_size: int = 8,
                           seed: int = 42, timestep_ranges: bool = False) -> StepSqnr:
    """Record a calibration of ``pipe`` into ``folder`` (resumable); measure a W/A quantization."""
    record_calibration(pipe, prompts, folder, steps=steps, guidance=guidance,
                       batch_size=batch_size, seed=seed, progress=False)
    calib = CalibrationData(folder)
    with torch.no_grad():
        return quantize_and_measure(pipe.unet, calib, w_bits=w_bits, a_bits=a_bits,
                                    reduction=reduction, batch_size=batch_size,
                                    timestep_ranges=timestep_ranges)
