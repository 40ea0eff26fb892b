"""mixdq: build and install.

    pip install -e ".[test]"                      # pure Python; the CUDA kernels are optional
    pip install -e ".[triton]"                    # the Triton backend (CUDA torch ships triton)
    MIXDQ_BUILD_CUDA=1 pip install -e . --no-build-isolation   # also build the CUDA extension
    MIXDQ_BUILD_CUDA=1 python setup.py build_ext --inplace      # only the extension, in place

The CUDA extension is built only when asked for and when the installed torch has CUDA; a request
that cannot be met is reported, never silently dropped. Architectures: TORCH_CUDA_ARCH_LIST,
default "8.0;8.9;9.0" (A100, RTX 4090/L40, H100).
"""

import os
import re
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def version() -> str:
    """The one version number: ``quant/__init__.py``'s ``__version__`` (read, not imported)."""
    text = (ROOT / "quant" / "__init__.py").read_text(encoding="utf-8")
    return re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1)


def cuda_extensions():
    """The CUDA extension quant._C, when MIXDQ_BUILD_CUDA=1 asks for it and torch has CUDA.

    Sources: kernels/*.cu (plain CUDA, no torch headers) and kernels/binding.cpp (the torch
    side). Keep the nvcc flags in sync with quant/kernels/loader.py (the JIT build).
    """
    if os.environ.get("MIXDQ_BUILD_CUDA", "0") != "1":
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import BuildExtension, CUDAExtension
    except ImportError:
        print("mixdq: MIXDQ_BUILD_CUDA=1 but torch is not importable in the build environment "
              "(use --no-build-isolation); skipping the CUDA extension", file=sys.stderr)
        return [], {}
    if torch.version.cuda is None:
        print("mixdq: MIXDQ_BUILD_CUDA=1 but this torch has no CUDA; skipping the CUDA "
              "extension", file=sys.stderr)
        return [], {}
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;8.9;9.0")
    kernels = ROOT / "kernels"
    sources = [str(p.relative_to(ROOT)) for p in sorted(kernels.glob("*.cu"))]
    sources.append(str((kernels / "binding.cpp").relative_to(ROOT)))
    print(f"mixdq: building quant._C for TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']}",
          file=sys.stderr)
    # No --use_fast_math: the quantizer and the epilogue must round exactly like torch.
    ext = CUDAExtension("quant._C", sources,
                        extra_compile_args={"cxx": ["-O3"],
                                            "nvcc": ["-O3", "-std=c++17", "-lineinfo"]})
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = cuda_extensions()

setup(
    name="mixdq",
    version=version(),
    description="Metric-decoupled mixed-precision post-training quantization for few-step "
                "text-to-image diffusion models (MixDQ), with INT8 CUDA kernels",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["quant", "quant.*"]) + ["quant.configs"],
    package_dir={"quant.configs": "configs"},
    package_data={"quant.configs": ["*.json", "*.yaml", "prompts/*"],
                  "quant.proxy": ["weights/*.safetensors", "weights/pipeline/*.json",
                                  "weights/pipeline/*/*.json",
                                  "weights/pipeline/*/*.safetensors"]},
    install_requires=[
        "torch>=2.2",
        "diffusers>=0.30",
        "transformers>=4.40",
        "safetensors>=0.4",
        "pulp>=2.8",
        "numpy>=1.24",
        "torchmetrics>=1.3",
        "tqdm>=4.60",
        "pyyaml>=6.0",
        "pillow>=9.0",
        "matplotlib>=3.6",
    ],
    extras_require={
        # triton: its CPU interpreter runs the Triton kernels' tests (TRITON_INTERPRET=1)
        "test": ["pytest>=7", "hypothesis>=6", "scipy>=1.9", "peft>=0.10", "datasets>=2.14",
                 "ruff>=0.4", "triton>=3.6; platform_system == 'Linux'"],
        "triton": ["triton>=3.6; platform_system == 'Linux'"],
        "data": ["datasets>=2.14"],
        "lora": ["peft>=0.10"],
    },
    entry_points={"console_scripts": ["mixdq=quant.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
