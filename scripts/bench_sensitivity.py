"""Block-cached vs full re-evaluation on the real SDXL UNet shapes (random weights).

    python scripts/bench_sensitivity.py --latent 32 --per-block 2 --device cpu

Prints seconds per evaluation per top-level block and the extrapolated time of a whole run
(794 layers x 5 evaluations); see quant/sensitivity/bench.py for what is measured.
"""

import argparse

import torch

from quant.sensitivity.bench import benchmark, random_batch, sdxl_unet_random


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=("fp32", "fp16"), default=None,
                   help="default fp16 on CUDA, fp32 on CPU")
    p.add_argument("--latent", type=int, default=32, help="latent side (64 = 512 px images)")
    p.add_argument("--samples", type=int, default=1, help="samples per evaluation")
    p.add_argument("--per-block", type=int, default=2, help="layers sampled per block")
    p.add_argument("--threads", type=int, default=1, help="CPU threads")
    p.add_argument("--no-blocks", action="store_true", help="skip top-level-only caching")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dtype = {"fp32": torch.float32, "fp16": torch.float16}.get(
        args.dtype, torch.float16 if args.device.startswith("cuda") else torch.float32)
    unet = sdxl_unet_random(args.device, dtype)
    batch = random_batch(unet, args.samples, args.latent, args.device, dtype)
    result = benchmark(unet, batch, per_block=args.per_block, compare_blocks=not args.no_blocks)
    print(result.format())


if __name__ == "__main__":
    main()
