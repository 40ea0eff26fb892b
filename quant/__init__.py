"""mixdq: metric-decoupled mixed-precision post-training quantization for few-step diffusion.

Public API (imported lazily so that ``import quant`` stays cheap):

- :func:`quant.load_pipeline` - a stock diffusers pipeline, its UNet quantized from a checkpoint.
- :func:`quant.quantize_unet` - quantize a UNet you built yourself, given a bit map and
  calibration batches.
- :func:`quant.models.load_fp_pipeline` - load a full-precision pipeline (SDXL, SD 1.5/2.1, ...).
"""

__version__ = "0.1.0"

_LAZY = {
    "load_pipeline": ("quant.api", "load_pipeline"),
    "quantize_unet": ("quant.api", "quantize_unet"),
    "BitMap": ("quant.bitmap", "BitMap"),
    "load_fp_pipeline": ("quant.models", "load_fp_pipeline"),
    "MixDQError": ("quant.errors", "MixDQError"),
}

__all__ = ["__version__", *_LAZY]


def __dir__():
    return sorted(set(globals()) | set(__all__))


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'quant' has no attribute {name!r}")
