"""Metric-decoupled sensitivity analysis: how much each layer's quantization hurts.

Imports are lazy so that ``import quant.sensitivity`` stays light:

- :func:`run_sensitivity` - a whole (resumable, shardable) run writing the CSV
  (``quant.sensitivity.run``).
- :class:`SensitivityConfig` - what to measure (``quant.sensitivity.config``).
- :class:`Measurer` - set up once, then measure single layers (``quant.sensitivity.measure``).
- :class:`ReplayEngine` - block-cached evaluation of one perturbed layer
  (``quant.sensitivity.replay``).
- :func:`read_csv`, :func:`protect_list`, :func:`read_protect` - the table and the protect list
  (``quant.sensitivity.results``).
- :class:`GroupRule` - content/quality grouping (``quant.sensitivity.groups``).
"""

_LAZY = {
    "run_sensitivity": ("quant.sensitivity.run", "run_sensitivity"),
    "SensitivityConfig": ("quant.sensitivity.config", "SensitivityConfig"),
    "Measurer": ("quant.sensitivity.measure", "Measurer"),
    "ReplayEngine": ("quant.sensitivity.replay", "ReplayEngine"),
    "Row": ("quant.sensitivity.results", "Row"),
    "read_csv": ("quant.sensitivity.results", "read_csv"),
    "protect_list": ("quant.sensitivity.results", "protect_list"),
    "read_protect": ("quant.sensitivity.results", "read_protect"),
    "GroupRule": ("quant.sensitivity.groups", "GroupRule"),
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'quant.sensitivity' has no attribute {name!r}")
