"""Public API of the quantization core: swap a UNet's layers and calibrate them.

    unet = quantize_unet(unet, bit_map, calibration)     # prepare + calibrate
    save_quantized(unet, "runs/w8a8", base_model="stabilityai/sdxl-turbo")

``calibration`` is any iterable of dicts of UNet call arguments (``sample``, ``timestep``,
``encoder_hidden_states``, ``added_cond_kwargs``), as :class:`quant.calib.CalibrationData`
yields them; other keys (``output``, ``step``...) are ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn

from .bitmap import BitMap
from .checkpoint import unet_hash
from .errors import MixDQError
from .qmodules import qmodule_class
from .steps import install_clock, remove_clock, split_by_step
from .structure import SPLIT_LEAVES, concat_splits, is_cross_attention_kv, quantizable_layers
from .unet import UNET_INPUTS, run_unet, set_submodule

__all__ = ["UNET_INPUTS", "concat_splits", "prepare", "quantize_unet", "output_sqnr", "run_unet",
           "set_submodule"]


def _as_bit_map(bit_map: BitMap | str | Path) -> BitMap:
    if isinstance(bit_map, BitMap):
        return bit_map
    if isinstance(bit_map, (str, Path)):
        return BitMap.load(bit_map)
    raise MixDQError(f"expected a BitMap or a bit map file, got {type(bit_map).__name__}")


def prepare(unet: nn.Module, bit_map: BitMap | str | Path, *, bos: bool = True,
            weight_scale: str = "minmax", conv1_split: bool = False,
            shortcut_weight_split: bool = True) -> nn.Module:
    """Swap every ``nn.Linear``/``nn.Conv2d`` of ``unet`` for its quantized version, in place.

    Layers are not calibrated yet (see :func:`quantize_unet`). On an already prepared UNet this
    only updates the bits and options of the existing quantized layers.

    Args:
        unet: a diffusers ``UNet2DConditionModel`` (or any model with Linear/Conv2d layers).
        bit_map: per-layer bits (a :class:`BitMap` or a JSON/YAML file); must name every layer.
        bos: BOS-aware quantization of cross-attention key/value inputs.
        weight_scale: ``"minmax"`` (the original's) or ``"mse"`` (clipping search; method
            ``plus`` switch ``mse_clipping``).
        conv1_split: also give the up-block resnets' ``conv1`` separate activation quantizers
            for its ``concat(hidden, skip)`` input (switch ``conv1_split``). ``conv_shortcut``
            is always split: its activation, and with ``shortcut_weight_split`` (default, the
            original's) its weight, one scale per input slice.

    Returns:
        ``unet`` itself.

    Raises:
        MixDQError: unknown or missing layer names, unsupported bit widths.
    """
    bit_map = _as_bit_map(bit_map)
    layers = quantizable_layers(unet)
    bit_map.validate(layers)
    if getattr(unet, "mixdq_base_hash", None) is None:
        unet.mixdq_base_hash = unet_hash(unet)
    leaves = SPLIT_LEAVES + (("conv1",) if conv1_split else ())
    splits = concat_splits(unet, leaves)
    for name, module in layers.items():
        bits = bit_map[name]
        layer_bos = bos and is_cross_attention_kv(name, unet)
        split = splits.get(name)
        split_weight = (shortcut_weight_split and name.endswith(".conv_shortcut")
                        and split is not None)
        if getattr(module, "is_quantized_module", False):
            if module.weight_scale != weight_scale:
                module.weight_scale = weight_scale
                module.clear_cache()
            if (module.split, module.split_weight) != (split, split_weight):
                module.split, module.split_weight = split, split_weight
                module.act_range, module._aparams = None, {}
                module.clear_cache()
            module.set_bits(w=bits.w, a=bits.a)
            module.bos = layer_bos
            continue
        cls = qmodule_class(module)
        if cls is None:
            raise MixDQError(f"layer {name}: no quantized module for {type(module).__name__}")
        set_submodule(unet, name, cls.from_module(
            module, bits.w, bits.a, name=name, weight_scale=weight_scale,
            split=split, bos=layer_bos, split_weight=split_weight))
    return unet


def quantize_unet(unet: nn.Module, bit_map: BitMap | str | Path, calibration: Iterable[Mapping],
                  *, bos: bool = True, weight_scale: str = "minmax", momentum: float = 0.95,
                  range_reduction: str = "auto", timestep_ranges: bool = False,
                  progress: bool = True, conv1_split: bool = False,
                  shortcut_weight_split: bool = True) -> nn.Module:
    """Prepare ``unet`` with ``bit_map`` and calibrate its activation ranges, in place.

    Args:
        unet: the float UNet.
        bit_map: per-layer bits (see :func:`prepare`).
        calibration: iterable of dicts of UNet call arguments; read once.
        bos: BOS-aware quantization of cross-attention key/value inputs.
        weight_scale: ``"minmax"`` (default, the original's) or ``"mse"``.
        momentum: moving-average momentum of the activation ranges.
        range_reduction: how ranges are reduced over batches (:mod:`quant.calib.ranges`):
            ``auto`` (the original's EMA for a one-step calibration, running min/max when the
            batches' ``step`` shows several steps), ``ema`` or ``minmax``.
        timestep_ranges: also calibrate one activation range per denoising step (batches
            carry ``step`` and ``timestep``) and select it by the timestep of each UNet call
            (:mod:`quant.steps`; simulated execution). Nothing changes for a one-step
            calibration.
        progress: show a tqdm bar over the batches.
        conv1_split, shortcut_weight_split: see :func:`prepare`.

    Returns:
        ``unet``, quantized (simulated) and calibrated.

    Raises:
        MixDQError: bad bit map, empty calibration, a layer left without a range, a BOS row
            that differs between samples, or batches of a calibration folder recorded with
            another model (:meth:`quant.calib.CalibrationData.check_model`).
    """
    from .calib.ranges import calibrate_activations
    from .calib.store import check_calibration_model
    from .utils.progress import progress as show_progress

    check_calibration_model(calibration, unet)
    prepare(unet, bit_map, bos=bos, weight_scale=weight_scale, conv1_split=conv1_split,
            shortcut_weight_split=shortcut_weight_split)
    remove_clock(unet)
    count = 0
    timesteps: dict[int, float] = {}
    with torch.no_grad(), calibrate_activations(unet, momentum=momentum,
                                                reduction=range_reduction) as cal:
        for batch in show_progress(calibration, desc="calibrating", unit="batches",
                                   enabled=progress):
            if "step" in batch:
                cal.note_steps(batch["step"])
            if not timestep_ranges:
                run_unet(unet, batch)
            else:
                if "step" not in batch:
                    raise MixDQError("timestep_ranges: calibration batches lack 'step'")
                for step, part in split_by_step(batch):
                    timesteps.setdefault(step, float(part["timestep"].flatten()[0]))
                    cal.step = step
                    run_unet(unet, part)
            count += 1
        if count == 0:
            raise MixDQError("no calibration batches: the calibration set is empty")
    if len(timesteps) > 1:
        steps = sorted(timesteps)
        if steps != list(range(len(steps))):
            raise MixDQError(f"timestep_ranges: calibration steps {steps} are not 0..n-1")
        clock = install_clock(unet, [timesteps[s] for s in steps])
        for name, per_step in cal.step_ranges.items():
            if sorted(per_step) != steps:
                raise MixDQError(f"timestep_ranges: layer {name} ran at steps "
                                 f"{sorted(per_step)} only, not at every step {steps}")
            cal.layers[name].set_step_ranges([per_step[s] for s in steps], clock)
    for name, layer in quantizable_layers(unet).items():
        if layer.active_a_bits is not None and layer.act_range is None:
            raise MixDQError(f"layer {name} was never called during calibration; its input "
                             f"range is unknown")
    return unet


@torch.no_grad()
def output_sqnr(unet: nn.Module, batches: Iterable[Mapping]) -> float:
    """SQNR in dB of ``unet``'s output against each batch's recorded ``output``, over all batches.

    ``10 log10(sum y_fp^2 / sum (y - y_fp)^2)``, summed over every element of every batch.
    Batches from a calibration folder are refused for a UNet other than the recorded one.
    """
    from .calib.store import check_calibration_model

    check_calibration_model(batches, unet)
    signal = noise = 0.0
    for batch in batches:
        if "output" not in batch:
            raise MixDQError("calibration batch has no recorded 'output' to compare against")
        y = run_unet(unet, batch).double()
        ref = batch["output"].to(y.device, torch.float64)
        signal += float(ref.square().sum())
        noise += float((y - ref).square().sum())
    if signal == 0.0 and noise == 0.0:
        raise MixDQError("no batches to measure SQNR on")
    return float("inf") if noise == 0 else float(10 * torch.log10(torch.tensor(signal / noise)))
