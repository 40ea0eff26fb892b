"""Keep third-party chatter that is not the user's business off the terminal.

diffusers and transformers log notices while they load (``Loading pipeline components``, ``Loading
weights`` and ``Writing model shards`` progress bars, the image processor's torchvision
fallback notice) and torch/torchvision emit deprecation warnings. None of them is actionable by a
mixdq user. :func:`quiet_libraries` wraps our loaders: it lowers those libraries' verbosity to
errors and turns off their progress bars for the duration, then restores what the caller had, so
a Python user's own settings survive. mixdq's own warnings and errors are untouched.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Iterator

# warning categories from these modules are library internals, not the user's business
_NOISY_MODULES = r"(torch|torchvision|transformers|diffusers|huggingface_hub|torchmetrics)(\.|$)"


def _hf_logging():
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    return diffusers_logging, transformers_logging


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence diffusers/transformers logging and progress bars and library warnings inside."""
    libraries = _hf_logging()
    saved = [(lib.get_verbosity(), lib.is_progress_bar_enabled()) for lib in libraries]
    dist_logger = logging.getLogger("torch.distributed")
    dist_level = dist_logger.level
    for lib in libraries:
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    dist_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module=_NOISY_MODULES)
            yield
    finally:
        for lib, (verbosity, bars) in zip(libraries, saved):
            lib.set_verbosity(verbosity)
            (lib.enable_progress_bar if bars else lib.disable_progress_bar)()
        dist_logger.setLevel(dist_level)
