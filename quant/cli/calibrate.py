"""`mixdq calibrate`: run the full-precision pipeline on prompts and record every UNet call."""

from __future__ import annotations

from .common import (add_coco_order_arg, add_dtype_arg, add_method_args, add_model_args,
                     model_spec, positive_int, stage_options)


def register(sub):
    p = sub.add_parser(
        "calibrate", help="record UNet inputs/outputs and reference images on prompts",
        description="Run the full-precision pipeline on calibration prompts and record every "
        "UNet call (inputs and output), the reference images and a manifest into --out. "
        "Rerunning the same command resumes an interrupted run; a finished one is left as is.")
    add_model_args(p)
    p.add_argument("--prompts", required=True, metavar="SOURCE",
                   help="COCO caption .json, .csv/.tsv with a text column, .txt (one per line), "
                        "hf:NAME[:SPLIT], or a folder saved with datasets")
    p.add_argument("--num-prompts", type=int, default=32,
                   help="how many prompts to take (default 32)")
    p.add_argument("--column", default="text", help="text column of a CSV/TSV or dataset")
    p.add_argument("--split", default=None, help="dataset split (default train)")
    p.add_argument("--shuffle", action="store_true",
                   help="take a seeded random sample instead of the first N prompts")
    p.add_argument("--shuffle-seed", type=int, default=0, help="seed of --shuffle (default 0)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="denoising steps (default: the model's usual, e.g. 1 for SDXL-Turbo, "
                   "4 for LCM-LoRA or SDXL-Lightning)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale; above 1 the batch is doubled "
                   "(default: the model's usual)")
    p.add_argument("--negative-prompt", default="",
                   help="unconditional prompt when --guidance > 1 (default empty)")
    p.add_argument("--resolution", type=positive_int, default=None,
                   help="image side in pixels (default: the model's native size)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="prompts per shard")
    p.add_argument("--seed", type=int, default=42, help="prompt i uses seed + i")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--out", required=True, metavar="CALIB_DIR", help="calibration folder")
    add_method_args(p)
    add_coco_order_arg(p)
    add_dtype_arg(p)
    return p


def run(args) -> int:
    from ..stages import CalibrateOptions, calibrate

    calibrate(model_spec(args), stage_options(CalibrateOptions, args), args.out)
    return 0
