"""The CUDA sources compile (nvcc, sm_80/89/90) and setup.py reports what it builds."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _nvcc():
    return os.environ.get("NVCC") or shutil.which("nvcc") or (
        "/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)


@pytest.mark.slow
def test_compile_script(tmp_path):
    """scripts/compile_kernels.sh: every .cu for three architectures, the binding's syntax."""
    if _nvcc() is None:
        pytest.skip("nvcc not found: the CUDA sources cannot be compiled on this machine")
    env = dict(os.environ, NVCC=_nvcc(), PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "compile_kernels.sh"), "--out",
                           str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=3600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("elementwise", "gemm_linear", "gemm_conv", "gemm_dispatch"):
        assert (tmp_path / f"{name}.o").stat().st_size > 0
        assert f"ok    {name}" in proc.stdout
    assert "spill stores 0 B" in proc.stdout
    assert "all kernel sources compile" in proc.stdout


@pytest.mark.skipif(torch.version.cuda is not None, reason="checks the CPU-torch message")
def test_setup_reports_missing_cuda():
    env = dict(os.environ, MIXDQ_BUILD_CUDA="1")
    proc = subprocess.run([sys.executable, "setup.py", "--name"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0
    assert "this torch has no CUDA; skipping the CUDA extension" in proc.stderr
