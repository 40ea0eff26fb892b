"""Arguments and helpers shared by several subcommands."""

from __future__ import annotations

import argparse

from ..errors import MixDQError


def add_model_args(p: argparse.ArgumentParser) -> None:
    """``--model``, ``--device``, ``--dtype``: the same meaning for every stage."""
    p.add_argument("--model", default="stabilityai/sdxl-turbo",
                   help="Hugging Face Hub id, local diffusers folder, or 'tiny' (built in)")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda if present)")
    p.add_argument("--dtype", default=None,
                   help="fp16 / bf16 / fp32 (default: fp16 on CUDA; always fp32 on CPU)")
    p.add_argument("--lora", default=None,
                   help="LoRA to fuse into the model first (file, folder or Hub id; needs peft)")
    p.add_argument("--lora-scale", type=float, default=1.0)


def load_model(args, **kwargs):
    """The full-precision pipeline the model arguments of a subcommand describe."""
    from ..models import load_fp_pipeline

    return load_fp_pipeline(args.model, args.device, args.dtype, lora=args.lora,
                            lora_scale=args.lora_scale, **kwargs)


def not_built(name: str):
    """A ``run`` for a subcommand that is not built yet: one line, exit status 2."""
    def run(args) -> int:
        raise MixDQError(f"'{name}' is not built yet in this version of mixdq")
    return run


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value
