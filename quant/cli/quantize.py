"""`mixdq quantize`: calibrate a UNet on a calibration folder and write a quantized checkpoint."""

from __future__ import annotations

import argparse

from .common import add_model_args, model_spec, positive_int, stage_options


def bits_arg(text: str) -> int | None:
    """A bit width, or ``fp``/``16``/``none`` for floating point."""
    if text.lower() in ("fp", "16", "none", "float"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a bit width or 'fp', got {text!r}") from None


def register(sub):
    p = sub.add_parser(
        "quantize", help="calibrate and write a quantized UNet checkpoint",
        description="Swap every Linear/Conv2d of the UNet for a quantized one (per-channel "
        "symmetric weights, per-tensor asymmetric activations, BOS-aware text embeddings), "
        "calibrate the activation ranges on a calibration folder, and write a safetensors "
        "checkpoint with packed integer weights to --out.")
    add_model_args(p)
    p.add_argument("--calib", required=True, metavar="CALIB_DIR",
                   help="calibration folder written by `mixdq calibrate`")
    p.add_argument("--bit-map", metavar="FILE", help="per-layer bits (JSON/YAML, mixdq allocate)")
    p.add_argument("--w-bits", type=bits_arg, metavar="B",
                   help="uniform weight bits 2..8 or fp (instead of --bit-map)")
    p.add_argument("--a-bits", type=bits_arg, metavar="B",
                   help="uniform activation bits 4..8 or fp (instead of --bit-map)")
    p.add_argument("--no-bos", action="store_true",
                   help="quantize the BOS token like the others (ablation)")
    p.add_argument("--weight-scale", choices=["mse", "minmax"], default="mse",
                   help="weight clipping: MSE search (default) or min-max as the original")
    p.add_argument("--momentum", type=float, default=0.95,
                   help="moving-average momentum of the activation ranges")
    p.add_argument("--range-reduction", choices=["auto", "ema", "minmax", "mean"], default="auto",
                   help="how activation ranges are reduced over the calibration batches: ema "
                   "(the original's), minmax (running min/max over every step and guidance "
                   "row), mean; auto (default): ema for one step, minmax for several")
    p.add_argument("--timestep-ranges", action="store_true",
                   help="multi-step calibrations: one activation range per denoising step, "
                   "chosen by each UNet call's timestep (runs simulated, not on the integer "
                   "kernels)")
    p.add_argument("--batch-size", type=positive_int, default=4,
                   help="calibration samples per UNet call")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--out", required=True, metavar="QUANT_DIR", help="checkpoint folder")
    return p


def run(args) -> int:
    from ..stages import QuantizeOptions, quantize

    quantize(model_spec(args), stage_options(QuantizeOptions, args), args.calib, args.out)
    return 0
