"""Timestep-dependent activation ranges: which denoising step a UNet call is, at run time.

A multi-step model's activations change scale from step to step (the noisiest step's
``conv_in`` input is several times the last step's), so one range per layer either clips some
steps or wastes levels on others. With ``step_ranges`` (:func:`quant.quantize.quantize_unet`)
every quantized layer keeps one input range per calibrated step besides the range over all
steps. A :class:`StepClock`, installed as a forward pre-hook on the UNet, reads each call's
``timestep`` and names the calibrated step with the nearest timestep; the layers take that
step's range. Only the simulated (fake-quantized) layers switch ranges: the integer kernels
take a scalar activation scale per call, and a checkpoint with per-step ranges runs simulated.

A leaf module (imports only torch and :mod:`quant.errors`).
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from .errors import MixDQError


class StepClock:
    """The calibrated step of the UNet call in progress.

    Attributes:
        timesteps: the timestep of each calibrated step, in step order.
        index: the step the current call was matched to (``None`` before any call).
    """

    def __init__(self, timesteps):
        self.timesteps = tuple(float(t) for t in timesteps)
        if not self.timesteps:
            raise MixDQError("per-step activation ranges need at least one calibrated timestep")
        self.index: int | None = None

    def set_timestep(self, timestep) -> None:
        """Match ``timestep`` (number or tensor, the same value for every row) to a step."""
        if timestep is None:
            self.index = None
            return
        values = torch.as_tensor(timestep).detach().flatten().float().unique()
        if values.numel() != 1:
            raise MixDQError(f"per-step activation ranges: one UNet call has several timesteps "
                             f"({values.tolist()[:4]}); run one denoising step per call")
        value = float(values[0])
        self.index = min(range(len(self.timesteps)), key=lambda i: abs(self.timesteps[i] - value))

    def __call__(self, module, args, kwargs):  # forward pre-hook (with_kwargs=True)
        self.set_timestep(kwargs["timestep"] if "timestep" in kwargs
                          else args[1] if len(args) > 1 else None)


def install_clock(unet: nn.Module, timesteps) -> StepClock:
    """A :class:`StepClock` (given, or made from the timesteps) as ``unet``'s forward pre-hook,
    replacing an earlier one; also ``unet.mixdq_step_clock``."""
    remove_clock(unet)
    clock = timesteps if isinstance(timesteps, StepClock) else StepClock(timesteps)
    unet.mixdq_step_clock = clock
    unet.mixdq_step_clock_handle = unet.register_forward_pre_hook(clock, with_kwargs=True)
    return clock


def remove_clock(unet: nn.Module) -> None:
    """Remove the step clock of ``unet`` if it has one."""
    handle = getattr(unet, "mixdq_step_clock_handle", None)
    if handle is not None:
        handle.remove()
        del unet.mixdq_step_clock_handle, unet.mixdq_step_clock


def split_by_step(batch: Mapping) -> list[tuple[int, dict]]:
    """``batch`` (a calibration batch with a ``step`` column) as one batch per step, in order."""
    step = batch["step"]
    rows = step.shape[0]

    def take(obj, mask):
        if isinstance(obj, Mapping):
            return {k: take(v, mask) for k, v in obj.items()}
        if isinstance(obj, torch.Tensor) and obj.dim() > 0 and obj.shape[0] == rows:
            return obj[mask.to(obj.device)]
        return obj

    return [(int(s), take(batch, step == s)) for s in step.unique(sorted=True).tolist()]
