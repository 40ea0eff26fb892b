"""`mixdq benchmark`: FID, CLIPScore, ImageReward, PSNR/SSIM, UNet latency and memory.

Generates with the full-precision pipeline and every ``--quantized`` folder on the same seeds
(resumable; shard with ``torchrun --nproc-per-node N -m quant benchmark ...``) and writes
``report.json``, ``report.md`` and ``grid.png`` to ``--out``.
"""

from __future__ import annotations

import re

from ..errors import MixDQError
from .common import (add_coco_order_arg, add_execution_arg, add_generation_args, add_method_args,
                     add_model_args, add_prompt_args, model_spec, positive_int, stage_options)


def register(sub):
    p = sub.add_parser("benchmark", help="compare full-precision and quantized pipelines "
                       "(FID, CLIPScore, PSNR/SSIM, latency, memory)",
                       description="Compare the full-precision pipeline with quantized ones. "
                       "With --model proxy and no --quantized/--prompts, run MixDQ's ablation "
                       "on the trained proxy (content accuracy, FID, SQNR, SSIM, weight MB).")
    add_model_args(p)
    p.add_argument("--quantized", action="append", default=[], metavar="[NAME=]QUANT_DIR",
                   help="a folder written by `mixdq quantize` (repeat for several); NAME= sets "
                   "its column name (default: the folder's name)")
    add_execution_arg(p)
    p.add_argument("--prompts", metavar="SOURCE",
                   help="COCO caption .json, .csv/.tsv with a text column (e.g. COCO-30k), "
                        ".txt (one per line), hf:NAME[:SPLIT], or a folder saved with datasets")
    p.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                   help="an inline prompt (repeatable), instead of --prompts")
    add_prompt_args(p, "use N prompts (default: all)", default=None)
    p.add_argument("--real-images", metavar="DIR", help="real images for FID vs real")
    p.add_argument("--out", required=True, metavar="REPORT_DIR")
    g = p.add_argument_group("generation")
    add_generation_args(g)
    g.add_argument("--seed", type=int, default=42, help="seed of prompt 0; prompt i: seed + i")
    g.add_argument("--batch-size", type=positive_int, default=1,
                   help="prompts per pipeline call (default 1)")
    m = p.add_argument_group("metrics")
    m.add_argument("--inception", metavar="PATH",
                   help="local FID Inception weights (torch-fidelity's weights-inception-"
                        "2015-12-05-6726825d.pth), a TorchScript feature extractor, or 'tiny' "
                        "(built-in random stand-in)")
    m.add_argument("--no-fid", action="store_true")
    m.add_argument("--clip", metavar="PATH",
                   help="local folder with a transformers CLIPModel + CLIPProcessor, or 'tiny' "
                        "(built-in random stand-in); default: openai/clip-vit-large-patch14 "
                        "from the HF cache")
    m.add_argument("--no-clip", action="store_true")
    m.add_argument("--no-image-reward", action="store_true")
    m.add_argument("--metric-batch-size", type=positive_int, default=32)
    m.add_argument("--grid-rows", type=positive_int, default=8)
    t = p.add_argument_group("latency")
    t.add_argument("--no-latency", action="store_true")
    t.add_argument("--latency-repeats", type=positive_int, default=10,
                   help="timed UNet calls; the report gives their median, min and max "
                   "(default 10)")
    t.add_argument("--latency-warmup", type=int, default=3,
                   help="untimed UNet calls first (default 3)")
    t.add_argument("--cuda-graphs", action="store_true", help="time CUDA graph replays")
    add_method_args(p)
    add_coco_order_arg(p)
    return p


def _named(item: str) -> tuple[str | None, str]:
    """``NAME=DIR`` -> (NAME, DIR); a plain ``DIR`` (even one containing '=') -> (None, DIR)."""
    from pathlib import Path

    name, sep, path = item.partition("=")
    if sep and name and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) \
            and not Path(item).exists():
        return name, path
    return None, item


def _proxy_ablation(args) -> int:
    """``--model proxy`` without --quantized/--prompts: MixDQ's ablation on the trained proxy."""
    from ..proxy.ablation import AblationConfig, markdown, run_ablation

    if args.switches:
        raise MixDQError("--switch: the proxy ablation takes a method preset (--method), "
                         "not single switches")
    report = run_ablation(args.out, AblationConfig(method=args.method), device=args.device)
    print(markdown(report), end="")
    print(f"wrote {args.out}/ablation.json, ablation.md, ablation_grid.png")
    return 0


def run(args) -> int:
    if args.model == "proxy" and not (args.quantized or args.prompts or args.prompt):
        return _proxy_ablation(args)
    from ..stages import BenchmarkOptions, benchmark

    quantized = [_named(item) for item in args.quantized]
    benchmark(model_spec(args), stage_options(BenchmarkOptions, args), quantized, args.out)
    return 0
