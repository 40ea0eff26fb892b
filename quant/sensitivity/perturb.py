"""The model sensitivity is measured on, and switching one layer's quantization on and off.

Full-precision base (the default): every layer is swapped for its quantized module by
:func:`quant.quantize.quantize_unet` with all weights at 8 bits, which also calibrates every
layer's input range (METHOD: ranges are gathered with weights quantized; 8-bit weights are the
choice made here, one calibration serving every candidate bit width, since they move the ranges
by far less than an activation step). Then every layer's quantization is switched off, and a
measurement switches on exactly one layer's weight or input at the candidate bits.

Quantized base (``--quantized-base``): the checkpoint is loaded onto the float UNet with
:func:`quant.checkpoint.load_quantized` and stays as it is; a measurement changes one layer's
weight or input bits on top of it. Layers that the checkpoint keeps in floating point and that
therefore have no input range get one from a calibration pass over the same batches (the
checkpoint's own ranges and BOS rows are restored afterwards). Weights the checkpoint holds as
integers are re-quantized from their dequantized values at other bit widths.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from ..errors import MixDQError
from ..structure import quantizable_layers

RANGE_WEIGHT_BITS = 8


def prepare_fp_base(unet: nn.Module, batches: list[dict], *, bos: bool = True,
                    weight_scale: str = "mse", momentum: float = 0.95,
                    progress: bool = False) -> dict[str, nn.Module]:
    """Swap in quantized layers, calibrate their input ranges, and switch them all off.

    Returns:
        The quantized layers by name, in module order; the UNet computes in full precision.
    """
    from ..bitmap import BitMap
    from ..quantize import quantize_unet

    names = list(quantizable_layers(unet))
    bit_map = BitMap.uniform(names, RANGE_WEIGHT_BITS, 8)
    quantize_unet(unet, bit_map, batches, bos=bos, weight_scale=weight_scale,
                  momentum=momentum, progress=progress)
    layers = quantizable_layers(unet)
    for layer in layers.values():
        layer.enable(weight=False, act=False)
        layer.clear_cache()
    return layers


def prepare_quantized_base(unet: nn.Module, quant_dir: str | Path, batches: list[dict], *,
                           momentum: float = 0.95) -> dict[str, nn.Module]:
    """Load the checkpoint ``quant_dir`` onto ``unet`` and give every layer an input range.

    Returns:
        The quantized layers by name, in module order, in the checkpoint's state.
    """
    from ..calib.ranges import calibrate_activations
    from ..checkpoint import load_quantized

    load_quantized(unet, quant_dir)
    layers = quantizable_layers(unet)
    missing = [n for n, m in layers.items() if m.act_range is None]
    if missing:
        kept = {n: (m.act_range, m.bos_row) for n, m in layers.items() if m.act_range is not None}
        with torch.no_grad(), calibrate_activations(unet, momentum=momentum) as cal:
            from .replay import run_unet

            for batch in batches:
                if "step" in batch:
                    cal.note_steps(batch["step"])
                run_unet(unet, batch)
        for name, (ranges, bos_row) in kept.items():
            layers[name].set_act_range(ranges)
            layers[name].bos_row = bos_row
    return layers


class LayerSwitch:
    """Quantizes one layer's weight or input alone, on top of the base state.

    Args:
        layers: the quantized layers by name (from :func:`prepare_fp_base` or
            :func:`prepare_quantized_base`).
        fp_base: the base is full precision. BOS handling (a precomputed float32 row for the
            first text token) then applies only to the layer being measured, so that the base
            computes exactly what the float UNet computes.
    """

    def __init__(self, layers: dict[str, nn.Module], fp_base: bool = True):
        self.layers = layers
        self._bos = {name: bool(layer.bos) for name, layer in layers.items()}
        if fp_base:
            for layer in layers.values():
                layer.bos = False
        self.fp_base = fp_base

    @contextlib.contextmanager
    def quantized(self, name: str, target: str, bits: int) -> Iterator[None]:
        """Within the block, layer ``name``'s ``target`` (``weight``/``act``) runs at ``bits``."""
        try:
            layer = self.layers[name]
        except KeyError:
            raise MixDQError(f"unknown layer {name!r}") from None
        saved = (layer.w_bits, layer.a_bits, layer.w_enabled, layer.a_enabled, layer.bos)
        try:
            layer.bos = self._bos[name]
            if target == "weight":
                layer.set_bits(w=bits)
                layer.enable(weight=True)
            elif target == "act":
                layer.set_bits(a=bits)
                layer.enable(act=True)
            else:
                raise MixDQError(f"target must be 'weight' or 'act', got {target!r}")
            yield
        finally:
            layer.set_bits(w=saved[0], a=saved[1])
            layer.enable(weight=saved[2], act=saved[3])
            layer.bos = saved[4]

    def release(self, name: str) -> None:
        """Drop the layer's cached quantized weights (done with it; frees memory)."""
        self.layers[name].clear_cache()
