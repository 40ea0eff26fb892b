"""Choose the activation-range reduction by measurement: EMA vs running min/max, per step.

    python scripts/bench_range_reduction.py --model tiny --steps 1 2 4 --prompts 8
    python scripts/bench_range_reduction.py --model tiny-sdxl --steps 4 --guidance 3 \
        --reductions ema minmax minmax+steps

For each step count, records a calibration of the model (the bundled COCO prompts), quantizes a
uniform W/A copy of its UNet with each reduction (``+steps``: with timestep-dependent ranges,
:mod:`quant.steps`) and prints the UNet-output SQNR over all steps and at every step.
"""

import argparse
import tempfile
from pathlib import Path

import torch


def main():
    import diffusers

    from quant.calib.prompts import load_prompts
    from quant.multistep import calibrate_and_quantize
    from quant.models import load_fp_pipeline

    diffusers.utils.logging.set_verbosity_error()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--guidance", type=float, default=0.0)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--bits", type=int, nargs=2, default=[8, 8], metavar=("W", "A"))
    p.add_argument("--reductions", nargs="+", default=["ema", "minmax", "minmax+steps"])
    p.add_argument("--work-dir", default=None)
    args = p.parse_args()
    torch.manual_seed(0)
    pipe = load_fp_pipeline(args.model, device="cpu")
    root = Path(__file__).resolve().parents[1] / "configs" / "prompts"
    prompts = load_prompts(str(root / "coco2017_val_first1024.txt"), num_prompts=args.prompts)
    with tempfile.TemporaryDirectory(dir=args.work_dir) as work:
        for steps in args.steps:
            for reduction in args.reductions:
                r = calibrate_and_quantize(pipe, prompts, Path(work) / f"s{steps}",
                                           steps=steps, guidance=args.guidance,
                                           w_bits=args.bits[0], a_bits=args.bits[1],
                                           reduction=reduction.removesuffix("+steps"),
                                           timestep_ranges=reduction.endswith("+steps"))
                per_step = " ".join(f"{x:6.2f}" for x in r.per_step_db)
                print(f"{args.model} steps={steps} guidance={args.guidance} "
                      f"W{args.bits[0]}A{args.bits[1]} {reduction:12s} all={r.sqnr_db:6.2f} dB  "
                      f"per step: {per_step}", flush=True)


if __name__ == "__main__":
    main()
