#!/usr/bin/env python
"""Whole SDXL UNet (random weights): fp16 vs W8A8 vs W4A8 latency (CUDA graphs) and memory.

    python scripts/bench_unet.py [--resolution 512] [--batch 1] [--variants fp16 w8a8 w4a8]

Needs a CUDA GPU and the built kernels; otherwise prints one line saying what is missing.
"""

import argparse
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=["fp16", "fp16-cl", "w8a8", "w4a8"],
                        choices=["fp16", "fp16-cl", "w8a8", "w4a8"])
    parser.add_argument("--iters", type=int, default=20, help="timed UNet calls per variant")
    parser.add_argument("--backend", default="kernels", choices=["kernels", "int_mm"])
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("bench_unet: no CUDA device; nothing to benchmark", file=sys.stderr)
        return 1
    import quant.kernels as kernels

    if not kernels.is_available() and any(v.startswith("w") for v in args.variants):
        print(f"bench_unet: mixdq CUDA kernels not available: "
              f"{kernels.load_extension().reason}", file=sys.stderr)
        return 1
    from quant.deploy_bench import bench_unet, format_unet_results
    from quant.utils.io import write_text

    results = bench_unet(args.variants, args.resolution, args.batch, args.iters, args.backend)
    text = format_unet_results(results, args.resolution, args.batch)
    print(text)
    if args.out:
        write_text(args.out, kernels.describe() + "\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
