"""Model loading: Hub ids, local diffusers folders and the built-in ``tiny`` pipeline."""

from .loading import load_fp_pipeline, resolve_model
from .tiny import TinyConfig, build_tiny_pipeline, tiny_path

__all__ = ["load_fp_pipeline", "resolve_model", "TinyConfig", "build_tiny_pipeline", "tiny_path"]
