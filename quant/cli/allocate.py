"""`mixdq allocate`: sensitivity table + budgets -> bit map (or, with --sweep, the Pareto front)."""

from __future__ import annotations

from ..errors import MixDQError
from .common import stage_options


def register(sub):
    p = sub.add_parser(
        "allocate", help="choose per-layer bits by integer programming",
        description="Choose weight and activation bits per layer to maximise the measured "
        "sensitivity metric within an average-bits (or weight-MB) budget; writes the bit map "
        "that 'mixdq quantize --bit-map' reads.")
    p.add_argument("--sensitivity", required=True, metavar="SENS.csv",
                   help="table written by 'mixdq sensitivity'")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--weight-bits", metavar="W",
                        help="weight budget: average bits, e.g. 4.0 (omitted: weights stay "
                        "floating point)")
    budget.add_argument("--weight-mb", metavar="MB",
                        help="weight budget: megabytes of integer weights (sum params*bits/8e6)")
    p.add_argument("--act-bits", metavar="A",
                   help="activation budget: average bits, protected layers counting as 16 "
                   "(omitted: activations stay floating point)")
    p.add_argument("--protect", metavar="FILE",
                   help="activation layers to keep in floating point, one name per line")
    p.add_argument("--out", required=True,
                   help="bit map (.json/.yaml); with --sweep the front's .csv (plot beside it)")
    p.add_argument("--config", metavar="FILE", help="allocation settings (YAML/JSON AllocConfig)")
    p.add_argument("--mode", choices=["joint", "split"], default=None,
                   help="joint: one program over both groups with normalised losses (default); "
                   "split: the original's per-group programs and budget-ratio grid")
    p.add_argument("--content-metric", choices=["ssim", "sqnr"], default=None,
                   help="metric of the content group (default ssim)")
    p.add_argument("--normalize", choices=["group", "none"], default=None,
                   help="joint mode: per-group loss normalisation (default group)")
    p.add_argument("--content-weight", type=float, default=None, metavar="X",
                   help="joint mode: weight of the content group's loss (default 1)")
    p.add_argument("--weight-candidates", nargs="+", metavar="GROUP=BITS", default=None,
                   help="e.g. content=2,4,8 quality=4,8 (the default)")
    p.add_argument("--act-candidates", nargs="+", metavar="GROUP=BITS", default=None,
                   help="e.g. content=4,8 quality=4,8 (the default)")
    p.add_argument("--sweep", action="store_true",
                   help="instead of one bit map, sweep each target's budget over its feasible "
                   "range and write the Pareto front (CSV + PNG)")
    p.add_argument("--points", type=int, default=17, metavar="N",
                   help="budgets per target in --sweep (default 17)")
    p.add_argument("--model", default=None,
                   help="the model the table was measured on (Hub id, folder, 'tiny'): the "
                   "table must then have every quantizable layer of its UNet (read from its "
                   "configuration; no weights are loaded)")
    return p


def run(args) -> int:
    from ..stages import AllocateOptions, ModelSpec, allocate

    candidates = {key: _candidates(getattr(args, key), key)
                  for key in ("weight_candidates", "act_candidates")
                  if getattr(args, key) is not None}
    budgets = {key: _number(getattr(args, key), what)
               for key, what in (("weight_bits", "average bits"), ("weight_mb", "megabytes"),
                                 ("act_bits", "average bits"))
               if getattr(args, key) is not None}
    allocate(stage_options(AllocateOptions, args, **candidates, **budgets), args.sensitivity,
             args.out, model=ModelSpec(args.model) if args.model else None)
    return 0


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise MixDQError(f"budget {text!r} is not a number of {what}") from None


def _candidates(items: list[str], field: str) -> dict[str, list[int]]:
    out = {}
    for item in items:
        group, sep, bits = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[group.strip()] = [int(b) for b in bits.split(",") if b.strip()]
        except ValueError:
            raise MixDQError(f"--{field.replace('_', '-')}: expected GROUP=BITS like "
                             f"content=2,4,8, got {item!r}") from None
    unknown = sorted(set(out) - {"content", "quality"})
    if unknown:
        raise MixDQError(f"--{field.replace('_', '-')}: unknown group {unknown[0]!r} "
                         f"(use content or quality)")
    return out
