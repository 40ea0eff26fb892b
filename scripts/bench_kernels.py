#!/usr/bin/env python
"""Per-shape microbenchmarks of the SDXL UNet's GEMMs: fp16 vs torch._int_mm+dequantize vs the
CUDA C++ kernels vs Triton, with a bit-exactness check of every integer path per shape.

    python scripts/bench_kernels.py [--sizes 512x1 1024x1 1024x4] [--configs 0 1 2 3]
                                    [--deadline SECONDS] [--out FILE]

Needs a CUDA GPU; otherwise prints one line saying what is missing. Without the compiled
extension the CUDA C++ columns stay empty (Triton and _int_mm still run).
"""

import argparse
import sys
import time


def _size(text):
    res, _, batch = text.partition("x")
    return int(res), int(batch or 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--sizes", type=_size, nargs="+",
                        help="RESxBATCH pairs (overrides --resolutions/--batches)")
    parser.add_argument("--configs", type=int, nargs="+", default=[0, 1, 2, 3],
                        help="CUDA C++ tile configs to try (-1: the heuristic's)")
    parser.add_argument("--reps", type=int, default=20, help="calls per timed CUDA graph")
    parser.add_argument("--deadline", type=float, help="seconds from now: start no new shape")
    parser.add_argument("--out", help="also write the tables to this file")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("bench_kernels: no CUDA device; nothing to benchmark", file=sys.stderr)
        return 1
    import quant.kernels as kernels

    if not kernels.is_available():
        print(f"bench_kernels: CUDA C++ kernels not available ({kernels.load_extension().reason})"
              f"; their columns stay empty")
    from quant.kernels.bench import bench_kernels, format_results
    from quant.utils.io import write_text

    print(kernels.describe())
    deadline = time.time() + args.deadline if args.deadline else None
    sizes = args.sizes or [(r, b) for r in args.resolutions for b in args.batches]
    results = []
    for size in sizes:  # the table is rewritten after each size: a kill keeps what was measured
        if deadline is not None and time.time() > deadline:
            print(f"bench_kernels: time budget reached; {size[0]}x{size[1]} skipped")
            continue
        results += bench_kernels(reps=args.reps, configs=args.configs, deadline=deadline,
                                 sizes=[size])
        text = format_results(results)
        if args.out:
            write_text(args.out, kernels.describe() + "\n" + text + "\n")
    print(format_results(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
