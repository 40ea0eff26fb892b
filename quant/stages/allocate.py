"""The allocate stage: sensitivity table + budgets -> bit map (or the Pareto front)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from ..bitalloc import (AllocConfig, Budget, SensitivityTable, cost_range, read_protect_list,
                        sweep, write_front)
from ..bitalloc import allocate as solve
from ..errors import MixDQError
from ..models.spec import ModelSpec
from ..options import Options


@dataclasses.dataclass(frozen=True)
class AllocateOptions(Options):
    """Settings of ``mixdq allocate`` (the keys are its long flags, ``-`` written ``_``).

    ``weight_candidates``/``act_candidates`` map a group to its bits, e.g.
    ``{content: [2, 4, 8]}``; ``config`` is an :class:`quant.bitalloc.AllocConfig` file that the
    other allocation settings override.
    """

    SECTION = "allocate"

    weight_bits: float | None = None
    weight_mb: float | None = None
    act_bits: float | None = None
    protect: str | None = None
    config: str | None = None
    mode: str | None = None
    content_metric: str | None = None
    normalize: str | None = None
    content_weight: float | None = None
    weight_candidates: dict[str, tuple[int, ...]] | None = None
    act_candidates: dict[str, tuple[int, ...]] | None = None
    sweep: bool = False
    points: int = 17

    def check(self):
        if self.weight_bits is not None and self.weight_mb is not None:
            raise self.fail("weight_mb", "give weight_bits or weight_mb, not both")
        if not self.sweep and (self.weight_bits, self.weight_mb, self.act_bits) == (None,) * 3:
            raise MixDQError(f"{self.SECTION}: give a budget: weight_bits (or weight_mb) "
                             f"and/or act_bits")
        for key in ("weight_candidates", "act_candidates"):
            unknown = sorted(set(getattr(self, key) or {}) - {"content", "quality"})
            if unknown:
                raise self.fail(key, f"unknown group {unknown[0]!r} (use content or quality)")
        self.positive("points")
        try:
            self.budgets()
            self.alloc_config()
        except MixDQError as e:
            raise MixDQError(f"{self.SECTION}: {e}") from None

    def budgets(self) -> tuple[Budget | None, Budget | None]:
        weight = (Budget.bits(self.weight_bits) if self.weight_bits is not None
                  else Budget.megabytes(self.weight_mb) if self.weight_mb is not None else None)
        act = Budget.bits(self.act_bits) if self.act_bits is not None else None
        return weight, act

    def alloc_config(self) -> AllocConfig:
        """The config file, if any, with these settings on top."""
        config = AllocConfig.load(self.config) if self.config else AllocConfig()
        overrides = {k: getattr(self, k) for k in ("mode", "content_metric", "normalize",
                                                     "content_weight")
                     if getattr(self, k) is not None}
        for key in ("weight_candidates", "act_candidates"):
            given = getattr(self, key)
            if given is not None:
                overrides[key] = dict(getattr(config, key),
                                      **{g: list(b) for g, b in given.items()})
        if overrides:
            config = AllocConfig.from_dict(dict(config.to_dict(), **overrides))
        return config


def allocate(options: AllocateOptions, sensitivity_csv: str | Path, out: str | Path, *,
             model: ModelSpec | None = None, log: Callable[[str], None] = print):
    """Write the bit map ``out`` (.json/.yaml), or with ``sweep`` the front ``out`` (.csv + .png).

    Args:
        options: budgets and allocation settings.
        sensitivity_csv: the sensitivity stage's table.
        out: the bit map, or with ``sweep`` the front's CSV (its plot beside it).
        model: the model the table was measured on, when known: the table must then have every
            quantizable layer of its UNet (a bit map without one would be refused by quantize).
        log: where progress lines go.

    Returns:
        The :class:`quant.bitalloc.Allocation`, or with ``sweep`` the fronts per target.
    """
    config = options.alloc_config()
    out = Path(out)
    if options.sweep and out.suffix.lower() != ".csv":
        raise MixDQError(f"--out {out}: with --sweep, give a .csv file name")
    if not options.sweep and out.suffix.lower() not in (".json", ".yaml", ".yml"):
        raise MixDQError(f"--out {out}: use a .json or .yaml file name for the bit map")
    _refuse_overwriting_inputs(out, options, sensitivity_csv)
    table = SensitivityTable.read(sensitivity_csv)
    if model is not None:
        table.check_layers(model.unet_layers(), source=f"sensitivity table {sensitivity_csv}")
    protected = read_protect_list(options.protect, table.layers) if options.protect else []

    if options.sweep:
        fronts = {t: sweep(table, t, config, protected, options.points) for t in table.targets}
        png = write_front(out, fronts)
        for target, results in fronts.items():
            lo, hi = results[0], results[-1]
            log(f"{target}: {len(results)} budgets, {lo.avg_bits:.3f} -> {hi.avg_bits:.3f} "
                f"average bits, predicted SQNR {lo.prediction.sqnr_db:.2f} -> "
                f"{hi.prediction.sqnr_db:.2f} dB, "
                f"{sum(r.solve_s for r in results):.2f} s in the solver")
        log(f"wrote {out} and {png}")
        return fronts

    weight, act = options.budgets()
    result = solve(table, weight, act, config, protected)
    for target, r in (("weight", result.weight), ("act", result.act)):
        if r is None:
            flag = "--weight-bits/--weight-mb" if target == "weight" else "--act-bits"
            log(f"{target}: not allocated (no {flag}): every {target} stays floating point")
            continue
        log(r.summary())
        widest = cost_range(table, r.target, config, protected)[1]
        if r.budget.capacity(r.total_size) > widest:
            log(f"note: the {r.target} budget {r.budget} is above the widest allocation "
                f"({widest / r.total_size:.4f} average bits): every layer has its most bits")
    result.bit_map.save(out)
    log(f"wrote {out} ({len(result.bit_map)} layers, {len(protected)} activations kept in "
        f"floating point)")
    return result


def _refuse_overwriting_inputs(out: Path, options: AllocateOptions, sensitivity_csv) -> None:
    """``--out`` (and, with ``sweep``, the plot written beside it) must not be an input file."""
    written = [out] + ([out.with_suffix(".png")] if options.sweep else [])
    inputs = {"--sensitivity": sensitivity_csv, "--protect": options.protect,
              "--config": options.config}
    for flag, given in inputs.items():
        if given is None:
            continue
        for target in written:
            if target.resolve() == Path(given).resolve():
                raise MixDQError(f"--out {out}: would overwrite the {flag} input {given}; "
                                 f"give another file name")
