#!/usr/bin/env bash
# GPU verification of the mixdq integer backends in one call (default budget: 470 s): bit-exactness
# of every kernel and backend, per-shape speed (fp16 cuBLAS vs torch._int_mm vs Triton vs the CUDA
# C++ kernels), and the whole SDXL UNet (random weights) with CUDA graphs: fp16 vs W8A8 vs W4A8 vs
# mixed at 512 px batch 1 and 1024 px batch 1 and 4, weight and peak memory.
#
#   scripts/gpu_verify.sh [--wheels DIR] [--out DIR] [--archs "9.0"] [--budget SECONDS]
#                         [--no-build] [STAGE ...]
#
# Stages, in order (default: all). The CUDA C++ build runs in the background from the start (it
# needs only the CPUs) while the Triton stages use the GPU; stages after it use it if it is done.
#   env            GPU, driver, torch, triton, nvcc, diffusers                       -> log
#   test-triton    pytest on the GPU: Triton kernels bit-exact against the references (tails,
#                  bounds harness), integer layers on every backend, merges, backend choice,
#                  torch.compile (fake impls)                                           -> log
#   test-cuda      pytest: the CUDA C++ kernels bit-exact (int32 and fp16, every tile), the
#                  converted tiny UNet, CUDA graphs (after the build; skipped without it)
#   bench-kernels  every distinct SDXL GEMM shape at 512x1, 1024x1, 1024x4: time per path and a
#                  bit-exactness check of each integer path's fp16 output  -> bench_kernels.txt
#   bench-unet     whole UNet matrix (backends chosen per layer by measurement, merged
#                  projections)                                               -> bench_unet.txt
# Every stage has a time limit drawn from the budget; a stage that runs out is reported, the
# rest still run, and the tables written so far are kept. At most 8 files come back:
#   summary.txt      the tables to paste into kernels/NOTES.md and the issue (exactness, speed)
#   gpu_verify.log   everything the stages printed
#   build.log        the CUDA C++ build;  quant_C.so  the build (carry it back as quant/_C.<abi>.so)
#   bench_kernels.txt, bench_unet.txt    the full tables
#   caches.tar       the Triton tile-tuning cache and the per-layer backend table (JSON)
#
# --wheels DIR: wheels to install first (no index, no deps) into a private site folder; the GPU
#   image lacks diffusers: fetch it with scripts/fetch_gpu_wheels.sh (writes .whl/) where PyPI is
#   reachable and carry .whl (the default when .whl/ exists).
# --out DIR: where the results go (default: $OUT if set, else gpu-results/).
set -uo pipefail
cd "$(dirname "$0")/.."

wheels=""
[ -d .whl ] && wheels=".whl"
out="${OUT:-gpu-results}"
archs=""
budget=470
build=1
stages=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) wheels="$2"; shift ;;
    --out) out="$2"; shift ;;
    --archs) archs="$2"; shift ;;
    --budget) budget="$2"; shift ;;
    --no-build) build=0 ;;
    -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
    env|test-triton|test-cuda|bench-kernels|bench-unet) stages+=("$1") ;;
    *) echo "gpu_verify: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[ ${#stages[@]} -eq 0 ] && stages=(env test-triton test-cuda bench-kernels bench-unet)
want() { local s; for s in "${stages[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }

mkdir -p "$out" || { echo "gpu_verify: cannot create $out" >&2; exit 2; }
log="$out/gpu_verify.log"
summary="$out/summary.txt"
: >"$log"
py="${PYTHON:-python3}"
work="${TMPDIR:-/tmp}/mixdq-gpu-verify"
mkdir -p "$work"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
export MIXDQ_TRITON_CACHE="$work/triton_tuning.json" MIXDQ_BACKEND_CACHE="$work/backends.json"
unset TRITON_INTERPRET  # the Triton kernels must run compiled, on the GPU
user_path="${PYTHONPATH:-}"
export PYTHONPATH="$PWD${user_path:+:$user_path}"
t0=$SECONDS
say() { echo "[$((SECONDS - t0)) s] $*" | tee -a "$log"; }
left() { echo $((budget - (SECONDS - t0))); }
min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }

