#!/usr/bin/env bash
# Download, on a machine with PyPI access, the wheels a GPU machine without internet needs for
# scripts/gpu_verify.sh: diffusers (its dependencies are in the GPU image). Writes .whl/
# (git-ignored); carry that folder to the GPU machine.
#
#   scripts/fetch_gpu_wheels.sh [DIFFUSERS_VERSION]   (default: the version installed here)
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:-$(python3 -c 'import diffusers; print(diffusers.__version__)')}"
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 -d .whl "diffusers==$version"
ls -l .whl
