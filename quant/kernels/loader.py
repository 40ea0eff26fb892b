"""Finding the compiled CUDA kernels: the extension ``quant._C`` built by setup.py, or a JIT build.

Nothing here fails for lack of a build: :func:`load_extension` returns a status that says what
is there and, if nothing, why.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from pathlib import Path

import torch

from . import ops  # noqa: F401  (the op schemas must exist before kernels register)

ARCHS = ("8.0", "8.9", "9.0")  # A100, L4/L40/RTX 4090, H100/H200
NVCC_FLAGS = ("-O3", "-std=c++17", "-lineinfo")
BUILD_HINT = ("build it with `MIXDQ_BUILD_CUDA=1 pip install -e . --no-build-isolation` "
              "or call quant.kernels.build_jit()")


@dataclasses.dataclass(frozen=True)
class KernelStatus:
    """What :func:`load_extension` found.

    Attributes:
        loaded: an extension was imported and registered its CUDA kernels.
        source: ``"quant._C"`` or the JIT module's name; empty when nothing loaded.
        reason: why nothing loaded (empty when loaded).
    """

    loaded: bool
    source: str
    reason: str


def kernel_sources() -> list[Path]:
    """The CUDA/C++ sources of the extension (in a source checkout: ``<repo>/kernels``)."""
    root = Path(__file__).resolve().parents[2] / "kernels"
    return sorted(p for p in root.glob("*") if p.suffix in (".cu", ".cpp"))


@functools.lru_cache(maxsize=None)
def load_extension() -> KernelStatus:
    """Import ``quant._C`` once (registering its CUDA kernels) and report the outcome."""
    if torch.version.cuda is None:
        return KernelStatus(False, "", f"this torch ({torch.__version__}) is built without CUDA")
    try:
        importlib.import_module("quant._C")
    except ModuleNotFoundError:
        return KernelStatus(False, "", f"the CUDA extension quant._C is not built; {BUILD_HINT}")
    except (ImportError, OSError, RuntimeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        return KernelStatus(False, "", f"quant._C failed to import ({type(e).__name__}: "
                                       f"{first}); rebuild it against this torch")
    return KernelStatus(True, "quant._C", "")


@functools.lru_cache(maxsize=None)
def build_jit(verbose: bool = False) -> KernelStatus:
    """Compile the kernels now with ``torch.utils.cpp_extension.load`` and register them.

    For source checkouts without a setup.py build. Needs a CUDA torch and nvcc; compiles for
    the architectures in ``TORCH_CUDA_ARCH_LIST`` (torch's default: the visible GPU).

    Returns:
        The status; a failed build is reported in ``reason``, not raised.
    """
    if torch.version.cuda is None:
        return KernelStatus(False, "", f"this torch ({torch.__version__}) is built without CUDA")
    sources = kernel_sources()
    if not sources:
        return KernelStatus(False, "", "no kernel sources beside the package (not a source "
                                       "checkout)")
    from torch.utils.cpp_extension import load

    try:
        load(name="mixdq_C_jit", sources=[str(p) for p in sources],
             extra_cflags=["-O3"], extra_cuda_cflags=list(NVCC_FLAGS), verbose=verbose)
    except Exception as e:  # a compiler failure surfaces as many exception types
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        return KernelStatus(False, "", f"JIT build failed: {first}")
    return KernelStatus(True, "mixdq_C_jit", "")
