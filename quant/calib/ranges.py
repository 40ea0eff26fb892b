"""Activation-range calibration: hooks that track every quantized layer's input range.

    with calibrate_activations(unet, momentum=0.95):
        for batch in batches:
            unet(**batch)

While the context is open, every quantized layer (a module with ``is_quantized_module``) runs
with its input quantization switched off and its weights as configured, so ranges are gathered
with weights already quantized. Each call's input min and max (per input slice, the BOS token
excluded where BOS handling applies, widened to include 0) updates the running range, reduced
over calls by one of :data:`REDUCTIONS`:

- ``ema``: exponential moving average (the original MixDQ's, momentum 0.95). With a fixed
  batch order it weighs the last batches most and starts from the first: on a multi-step
  calibration (batches ordered by prompt, every step inside) the rare large inputs of one step
  (``conv_in`` at the noisiest step) are averaged away and clipped.
- ``minmax``: the running minimum and maximum over every call: no order dependence, covers
  every step and both guidance rows.
- ``mean``: the plain average of every call's range (an EMA without order dependence).
- ``auto`` (default): ``ema`` when every call came from one denoising step (the original's
  1-step setting, kept as is), ``minmax`` when several steps were seen (callers report steps
  with :meth:`ActivationCalibration.note_steps`; without any report it is ``ema``).

On a normal exit the ranges, and the BOS rows of cross-attention key/value layers, are written
to the layers; on any exit every hook is removed and the switches are restored.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..bos import BosObserver
from ..errors import MixDQError


REDUCTIONS = ("auto", "ema", "minmax", "mean")


@dataclasses.dataclass
class _Track:
    lo: torch.Tensor  # exponential moving average
    hi: torch.Tensor
    lo_all: torch.Tensor  # running minimum / maximum
    hi_all: torch.Tensor
    lo_sum: torch.Tensor  # for the mean
    hi_sum: torch.Tensor
    calls: int = 1
    bos: BosObserver | None = None


class ActivationCalibration:
    """The hook object behind :func:`calibrate_activations`.

    Args:
        model: a model whose layers were swapped by :func:`quant.quantize.prepare`.
        momentum: weight of the running range against each new call (0 = last call only);
            used by the ``ema`` reduction.
        reduction: how ranges are reduced over calls, one of :data:`REDUCTIONS`.

    Attributes:
        ranges: after the context, layer name -> list of ``(lo, hi)`` per input slice.
        used_reduction: after the context, the reduction applied (``auto`` resolved).
        step: set by the caller to the denoising step of the samples about to run (all of one
            step) to also gather one range per step; ``None``: not tracked per step.
        step_ranges: after the context, layer name -> {step: ranges} for the steps seen with
            ``step`` set (the same reduction, over that step's calls only).
    """

    def __init__(self, model: nn.Module, momentum: float = 0.95, reduction: str = "auto"):
        if not 0.0 <= float(momentum) < 1.0:
            raise MixDQError(f"momentum must be in [0, 1), got {momentum}")
        if reduction not in REDUCTIONS:
            raise MixDQError(f"range reduction {reduction!r}: use one of {', '.join(REDUCTIONS)}")
        self.momentum = float(momentum)
        self.reduction = reduction
        self.used_reduction: str | None = None
        self._steps: set[int] = set()
        self.step: int | None = None
        self.step_ranges: dict[str, dict[int, list[tuple[float, float]]]] = {}
        self._step_tracks: dict[tuple[str, int], _Track] = {}
        self.layers = {name: m for name, m in model.named_modules()
                       if getattr(m, "is_quantized_module", False)}
        if not self.layers:
            raise MixDQError("the model has no quantized layers; run quant.quantize.prepare first")
        self.ranges: dict[str, list[tuple[float, float]]] = {}
        self._tracks: dict[str, _Track] = {}
        self._handles: list = []
        self._saved_switches: dict[str, bool] = {}

    def __enter__(self) -> "ActivationCalibration":
        try:
            for name, layer in self.layers.items():
                self._saved_switches[name] = layer.a_enabled
                layer.enable(act=False)
                self._handles.append(layer.register_forward_pre_hook(self._hook(name)))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._remove()
        if exc_type is None:
            self._apply()
        return False

    def note_steps(self, steps) -> None:
        """Report the denoising step(s) of the samples about to run (for ``auto``)."""
        if isinstance(steps, torch.Tensor):
            self._steps.update(int(s) for s in steps.unique().tolist())
        else:
            self._steps.add(int(steps))

    def resolved_reduction(self) -> str:
        """The reduction in force: ``auto`` is ``minmax`` once several steps were reported."""
        return resolve_reduction(self.reduction, len(self._steps))

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for name, enabled in self._saved_switches.items():
            self.layers[name].enable(act=enabled)
        self._saved_switches.clear()

    def _hook(self, name: str):
        def hook(module, args):
            self._observe(name, module, args[0])
        return hook

    @torch.no_grad()
    def _observe(self, name: str, layer, x: torch.Tensor) -> None:
        bos_input, slices = layer.calibration_view(x)
        lo = torch.stack([s.detach().amin().float() for s in slices]).clamp(max=0.0)
        hi = torch.stack([s.detach().amax().float() for s in slices]).clamp(min=0.0)
        track = self._update(self._tracks, name, lo, hi)
        if self.step is not None:
            self._update(self._step_tracks, (name, int(self.step)), lo, hi)
        if bos_input is not None:
            if track.bos is None:
                track.bos = BosObserver()
            track.bos.update(bos_input)

    def _update(self, tracks: dict, key, lo: torch.Tensor, hi: torch.Tensor) -> _Track:
        track = tracks.get(key)
        if track is None:
            track = tracks[key] = _Track(lo, hi, lo.clone(), hi.clone(), lo.clone(), hi.clone())
        else:
            m = self.momentum
            track.lo = m * track.lo + (1 - m) * lo
            track.hi = m * track.hi + (1 - m) * hi
            track.lo_all = torch.minimum(track.lo_all, lo)
            track.hi_all = torch.maximum(track.hi_all, hi)
            track.lo_sum += lo
            track.hi_sum += hi
            track.calls += 1
        return track

    def _reduce(self, track: _Track) -> list[tuple[float, float]]:
        if self.used_reduction == "minmax":
            return list(zip(track.lo_all.tolist(), track.hi_all.tolist()))
        if self.used_reduction == "mean":
            return list(zip((track.lo_sum / track.calls).tolist(),
                            (track.hi_sum / track.calls).tolist()))
        return list(zip(track.lo.tolist(), track.hi.tolist()))

    def _apply(self) -> None:
        self.used_reduction = self.resolved_reduction()
        for name, track in self._tracks.items():
            layer = self.layers[name]
            if track.bos is not None:
                layer.set_bos_input(track.bos.constant_row(name))
            ranges = self._reduce(track)
            layer.set_act_range(ranges)
            self.ranges[name] = ranges
        for (name, step), track in sorted(self._step_tracks.items()):
            self.step_ranges.setdefault(name, {})[step] = self._reduce(track)


def resolve_reduction(reduction: str, steps: int) -> str:
    """``reduction`` with ``auto`` resolved for a calibration of ``steps`` denoising steps."""
    if reduction != "auto":
        return reduction
    return "minmax" if steps > 1 else "ema"


def calibrate_activations(model: nn.Module, momentum: float = 0.95,
                          reduction: str = "auto") -> ActivationCalibration:
    """Context manager that calibrates every quantized layer's input range.

    Args:
        model: a prepared model (see :func:`quant.quantize.prepare`).
        momentum: exponential-moving-average momentum of the range across calls (``ema``).
        reduction: ``auto`` (``ema`` for one step, ``minmax`` for several), ``ema`` or
            ``minmax``; see the module docstring.

    Returns:
        An :class:`ActivationCalibration`; use it in a ``with`` block and run the calibration
        batches inside. Layers never called inside the block keep their previous range.

    Raises:
        MixDQError: on exit, if a BOS row differs between calibration samples.
    """
    return ActivationCalibration(model, momentum, reduction)
