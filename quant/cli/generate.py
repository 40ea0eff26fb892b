"""`mixdq generate`: one image from a prompt, full precision or quantized."""

from __future__ import annotations

from pathlib import Path

from ..errors import MixDQError
from .common import add_execution_arg, add_generation_args, add_model_args, model_spec


def register(sub):
    p = sub.add_parser(
        "generate", help="generate an image from a prompt (full precision or quantized)",
        description="Generate one image. With --quantized the UNet is the checkpoint's, exactly "
        "as quant.load_pipeline(MODEL, quantized=QUANT_DIR) gives it.")
    add_model_args(p)
    p.add_argument("--quantized", metavar="QUANT_DIR", default=None,
                   help="a folder written by `mixdq quantize` (made from --model); default: "
                   "the full-precision UNet")
    add_execution_arg(p)
    p.add_argument("--prompt", required=True, help="the text prompt")
    add_generation_args(p)
    p.add_argument("--seed", type=int, default=42, help="random seed of the noise (default 42)")
    p.add_argument("--out", required=True, help="output image file (.png, .jpg or .webp)")
    return p


def run(args) -> int:
    from ..api import load_pipeline
    from ..generate import check_generation_args, generate
    from ..utils.io import save_image

    if Path(args.out).suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise MixDQError(f"--out {args.out}: use a .png, .jpg or .webp file name")
    if args.quantized is not None and not Path(args.quantized).is_dir():
        raise MixDQError(f"--quantized {args.quantized}: no such folder")
    check_generation_args(guidance=args.guidance, resolution=args.resolution)  # before loading
    spec = model_spec(args)
    steps, guidance = args.steps, args.guidance
    if steps is None or guidance is None:
        usual = spec.usual_settings()
        steps = usual[0] if steps is None else steps
        guidance = usual[1] if guidance is None else guidance
    pipe = load_pipeline(spec.model, args.quantized, device=spec.device, dtype=spec.dtype,
                         execution=args.execution, lora=spec.lora, lora_scale=spec.lora_scale,
                         scheduler=spec.scheduler)
    image = generate(pipe, [args.prompt], steps=steps, guidance=guidance,
                     resolution=args.resolution, seed=args.seed,
                     negative_prompt=args.negative_prompt)[0]
    save_image(image, args.out)
    print(f"wrote {args.out} ({image.size[0]}x{image.size[1]}, UNet: {pipe.mixdq_execution})")
    return 0
