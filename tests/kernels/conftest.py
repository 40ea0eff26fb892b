"""Fixtures of the kernel tests: the host emulator of the CUDA kernel source, and the device.

Without a CUDA device the Triton kernels run in Triton's CPU interpreter: ``TRITON_INTERPRET``
must be set before ``quant.kernels.triton_ops`` decorates them, so it is set here, at
collection, before any test module imports it.
"""

import os
import shutil

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

@pytest.fixture(scope="session")
def emulator(request):
    """The kernels' source compiled for the CPU emulator (cached by source hash)."""
    from quant.kernels.emulator import build_emulator

    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("no C++ compiler to build the kernel emulator")
    return build_emulator(request.config.cache.mkdir("mixdq-kernel-emulator"))


@pytest.fixture
def cuda_kernels():
    """Skip unless a CUDA device and the compiled mixdq kernels are present."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    import quant.kernels

    if not quant.kernels.is_available():
        pytest.skip("mixdq CUDA kernels not built: " + quant.kernels.load_extension().reason)
    return torch.device("cuda")
