"""`mixdq generate`: one image from a prompt, full precision or quantized."""

from __future__ import annotations

from pathlib import Path

from ..errors import MixDQError
from .common import add_model_args, model_spec, positive_int


def register(sub):
    p = sub.add_parser("generate", help="generate an image from a prompt")
    add_model_args(p)
    p.add_argument("--prompt", required=True)
    p.add_argument("--steps", type=positive_int, default=None,
                   help="denoising steps (default: the model's usual)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale (default: the model's usual)")
    p.add_argument("--negative-prompt", default="",
                   help="unconditional prompt when --guidance > 1 (default empty)")
    p.add_argument("--resolution", type=positive_int, default=None,
                   help="image side in pixels (default: the model's native size)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", required=True, help="output image file (.png)")
    return p


def run(args) -> int:
    from ..generate import generate
    from ..utils.io import save_image

    if Path(args.out).suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise MixDQError(f"--out {args.out}: use a .png, .jpg or .webp file name")
    spec = model_spec(args)
    steps, guidance = args.steps, args.guidance
    if steps is None or guidance is None:
        usual = spec.usual_settings()
        steps = usual[0] if steps is None else steps
        guidance = usual[1] if guidance is None else guidance
    pipe = spec.load()
    image = generate(pipe, [args.prompt], steps=steps, guidance=guidance,
                     resolution=args.resolution, seed=args.seed,
                     negative_prompt=args.negative_prompt)[0]
    save_image(image, args.out)
    print(f"wrote {args.out} ({image.size[0]}x{image.size[1]})")
    return 0
