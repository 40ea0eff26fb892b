"""Arguments and helpers shared by several subcommands."""

from __future__ import annotations

import argparse

from ..errors import MixDQError


def add_model_args(p: argparse.ArgumentParser) -> None:
    """``--model``, ``--device``, ``--dtype``: the same meaning for every stage."""
    p.add_argument("--model", default="stabilityai/sdxl-turbo",
                   help="Hugging Face Hub id, local diffusers folder (its model_index.json "
                   "names the pipeline: SDXL, SD 1.5/2.1 or another UNet pipeline), or a built-in "
                   "model: 'tiny' (SDXL-Turbo shaped), 'tiny-sd15' (SD 1.5 + LCM, 4 steps), "
                   "'tiny-sd21' (SD-Turbo shaped), 'tiny-sdxl' (SDXL multi-step/guided), "
                   "'proxy' (trained)")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda if present)")
    p.add_argument("--dtype", default=None,
                   help="fp16 / bf16 / fp32 (default: fp16 on CUDA; always fp32 on CPU)")
    p.add_argument("--lora", default=None,
                   help="LoRA to fuse into the model first (file, folder or Hub id; needs peft)")
    p.add_argument("--lora-scale", type=float, default=1.0,
                   help="strength of the fused LoRA (default 1.0)")
    p.add_argument("--scheduler", default=None, metavar="CLASS",
                   help="diffusers scheduler class replacing the model's, e.g. LCMScheduler "
                   "(default: the model's, or the one its LoRA needs)")


def add_method_args(p: argparse.ArgumentParser) -> None:
    """``--method`` and ``--switch``: the same meaning for every stage (see docs/METHODS.md)."""
    from ..methods import DEFAULT_METHOD, METHODS, SWITCHES

    p.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD,
                   help="paper: the original MixDQ's choices (default); plus: paper with the "
                   "switches measured to help; settings given explicitly override the method")
    p.add_argument("--switch", action="append", dest="switches", default=[], metavar="NAME",
                   choices=tuple(SWITCHES),
                   help=f"a named deviation from paper on top of --method (repeatable): "
                   f"{', '.join(SWITCHES)}")


def add_dtype_arg(p: argparse.ArgumentParser) -> None:
    """``--compute-dtype`` of the full-precision stages (calibrate, sensitivity)."""
    p.add_argument("--compute-dtype", choices=("float32", "float16"), default=None,
                   help="the pipeline's dtype when --dtype is not given (default: the method's, "
                   "float32 for paper, also on CUDA)")


def add_coco_order_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--coco-order", choices=("annotations", "images"), default=None,
                   help="COCO caption JSON: first caption per image, images in order of first "
                   "appearance in 'annotations' (the method's default) or of the 'images' list")


def add_generation_args(p) -> None:
    """``--steps``, ``--guidance``, ``--negative-prompt``, ``--resolution``: how every stage
    that generates does it."""
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


def add_prompt_args(p: argparse.ArgumentParser, num_prompts_help: str, **num_prompts) -> None:
    """The prompt-file options every stage that reads prompts shares."""
    # a plain int: the stage's options refuse 0 in one line naming the setting
    p.add_argument("--num-prompts", type=int, help=num_prompts_help, **num_prompts)
    p.add_argument("--column", default="text",
                   help="text column of a CSV/TSV file or a dataset (default text)")
    p.add_argument("--split", default=None, help="dataset split (default train)")
    p.add_argument("--shuffle", action="store_true",
                   help="take a seeded random sample instead of the first N prompts (files "
                   "whose first rows are unusual, e.g. PartiPrompts' single words)")
    p.add_argument("--shuffle-seed", type=int, default=0, help="seed of --shuffle (default 0)")


EXECUTIONS = ("auto", "kernels", "simulate")


def add_execution_arg(p: argparse.ArgumentParser) -> None:
    """``--execution``: how a quantized UNet runs (as ``quant.load_pipeline(execution=...)``)."""
    p.add_argument("--execution", choices=EXECUTIONS, default="auto",
                   type=lambda text: "simulate" if text == "simulation" else text,
                   help="run quantized UNets on the integer kernels ('kernels': an error where "
                   "they are unavailable), in simulation (same numbers, float arithmetic), or "
                   "'auto': the kernels when available (default auto)")


def model_spec(args):
    """The :class:`~quant.models.ModelSpec` the model arguments of a subcommand describe."""
    from ..models.spec import ModelSpec

    return ModelSpec(args.model, args.device, args.dtype, args.lora, args.lora_scale,
                     args.scheduler)


def load_model(args, **kwargs):
    """The full-precision pipeline the model arguments of a subcommand describe."""
    return model_spec(args).load(**kwargs)


def stage_options(cls, args, **extra):
    """The stage options ``cls`` (``quant.stages``) filled from the parsed arguments."""
    import dataclasses

    names = [f.name for f in dataclasses.fields(cls)]
    data = {name: getattr(args, name) for name in names if hasattr(args, name)}
    return cls.from_dict({**data, **extra})


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
