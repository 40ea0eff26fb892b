"""Calibration data: prompts in, recorded UNet calls and reference images out.

Imports are lazy so that ``import quant.calib`` stays light:

- :class:`CalibrationData` - read a calibration folder (``quant.calib.store``).
- :func:`record_calibration` - run the pipeline and record it (``quant.calib.record``).
- :func:`load_prompts` - prompts from COCO JSON, CSV/TSV, text or a ``datasets`` dataset
  (``quant.calib.prompts``).
"""

_LAZY = {
    "CalibrationData": ("quant.calib.store", "CalibrationData"),
    "record_calibration": ("quant.calib.record", "record_calibration"),
    "load_prompts": ("quant.calib.prompts", "load_prompts"),
    "read_prompts": ("quant.calib.prompts", "read_prompts"),
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'quant.calib' has no attribute {name!r}")