if [ -n "$wheels" ]; then
  site="$work/site"
  say "installing wheels from $wheels into $site"
  if "$py" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" \
      "$wheels"/*.whl >>"$log" 2>&1; then
    export PYTHONPATH="$PWD:$site${user_path:+:$user_path}"
  else
    say "WARNING: wheel install failed (see log); continuing without"
  fi
fi

failed=()
results=()
run_stage() {  # run_stage NAME SECONDS COMMAND... (output appended to the log)
  local name="$1" limit="$2"
  shift 2
  if [ "$limit" -lt 15 ]; then
    say "== $name: SKIPPED (time budget spent)"
    results+=("$name: skipped (time budget)")
    return 1
  fi
  say "== $name (limit $limit s)"
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  local took=$((SECONDS - start))
  if [ "$rc" = 0 ]; then
    results+=("$name: ok ($took s)")
  elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    results+=("$name: TIMED OUT after $took s"); failed+=("$name")
  else
    results+=("$name: FAILED (exit $rc, $took s)"); failed+=("$name")
  fi
  say "== $name: exit $rc after $took s"
  return "$rc"
}

# ---- the CUDA C++ build, in the background --------------------------------------------------
build_pid=""
so_ready() { ls quant/_C*.so >/dev/null 2>&1; }
if [ "$build" = 1 ] && { want test-cuda || want bench-kernels || want bench-unet; }; then
  so="$(ls quant/_C*.so 2>/dev/null | head -n 1)"
  if [ -n "$so" ] && [ -z "$(find kernels setup.py -newer "$so" -type f 2>/dev/null)" ]; then
    say "CUDA C++ extension up to date: $so"
  elif ! command -v nvcc >/dev/null 2>&1; then
    say "no nvcc: the CUDA C++ kernels are not built (their columns stay empty)"
  else
    if [ -z "$archs" ]; then
      archs="$("$py" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())' \
               2>/dev/null || echo 9.0)"
    fi
    say "building the CUDA C++ extension in the background (TORCH_CUDA_ARCH_LIST=$archs)"
    ( MIXDQ_BUILD_CUDA=1 TORCH_CUDA_ARCH_LIST="$archs" MAX_JOBS="${MAX_JOBS:-12}" \
        timeout "$((budget - 120))" "$py" setup.py build_ext --inplace ) >"$out/build.log" 2>&1 &
    build_pid=$!
  fi
fi
wait_build() {  # wait for the background build, at most $1 seconds
  [ -z "$build_pid" ] && return 0
  local until=$((SECONDS + $1))
  while kill -0 "$build_pid" 2>/dev/null && [ $SECONDS -lt $until ]; do sleep 2; done
  if kill -0 "$build_pid" 2>/dev/null; then
    say "CUDA C++ build still running after the wait; continuing without it"
    return 1
  fi
  wait "$build_pid"; local rc=$?
  build_pid=""
  say "CUDA C++ build finished: exit $rc"
  if [ "$rc" = 0 ] && so_ready; then
    results+=("build: ok")
  elif [ "$rc" = 0 ]; then
    results+=("build: produced no quant/_C*.so (see build.log)"); rc=1
  else
    results+=("build: FAILED (exit $rc, see build.log)")
  fi
  return "$rc"
}

stage_env() {
  nvidia-smi || true
  nvcc --version 2>/dev/null | tail -n 2 || echo "no nvcc"
  "$py" - <<'EOF'
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, f"sm_{p.major}{p.minor}", p.multi_processor_count, "SMs",
          round(p.total_memory / 2**30), "GiB")
for name in ("triton", "diffusers", "transformers", "numpy"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as e:  # noqa: BLE001
        print(name, "MISSING:", e)
EOF
}

export py
export -f stage_env  # run_stage runs commands under timeout, which cannot call shell functions
pytest_args=(-q -p no:cacheprovider -rs)

