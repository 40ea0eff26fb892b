"""`mixdq calibrate`: run the full-precision pipeline on prompts and record every UNet call."""

from __future__ import annotations

from .common import (add_coco_order_arg, add_dtype_arg, add_generation_args, add_method_args,
                     add_model_args, add_prompt_args, model_spec, positive_int, stage_options)


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
    add_prompt_args(p, "how many prompts to take (default 32)", default=32)
    add_generation_args(p)
    p.add_argument("--batch-size", type=positive_int, default=8, help="prompts per shard")
    p.add_argument("--seed", type=int, default=42, help="prompt i uses seed + i (default 42)")
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
