"""Presets and model configurations shipped with mixdq (installed as ``quant.configs``)."""
