"""Where the trained proxy's shipped weights live (``quant/proxy/weights``).

Here rather than in :mod:`quant.proxy` so that resolving ``--model proxy`` needs no import of
the proxy package (which builds on :mod:`quant.models`).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import MixDQError

TRAIN_HINT = "train them with `python scripts/train_proxy.py` (about 50 minutes on one CPU core)"


def weights_root() -> Path:
    """Folder of the shipped weights: ``pipeline/`` (diffusers) and ``classifier.safetensors``."""
    return Path(__file__).resolve().parent.parent / "proxy" / "weights"


def pipeline_dir() -> Path:
    return weights_root() / "pipeline"


def classifier_file() -> Path:
    return weights_root() / "classifier.safetensors"


def require_pipeline_dir() -> Path:
    """The shipped pipeline folder.

    Raises:
        MixDQError: the weights are missing, with the command that makes them.
    """
    path = pipeline_dir()
    if not (path / "model_index.json").is_file():
        raise MixDQError(f"--model proxy: no trained weights in {path}; {TRAIN_HINT}")
    return path
