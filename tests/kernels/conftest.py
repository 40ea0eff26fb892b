"""Fixtures of the kernel tests: the host emulator of the CUDA kernel source, and the device."""

import shutil

import pytest
import torch

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
