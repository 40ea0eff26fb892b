"""`mixdq sensitivity`: measure every layer's sensitivity to quantization, one layer at a time."""

from __future__ import annotations

import argparse

from .common import (add_dtype_arg, add_method_args, add_model_args, model_spec, positive_int,
                     stage_options)


def _bits(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(b) for b in text.split(",") if b.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def register(sub):
    p = sub.add_parser(
        "sensitivity", help="per-layer sensitivity table (SQNR / SSIM) for bit allocation",
        description="Quantize one layer at a time (its weight or its input, at each candidate "
        "bit width) and measure the UNet output SQNR against the recorded full-precision "
        "output and, for content-related layers, the SSIM of the images against the "
        "reference images. Writes the CSV, a protect list (SENS.protect.txt), a heatmap "
        "(SENS.heatmap.png) and a summary (SENS.summary.json). Rerun the same command to "
        "resume; run it under `torchrun --nproc-per-node K -m quant.sensitivity ...` to "
        "shard the layers over K processes.")
    add_model_args(p)
    p.add_argument("--calib", required=True, metavar="CALIB_DIR",
                   help="calibration folder from `mixdq calibrate`")
    p.add_argument("--quantized-base", default=None, metavar="QUANT_DIR",
                   help="measure on top of this quantized checkpoint instead of full precision")
    p.add_argument("--out", required=True, metavar="SENS.csv", help="the table to write")
    p.add_argument("--weight-bits", type=_bits, default=(2, 4, 8),
                   help="candidate weight bits (default 2,4,8)")
    p.add_argument("--act-bits", type=_bits, default=(4, 8),
                   help="candidate activation bits (default 4,8)")
    p.add_argument("--content-pattern", action="append", default=None, metavar="TEXT",
                   help="names containing TEXT are content-related (repeatable; default "
                        "attn2 and ff)")
    p.add_argument("--ssim", choices=("content", "all", "none"), default="content",
                   help="which layers also get the image SSIM (default content)")
    p.add_argument("--ssim-size", type=int, default=None, metavar="N",
                   help="SSIM compares images area-downsampled to this side; 0: at the decoded "
                   "resolution with the original's near-global window (the method's default)")
    p.add_argument("--batch-size", type=positive_int, default=8,
                   help="calibration samples per UNet call (default 8)")
    p.add_argument("--protect-fraction", type=_fraction, default=0.01,
                   help="share of activation layers to keep in floating point (default 0.01)")
    p.add_argument("--weight-scale", choices=("mse", "minmax"), default=None,
                   help="weight scales: min-max (the method's default) or MSE-searched clipping")
    p.add_argument("--protect-rule", choices=("group", "global"), default=None,
                   help="protect list: 1%% per group at A8, quality by SQNR and content by SSIM "
                   "(group, the method's default) or all layers by SQNR at the lowest bits")
    p.add_argument("--no-bos", action="store_true",
                   help="no BOS-aware quantization of cross-attention key/value inputs")
    p.add_argument("--block-cache", choices=("fine", "blocks"), default="fine",
                   help="cache inside blocks (default) or only top-level block inputs")
    p.add_argument("--layers", default=None, metavar="REGEX",
                   help="measure only the layers whose name matches")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_method_args(p)
    add_dtype_arg(p)
    return p


def run(args) -> int:
    from ..stages import SensitivityOptions, sensitivity

    sensitivity(model_spec(args), stage_options(SensitivityOptions, args), args.calib, args.out)
    return 0
