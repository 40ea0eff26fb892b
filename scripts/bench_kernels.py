#!/usr/bin/env python
"""Per-shape microbenchmarks of the SDXL UNet's GEMMs: fp16 vs torch._int_mm+dequantize vs mixdq.

    python scripts/bench_kernels.py [--resolutions 512 1024] [--batches 1 4] [--out FILE]

Needs a CUDA GPU and the built kernels; otherwise prints one line saying what is missing.
"""

import argparse
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--reps", type=int, default=20, help="calls per timed CUDA graph")
    parser.add_argument("--out", help="also write the tables to this file")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("bench_kernels: no CUDA device; nothing to benchmark", file=sys.stderr)
        return 1
    import quant.kernels as kernels

    if not kernels.is_available():
        print(f"bench_kernels: mixdq CUDA kernels not available: "
              f"{kernels.load_extension().reason}", file=sys.stderr)
        return 1
    from quant.kernels.bench import bench_kernels, format_results
    from quant.utils.io import write_text

    print(kernels.describe())
    text = format_results(bench_kernels(args.resolutions, args.batches, args.reps))
    print(text)
    if args.out:
        write_text(args.out, kernels.describe() + "\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
