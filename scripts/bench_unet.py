#!/usr/bin/env python
"""Whole SDXL UNet (random weights): fp16 vs W8A8 vs W4A8 (vs mixed) latency (CUDA graphs) and
memory.

    python scripts/bench_unet.py [--resolution 512] [--batch 1] [--variants fp16 w8a8 w4a8]
    python scripts/bench_unet.py --matrix [--sizes 512x1 1024x1 1024x4] [--backend auto]
                                 [--no-merge] [--no-tune] [--deadline SECONDS] [--out FILE]

--matrix builds each variant once and measures every size, with the per-layer backend choice
(tuned and cached) and merged projections; failures and skipped sizes are rows of the table.
Needs a CUDA GPU; otherwise prints one line saying what is missing.
"""

import argparse
import sys
import time

BACKENDS = ["kernels", "int_mm", "triton", "triton_fused", "auto"]


def _size(text):
    res, _, batch = text.partition("x")
    return int(res), int(batch or 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--variants", nargs="+",
                        choices=["fp16", "fp16-cl", "w8a8", "w4a8", "mixed"])
    parser.add_argument("--iters", type=int, default=20, help="timed UNet calls per variant")
    parser.add_argument("--backend", default=None, choices=BACKENDS,
                        help="default: kernels (single size), auto (--matrix)")
    parser.add_argument("--matrix", action="store_true")
    parser.add_argument("--sizes", type=_size, nargs="+", default=[(512, 1), (1024, 1), (1024, 4)])
    parser.add_argument("--no-merge", action="store_true")
    parser.add_argument("--no-tune", action="store_true")
    parser.add_argument("--deadline", type=float, help="seconds from now: start nothing new")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("bench_unet: no CUDA device; nothing to benchmark", file=sys.stderr)
        return 1
    import quant.kernels as kernels
    from quant.utils.io import write_text

    backend = args.backend or ("auto" if args.matrix else "kernels")
    if args.matrix:
        from quant.deploy_bench import (
            MATRIX_VARIANTS,
            bench_unet_matrix,
            format_unet_matrix,
        )

        deadline = time.time() + args.deadline if args.deadline else None

        def write(results):  # after each size: a kill keeps what was measured
            if args.out:
                write_text(args.out, kernels.describe() + "\n" + format_unet_matrix(results)
                           + "\n")

        results = bench_unet_matrix(args.variants or MATRIX_VARIANTS, args.sizes, args.iters,
                                    backend, not args.no_merge, not args.no_tune, deadline,
                                    on_size=write)
        text = format_unet_matrix(results)
    else:
        variants = args.variants or ["fp16", "fp16-cl", "w8a8", "w4a8"]
        if "mixed" in variants:
            print("bench_unet: the mixed variant is measured with --matrix", file=sys.stderr)
            return 2
        if backend == "kernels" and not kernels.is_available() and any(
                v.startswith("w") or v == "mixed" for v in variants):
            print(f"bench_unet: mixdq CUDA kernels not available: "
                  f"{kernels.load_extension().reason}", file=sys.stderr)
            return 1
        from quant.deploy_bench import bench_unet, format_unet_results

        results = bench_unet(variants, args.resolution, args.batch, args.iters, backend)
        text = format_unet_results(results, args.resolution, args.batch)
    print(text)
    if args.out:
        write_text(args.out, kernels.describe() + "\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
