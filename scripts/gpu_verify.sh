#!/usr/bin/env bash
# GPU verification of the mixdq kernels, end to end: build the extension, run the CUDA tests
# (kernels bit-exact against the torch references on the int32 accumulators; the converted tiny
# UNet; CUDA graphs), then the benchmarks (per-shape and whole SDXL UNet).
#
#   scripts/gpu_verify.sh [--wheels DIR] [--out DIR] [--archs "9.0"] [STAGE ...]
#
# Stages, in order (default: all): env build test bench-kernels bench-unet
#   env            GPU, driver, torch, nvcc
#   build          MIXDQ_BUILD_CUDA=1 python setup.py build_ext --inplace  ->  quant/_C*.so
#                  (skipped when quant/_C*.so is newer than every kernel source)
#   test           pytest tests/kernels tests/test_deploy.py (CUDA tests included)
#   bench-kernels  scripts/bench_kernels.py: every SDXL GEMM shape, 512/1024 px, batch 1/4
#   bench-unet     scripts/bench_unet.py: fp16 vs W8A8 vs W4A8, 512 px batch 1 (and 1024 px)
#
# --wheels DIR: Python wheels to install first (no index, no dependencies) into a private
#   site folder on PYTHONPATH. A GPU machine without internet lacks diffusers: fetch it on a
#   machine with PyPI access with scripts/fetch_gpu_wheels.sh (writes .whl/), carry that
#   folder along, and pass --wheels .whl (the default when .whl/ exists).
# --out DIR: where logs and tables go (default: $OUT if set, else gpu-results/).
# --archs: TORCH_CUDA_ARCH_LIST for the build (default: the visible GPU's architecture).
#
# The build is copied to OUT/ too (quant_C.so), so a later session can carry it back
# (cp it to quant/_C.<abi>.so) instead of rebuilding.
set -uo pipefail
cd "$(dirname "$0")/.."

wheels=""
[ -d .whl ] && wheels=".whl"
out="${OUT:-gpu-results}"
archs=""
stages=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) wheels="$2"; shift ;;
    --out) out="$2"; shift ;;
    --archs) archs="$2"; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    env|build|test|bench-kernels|bench-unet) stages+=("$1") ;;
    *) echo "gpu_verify: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[ ${#stages[@]} -eq 0 ] && stages=(env build test bench-kernels bench-unet)
mkdir -p "$out"
py="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
user_path="${PYTHONPATH:-}"
export PYTHONPATH="$PWD${user_path:+:$user_path}"

if [ -n "$wheels" ]; then
  site="${TMPDIR:-/tmp}/mixdq-site"
  echo "== installing wheels from $wheels into $site"
  "$py" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" \
    "$wheels"/*.whl || { echo "gpu_verify: wheel install failed" >&2; exit 1; }
  export PYTHONPATH="$PWD:$site${user_path:+:$user_path}"
fi

failed=()
run_stage() {  # run_stage NAME LOGFILE COMMAND...
  local name="$1" log="$2"
  shift 2
  echo "== $name (log: $out/$log)"
  local start=$SECONDS
  "$@" 2>&1 | tee "$out/$log"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - start)) s"
  [ "$rc" = 0 ] || failed+=("$name")
  return "$rc"
}

stage_env() {
  nvidia-smi || true
  nvcc --version | tail -n 2 || true
  "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
"device", torch.cuda.get_device_name() if torch.cuda.is_available() else None)'
  "$py" -c 'import diffusers, transformers; print("diffusers", diffusers.__version__,
"transformers", transformers.__version__)'
}

stage_build() {
  local so
  so="$(ls quant/_C*.so 2>/dev/null | head -n 1)"
  if [ -n "$so" ] && [ -z "$(find kernels setup.py -newer "$so" -type f 2>/dev/null)" ]; then
    echo "up to date: $so"
  else
    if [ -z "$archs" ]; then
      archs="$("$py" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')"
    fi
    echo "TORCH_CUDA_ARCH_LIST=$archs"
    MIXDQ_BUILD_CUDA=1 TORCH_CUDA_ARCH_LIST="$archs" MAX_JOBS="${MAX_JOBS:-16}" \
      "$py" setup.py build_ext --inplace || return 1
    so="$(ls quant/_C*.so 2>/dev/null | head -n 1)"
    [ -n "$so" ] || { echo "gpu_verify: the build produced no quant/_C*.so" >&2; return 1; }
  fi
  cp "$so" "$out/quant_C.so"
  "$py" -c 'import quant.kernels as k; print(k.describe()); assert k.is_available()'
}

stage_test() {
  "$py" -m pytest -q -m "not slow" tests/kernels tests/test_deploy.py -rs
}

for stage in "${stages[@]}"; do
  case "$stage" in
    env) run_stage env env.txt stage_env ;;
    build) run_stage build build.log stage_build ;;
    test) run_stage test tests.log stage_test ;;
    bench-kernels)
      run_stage bench-kernels bench_kernels.log "$py" scripts/bench_kernels.py \
        --out "$out/bench_kernels.txt" ;;
    bench-unet)
      run_stage bench-unet bench_unet.log "$py" scripts/bench_unet.py --resolution 512 \
        --batch 1 --out "$out/bench_unet_512.txt" ;;
  esac
done

if [ ${#failed[@]} -ne 0 ]; then
  echo "gpu_verify: FAILED stages: ${failed[*]}" >&2
  exit 1
fi
echo "gpu_verify: all stages passed; results in $out/"
