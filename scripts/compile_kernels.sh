#!/usr/bin/env bash
# Compile every CUDA source in kernels/ to object code for sm_80, sm_89 and sm_90 with nvcc, and
# syntax-check the torch binding (kernels/binding.cpp) against the installed torch's headers.
# Fails (exit 1) on any compiler error or warning; prints the registers and spills per kernel.
#
#   scripts/compile_kernels.sh [--no-binding] [--out DIR] [--archs "80 89 90"]
#
# Environment: NVCC (default: nvcc on PATH, else /usr/local/cuda/bin/nvcc), CXX (default g++),
# PYTHON (default python3; used only to find torch's headers).
set -euo pipefail
cd "$(dirname "$0")/.."

archs="80 89 90"
out="build/kernel-check"
binding=1
while [ $# -gt 0 ]; do
  case "$1" in
    --no-binding) binding=0 ;;
    --out) out="$2"; shift ;;
    --archs) archs="$2"; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "compile_kernels: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

nvcc="${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
if [ ! -x "$nvcc" ]; then
  echo "compile_kernels: nvcc not found (set NVCC)" >&2
  exit 1
fi
mkdir -p "$out"
gencode=()
for a in $archs; do gencode+=(-gencode "arch=compute_$a,code=sm_$a"); done
echo "nvcc: $("$nvcc" --version | tail -n 2 | head -n 1)"
echo "archs: $archs"

status=0
for src in kernels/*.cu; do
  name="$(basename "$src" .cu)"
  log="$out/$name.log"
  start=$(date +%s)
  # -Werror all-warnings: host and device warnings are errors; -Xptxas -v: resource usage.
  if "$nvcc" -std=c++17 -O3 -lineinfo "${gencode[@]}" -Werror all-warnings -Xptxas -v \
       -c "$src" -o "$out/$name.o" >"$log" 2>&1; then
    regs=$( (grep -o "Used [0-9]* registers" "$log" || true) | awk '{print $2}' | sort -n | tail -n 1)
    spills=$( (grep -o "[0-9]* bytes spill stores" "$log" || true) | awk '{s+=$1} END {print s+0}')
    stack=$( (grep -o "[0-9]* bytes stack frame" "$log" || true) | awk '{s+=$1} END {print s+0}')
    printf "ok    %-16s %4ss  max registers %s, spill stores %s B, stack %s B\n" \
      "$name" "$(( $(date +%s) - start ))" "${regs:-0}" "$spills" "$stack"
  else
    echo "FAIL  $name" >&2
    cat "$log" >&2
    status=1
  fi
done

if [ "$binding" = 1 ]; then
  python="${PYTHON:-python3}"
  if torch_inc="$("$python" -c 'import torch.utils.cpp_extension as c; print(" ".join(c.include_paths()))' 2>/dev/null)"; then
    cuda_torch="$("$python" -c 'import torch; print(int(torch.version.cuda is not None))')"
    defs=(-DTORCH_EXTENSION_NAME=_C -DTORCH_API_INCLUDE_EXTENSION_H)
    # A CPU-only torch ships c10/cuda headers without their generated macro file.
    [ "$cuda_torch" = 1 ] || defs+=(-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE)
    incs=()
    for d in $torch_inc; do incs+=(-I"$d"); done
    cuda_inc=""
    for d in "${CUDA_HOME:-}" "$(dirname "$(dirname "$(readlink -f "$nvcc")")")" /usr/local/cuda; do
      if [ -n "$d" ] && [ -f "$d/include/cuda_runtime.h" ]; then cuda_inc="$d/include"; break; fi
    done
    py_inc="$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
    start=$(date +%s)
    if "${CXX:-g++}" -std=c++20 -fsyntax-only -Wall -Werror "${defs[@]}" "${incs[@]}" \
         -I"$cuda_inc" -I"$py_inc" kernels/binding.cpp >"$out/binding.log" 2>&1; then
      printf "ok    %-16s %4ss  (syntax check against torch %s)\n" binding.cpp \
        "$(( $(date +%s) - start ))" "$("$python" -c 'import torch; print(torch.__version__)')"
    else
      echo "FAIL  binding.cpp" >&2
      cat "$out/binding.log" >&2
      status=1
    fi
  else
    echo "skip  binding.cpp (torch not importable by $python)"
  fi
fi

[ "$status" = 0 ] && echo "all kernel sources compile" || echo "kernel compilation FAILED" >&2
exit "$status"
