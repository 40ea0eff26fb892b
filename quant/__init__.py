"""mixdq: metric-decoupled mixed-precision post-training quantization for few-step diffusion.

Public API (imported lazily so that ``import quant`` stays cheap):

- :func:`quant.models.load_fp_pipeline` - load a full-precision SDXL-style pipeline.
"""

__version__ = "0.1.0"

_LAZY = {
    "load_fp_pipeline": ("quant.models", "load_fp_pipeline"),
    "MixDQError": ("quant.errors", "MixDQError"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'quant' has no attribute {name!r}")