# ---- stages -----------------------------------------------------------------------------------
if want env; then run_stage env 60 bash -c stage_env; fi
# Time plan (of the default 470 s): test-triton <= 170 s and leaves >= 290 s; test-cuda <= 60 s
# and leaves >= 230 s; bench-kernels <= 150 s and leaves >= 200 s; bench-unet the rest.
if want test-triton; then
  # one fixed tile config: the tests compile many kernel variants on tiny shapes
  lim=$(min 170 $(( $(left) - 290 )))
  run_stage test-triton "$lim" env MIXDQ_TRITON_TUNE=0 "$py" -m pytest "${pytest_args[@]}" \
    -m "not slow" \
    tests/kernels/test_triton.py tests/kernels/test_modules.py tests/kernels/test_merge.py \
    tests/kernels/test_backends.py tests/kernels/test_torch_compile.py
fi
if want test-cuda; then
  if wait_build $(( $(left) > 290 ? $(left) - 290 : 0 )) && so_ready; then
    "$py" -c 'import quant.kernels as k; print(k.describe())' 2>&1 | tee -a "$log"
    lim=$(min 60 $(( $(left) - 230 )))
    run_stage test-cuda "$lim" env MIXDQ_TRITON_TUNE=0 "$py" -m pytest "${pytest_args[@]}" \
      -m "not slow" \
      tests/kernels/test_cuda_kernels.py tests/test_deploy.py
  else
    say "== test-cuda: SKIPPED (no CUDA C++ build)"
    results+=("test-cuda: skipped (no CUDA C++ build; see build.log)")
  fi
fi
if want bench-kernels; then
  wait_build 0 || true
  lim=$(min 150 $(( $(left) - 200 )))
  # sizes in order of importance: a deadline cuts the last
  run_stage bench-kernels "$lim" "$py" scripts/bench_kernels.py --sizes 512x1 1024x4 1024x1 \
    --configs -1 --reps 10 --deadline $((lim - 40)) --out "$out/bench_kernels.txt"
fi
if want bench-unet; then
  wait_build 0 || true
  lim=$(( $(left) - 15 ))
  run_stage bench-unet "$lim" "$py" scripts/bench_unet.py --matrix --iters 10 \
    --sizes 512x1 1024x4 1024x1 --deadline $((lim - 100)) --out "$out/bench_unet.txt"
fi
if [ -n "$build_pid" ] && kill -0 "$build_pid" 2>/dev/null; then
  kill "$build_pid" 2>/dev/null
  results+=("build: not finished within the budget (killed)")
fi

# ---- what comes back --------------------------------------------------------------------------
so="$(ls quant/_C*.so 2>/dev/null | head -n 1)"
[ -n "$so" ] && cp "$so" "$out/quant_C.so"
tar -cf "$out/caches.tar" -C "$work" $(cd "$work" && ls ./*.json 2>/dev/null) 2>/dev/null \
  || rm -f "$out/caches.tar"
{
  echo "# mixdq gpu_verify summary ($(date -u +%Y-%m-%dT%H:%MZ), $((SECONDS - t0)) s)"
  grep -E "^(torch|device|triton|diffusers) " "$log" | head -n 5
  echo
  echo "## stages"
  printf '%s\n' "${results[@]}"
  echo
  echo "## tests (pytest summary lines)"
  grep -E "^(=+ )?[0-9]+ (passed|failed)|^FAILED|^ERROR" "$log" || echo "(none ran)"
  echo
  echo "## per-shape bit-exactness and totals (bench_kernels.txt has every shape)"
  if [ -f "$out/bench_kernels.txt" ]; then
    grep -E "^## |^shape |^all layers|^bit-exact" "$out/bench_kernels.txt"
  else
    echo "(no bench_kernels.txt)"
  fi
  echo
  echo "## whole UNet"
  if [ -f "$out/bench_unet.txt" ]; then cat "$out/bench_unet.txt"; else echo "(no bench_unet.txt)"; fi
} >"$summary" 2>&1
cat "$summary"

if [ ${#failed[@]} -ne 0 ]; then
  echo "gpu_verify: FAILED or timed out: ${failed[*]} (results in $out/)" >&2
  exit 1
fi
echo "gpu_verify: done in $((SECONDS - t0)) s; results in $out/"
