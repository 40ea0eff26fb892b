"""The public entry points, the way diffusers users work.

    import quant
    pipe = quant.load_pipeline("stabilityai/sdxl-turbo", quantized="runs/w8a8/quant", device="cuda")
    image = pipe("a photo of a cat", num_inference_steps=1, guidance_scale=0.0).images[0]
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .errors import MixDQError

EXECUTIONS = ("auto", "kernels", "simulate")


def load_pipeline(model: str = "stabilityai/sdxl-turbo", quantized: str | Path | None = None, *,
                  device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                  execution: str = "auto", cuda_graphs: bool = False, lora: str | None = None,
                  lora_scale: float = 1.0, scheduler: str | None = None):
    """Load a stock diffusers pipeline (the class ``model_index.json`` names: SDXL, SD 1.5/2.1...),
    with its UNet quantized when asked.

    Args:
        model: Hub id, local diffusers folder, ``"tiny"`` or ``"proxy"``: the float base model
            the checkpoint was made from.
        quantized: a folder written by ``mixdq quantize`` (or
            :func:`quant.checkpoint.save_quantized`);
            ``None`` loads the full-precision pipeline.
        device: ``"cuda"``, ``"cpu"``...; default CUDA when present.
        dtype: compute dtype request (see :mod:`quant.precision`).
        execution: ``"kernels"`` runs the integer CUDA kernels (error if they are unavailable),
            ``"simulate"`` keeps fake quantization (the same numbers, float arithmetic),
            ``"auto"`` uses the kernels when they are available on ``device``.
        cuda_graphs: with kernels on CUDA, replay the UNet through captured CUDA graphs.
        lora, lora_scale: a LoRA to fuse before the checkpoint is applied; it must be the one
            fused when the checkpoint was made (see :func:`quant.models.loading.fuse_lora`).
        scheduler: a diffusers scheduler class name replacing the model's.

    Returns:
        The pipeline. ``pipe.mixdq_execution`` says how the UNet runs (``"full precision"``,
        ``"kernels"`` or ``"simulation"``) and, for kernels, ``pipe.mixdq_deploy_report`` lists
        the path of every layer.
    """
    from .models import load_fp_pipeline

    if execution not in EXECUTIONS:
        raise MixDQError(f"unknown execution {execution!r}; use one of {', '.join(EXECUTIONS)}")
    pipe = load_fp_pipeline(model, device, dtype, lora=lora, lora_scale=lora_scale,
                            scheduler=scheduler)
    pipe.mixdq_execution = "full precision"
    if quantized is None:
        return pipe
    from .checkpoint import load_quantized

    load_quantized(pipe.unet, quantized)
    if getattr(pipe, "mixdq_guard", None) is not None:
        pipe.mixdq_guard.name = f"quantized checkpoint {quantized}"
    pipe.mixdq_execution = "simulation"
    use_kernels, why = _kernels_usable(pipe.unet.device, execution)
    if getattr(pipe.unet, "mixdq_step_clock", None) is not None and (use_kernels
                                                                     or execution == "kernels"):
        # the kernels take one activation scale per layer, fixed at conversion
        use_kernels, why = False, ("the checkpoint has timestep-dependent activation ranges, "
                                   "which run simulated only")
    if use_kernels:
        from .deploy import CudaGraphUNet, convert

        _, report = convert(pipe.unet)
        pipe.mixdq_deploy_report = report
        pipe.mixdq_execution = "kernels"
        if cuda_graphs:
            pipe.unet = CudaGraphUNet(pipe.unet)
    elif execution == "kernels":
        raise MixDQError(f"integer kernels requested but unavailable: {why}")
    elif why:
        warnings.warn(f"mixdq: running the quantized UNet in simulation ({why})", stacklevel=2)
    return pipe


def _kernels_usable(device: torch.device, execution: str) -> tuple[bool, str]:
    if execution == "simulate":
        return False, ""
    if device.type != "cuda":
        return False, "integer kernels need a CUDA device" if execution == "kernels" else ""
    try:
        from . import kernels
    except ImportError as e:
        return False, f"quant.kernels is not importable ({e})"
    if not kernels.is_available():
        return False, kernels.describe()
    return True, ""


def quantize_unet(unet, bit_map, calibration, **kwargs):
    """Quantize a UNet you loaded yourself; see :func:`quant.quantize.quantize_unet`.

    Args:
        unet: a diffusers ``UNet2DConditionModel`` (modified in place).
        bit_map: a :class:`quant.bitmap.BitMap`, a path to one, or use
            ``BitMap.preset(quantizable_layers(unet), "W8A8")``.
        calibration: an iterable of UNet call kwargs, e.g.
            ``quant.calib.CalibrationData(DIR).batches(8)``.
    """
    from .quantize import quantize_unet as _quantize_unet

    return _quantize_unet(unet, bit_map, calibration, **kwargs)
