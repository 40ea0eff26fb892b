"""Model loading: Hub ids, local diffusers folders and the built-in ``tiny`` pipeline."""

from .loading import load_fp_pipeline, resolve_model
from .spec import ModelSpec
from .tiny import TinyConfig, build_tiny_pipeline, tiny_path

__all__ = ["load_fp_pipeline", "resolve_model", "ModelSpec", "TinyConfig", "build_tiny_pipeline",
           "tiny_path"]
