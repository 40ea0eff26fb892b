"""`mixdq allocate`: sensitivity table + budgets -> bit map (or, with --sweep, the Pareto front)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import MixDQError


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
    return p


def run(args) -> int:
    from ..bitalloc import (SensitivityTable, allocate, cost_range, read_protect_list, sweep,
                            write_front)

    config = _config(args)
    out = Path(args.out)
    if args.sweep and out.suffix.lower() != ".csv":
        raise MixDQError(f"--out {out}: with --sweep, give a .csv file name")
    if not args.sweep:
        if out.suffix.lower() not in (".json", ".yaml", ".yml"):
            raise MixDQError(f"--out {out}: use a .json or .yaml file name for the bit map")
        weight, act = _budgets(args)
    table = SensitivityTable.read(args.sensitivity)
    protected = read_protect_list(args.protect, table.layers) if args.protect else []

    if args.sweep:
        fronts = {t: sweep(table, t, config, protected, args.points) for t in table.targets}
        png = write_front(out, fronts)
        for target, results in fronts.items():
            lo, hi = results[0], results[-1]
            print(f"{target}: {len(results)} budgets, {lo.avg_bits:.3f} -> {hi.avg_bits:.3f} "
                  f"average bits, predicted SQNR {lo.prediction.sqnr_db:.2f} -> "
                  f"{hi.prediction.sqnr_db:.2f} dB, "
                  f"{sum(r.solve_s for r in results):.2f} s in the solver")
        print(f"wrote {out} and {png}")
        return 0

    result = allocate(table, weight, act, config, protected)
    for target, r in (("weight", result.weight), ("act", result.act)):
        if r is None:
            flag = "--weight-bits/--weight-mb" if target == "weight" else "--act-bits"
            print(f"{target}: not allocated (no {flag}): every {target} stays floating point")
            continue
        print(r.summary())
        widest = cost_range(table, r.target, config, protected)[1]
        if r.budget.capacity(r.total_size) > widest:
            print(f"note: the {r.target} budget {r.budget} is above the widest allocation "
                  f"({widest / r.total_size:.4f} average bits): every layer has its most bits")
    result.bit_map.save(out)
    print(f"wrote {out} ({len(result.bit_map)} layers, {len(protected)} activations kept in "
          f"floating point)")
    return 0


def _config(args):
    """The config file, if any, with the command-line settings on top."""
    from ..bitalloc import AllocConfig

    config = AllocConfig.load(args.config) if args.config else AllocConfig()
    overrides = {k: v for k, v in (("mode", args.mode), ("content_metric", args.content_metric),
                                   ("normalize", args.normalize),
                                   ("content_weight", args.content_weight)) if v is not None}
    for field, given in (("weight_candidates", args.weight_candidates),
                         ("act_candidates", args.act_candidates)):
        if given is not None:
            overrides[field] = dict(getattr(config, field), **_candidates(given, field))
    if overrides:
        config = AllocConfig.from_dict(dict(config.to_dict(), **overrides))
    return config


def _budgets(args):
    from ..bitalloc import Budget

    if args.weight_bits is None and args.weight_mb is None and args.act_bits is None:
        raise MixDQError("give a budget: --weight-bits W (or --weight-mb MB) and/or --act-bits A")
    weight = (Budget.bits(args.weight_bits) if args.weight_bits is not None
              else Budget.megabytes(args.weight_mb) if args.weight_mb is not None else None)
    act = Budget.bits(args.act_bits) if args.act_bits is not None else None
    return weight, act


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
