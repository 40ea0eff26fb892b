"""Bit allocation: sensitivity table + budgets -> bit map, by integer programming.

Weights and activations are two independent programs: they have different budgets (memory for
weights, compute/traffic for activations) and the sensitivity of each side was measured with the
other in full precision. Each program covers both layer groups.

Budgets are **inclusive**: the size-weighted average bits (or megabytes) of the result is at most
the target, checked in exact integer arithmetic, and the achieved value is reported as it is.

- average bits: ``sum(size * bits) / sum(size)`` over every layer in the table; for activations a
  protected layer counts as 16 bits (it stays fp16) and cannot be changed.
- megabytes: ``sum(size * bits) / 8 / 1e6`` - the integer weights only (decimal MB; per-channel
  scales and biases are not counted: they are the same for every allocation).
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from typing import Callable, Iterable, Mapping

from ..bitmap import BitMap, LayerBits
from ..errors import MixDQError
from .config import PROTECTED_ACT_BITS, AllocConfig
from .objective import Objective, Prediction
from .solver import Solution, solve_mckp
from .table import SensitivityTable

#: ``score(target, bits) -> loss``: picks among the split mode's candidates (lower is better).
ScoreFn = Callable[[str, Mapping[str, "int | None"]], float]


@dataclasses.dataclass(frozen=True)
class Budget:
    """A budget for one target: ``value`` average bits (``unit='bits'``) or megabytes (``'mb'``)."""

    value: Fraction
    unit: str = "bits"

    def __post_init__(self):
        if self.unit not in ("bits", "mb"):
            raise MixDQError(f"budget unit must be bits or mb, got {self.unit!r}")
        if self.value <= 0:
            raise MixDQError(f"budget must be positive, got {float(self.value):g} {self.unit}")

    @classmethod
    def bits(cls, value: str | float | int) -> "Budget":
        """An average bit width, e.g. ``Budget.bits("4.0")``; decimals are taken exactly."""
        return cls(_fraction(value, "average bits"), "bits")

    @classmethod
    def megabytes(cls, value: str | float | int) -> "Budget":
        """A size in decimal megabytes (``sum(size * bits) / 8e6``)."""
        return cls(_fraction(value, "megabytes"), "mb")

    def capacity(self, total_size: int) -> int:
        """The largest allowed ``sum(size * bits)``."""
        limit = self.value * total_size if self.unit == "bits" else self.value * 8_000_000
        return math.floor(limit)

    def __str__(self) -> str:
        unit = "average bits" if self.unit == "bits" else "MB"
        return f"{float(self.value):g} {unit}"


@dataclasses.dataclass
class ProgramResult:
    """The allocation of one target (weight or act) and what it achieves.

    Attributes:
        target: ``weight`` or ``act``.
        mode: ``joint`` or ``split``.
        budget: what was asked for.
        bits: every layer's width (``None`` for a protected activation).
        cost: ``sum(size * bits)``, protected activations at 16 bits.
        total_size: ``sum(size)``.
        group_bits: average bits of each group's free layers.
        prediction: predicted loss / SQNR / SSIM (:class:`~quant.bitalloc.objective.Prediction`).
        status: the solver's status (``Optimal`` = proven optimal).
        solve_s: seconds spent in the solver.
        split_ratio: the chosen share of the content group (split mode).
        solves: number of solver runs (split mode: two per distinct budget share).
    """

    target: str
    mode: str
    budget: Budget
    bits: dict[str, int | None]
    cost: int
    total_size: int
    group_bits: dict[str, float]
    prediction: Prediction
    status: str
    solve_s: float
    split_ratio: float | None = None
    solves: int = 1

    @property
    def avg_bits(self) -> float:
        return self.cost / self.total_size

    @property
    def mb(self) -> float:
        """Megabytes of the integer values: weight MB, or activation MB per sample for act."""
        return self.cost / 8e6

    def summary(self) -> str:
        """One line: budget, achieved bits and MB, predictions, solver status and time."""
        p = self.prediction
        what = "weight MB" if self.target == "weight" else "act MB/sample"
        ssim = "" if p.ssim is None else f", SSIM {p.ssim:.4f}"
        groups = " / ".join(f"{g} {b:.3f}" for g, b in self.group_bits.items())
        split = "" if self.split_ratio is None else f", content share {self.split_ratio:g}"
        return (f"{self.target}: budget {self.budget} -> {self.avg_bits:.6f} average bits, "
                f"{self.mb:.4f} {what} ({groups} bits); predicted SQNR {p.sqnr_db:.2f} dB"
                f"{ssim}, loss {p.loss:.5f}; {self.mode}{split}, {self.status} in "
                f"{self.solve_s:.2f} s" + (f" ({self.solves} solves)" if self.solves > 1 else ""))


@dataclasses.dataclass
class Allocation:
    """Both programs and the bit map they make; a side not allocated is ``None`` (float)."""

    bit_map: BitMap
    weight: ProgramResult | None
    act: ProgramResult | None


def cost_range(table: SensitivityTable, target: str, config: AllocConfig,
               protected: Iterable[str] = ()) -> tuple[int, int, int]:
    """``(min_cost, max_cost, total_size)``: the range of ``sum(size * bits)`` for ``target``."""
    obj = Objective(table, target, config, protected)
    fixed = _fixed_cost(table, obj)
    sizes = {n: table.get(n, target).size for n in obj.layers}
    lo = fixed + sum(sizes[n] * obj.options[n][0] for n in obj.layers)
    hi = fixed + sum(sizes[n] * obj.options[n][-1] for n in obj.layers)
    return lo, hi, sum(table.get(n, target).size for n in table.layers)


def allocate_target(table: SensitivityTable, target: str, budget: Budget,
                    config: AllocConfig | None = None, protected: Iterable[str] = (),
                    score: ScoreFn | None = None) -> ProgramResult:
    """Allocate the bits of one target within ``budget``.

    Args:
        table: the sensitivity table.
        target: ``weight`` or ``act``.
        budget: average bits or megabytes; inclusive.
        config: candidates, mode, metric and normalisation (default :class:`AllocConfig`).
        protected: activation layers kept in floating point (ignored for weights).
        score: split mode only: ``score(target, bits)`` rates each candidate allocation, lower
            is better (for example the pixel MSE of images made with it); default: the joint
            program's predicted loss.

    Returns:
        The :class:`ProgramResult`.

    Raises:
        MixDQError: a table lacking a candidate width, or a budget below the smallest
            allocation (the message states the smallest and the largest).
    """
    if target not in ("weight", "act"):
        raise MixDQError(f"target must be weight or act, got {target!r}")
    config = config or AllocConfig()
    protected = list(protected)
    table.check_candidates(target, config.candidates(target), config.content_metric)
    obj = Objective(table, target, config, protected)
    lo, hi, total = cost_range(table, target, config, protected)
    capacity = budget.capacity(total)
    # A budget above the widest allocation is met by it (the budget is an upper bound); the
    # achieved value in the result shows what it came to.
    if capacity < lo:
        raise MixDQError(_infeasible(target, budget, lo, hi, total))
    fixed = _fixed_cost(table, obj)
    if capacity >= hi:
        # Every layer can have its most bits: give them, rather than let the program trade bits
        # for loss differences that are measurement noise (more bits are never really worse).
        bits = {n: obj.options[n][-1] for n in obj.layers}
        status, seconds, ratio, solves = "Optimal", 0.0, None, 0
    elif config.mode == "joint":
        sol = _solve(table, obj, obj.layers, obj.loss, capacity - fixed, target)
        bits, status, seconds, ratio = _bits(obj, obj.layers, sol), sol.status, sol.solve_s, None
        solves = 1
    else:
        bits, status, seconds, ratio, solves = _split(table, obj, capacity - fixed, score)
    bits.update({n: None for n in obj.protected})
    cost = fixed + sum(table.get(n, target).size * bits[n] for n in obj.layers)
    assert cost <= capacity, "solver returned an allocation over the budget"
    return ProgramResult(target, config.mode, budget, {n: bits[n] for n in table.layers}, cost,
                         total, _group_bits(table, obj, bits), obj.predict(bits), status,
                         seconds, ratio, solves)


def allocate(table: SensitivityTable, weight_budget: Budget | None, act_budget: Budget | None,
             config: AllocConfig | None = None, protected: Iterable[str] = (),
             score: ScoreFn | None = None) -> Allocation:
    """Allocate weights and activations and build the bit map (every layer of the table).

    Args:
        table, config, protected, score: as for :func:`allocate_target`.
        weight_budget: the weights' budget (average bits or MB); ``None`` leaves every weight in
            floating point (an activation-only map).
        act_budget: the activations' budget (average bits; protected layers count as 16);
            ``None`` leaves every activation in floating point (a weight-only map, W4A16 style).

    Returns:
        An :class:`Allocation`; ``bit_map`` has ``a=None`` for protected layers.

    Raises:
        MixDQError: as :func:`allocate_target`, or no budget at all.
    """
    if weight_budget is None and act_budget is None:
        raise MixDQError("give a weight budget, an activation budget, or both")
    config = config or AllocConfig()
    protected = list(protected)
    w = a = None
    if weight_budget is not None:
        w = allocate_target(table, "weight", weight_budget, config, protected, score)
    if act_budget is not None:
        a = allocate_target(table, "act", act_budget, config, protected, score)
    bit_map = BitMap({n: LayerBits(w.bits[n] if w else None, a.bits[n] if a else None)
                      for n in table.layers})
    return Allocation(bit_map, w, a)


def _solve(table, obj: Objective, layers: list[str], loss_fn, capacity: int,
           name: str) -> Solution:
    losses = [[loss_fn(n, b) for b in obj.options[n]] for n in layers]
    costs = [[table.get(n, obj.target).size * b for b in obj.options[n]] for n in layers]
    if not layers:
        return Solution([], 0.0, 0, "Trivial", 0.0)
    return solve_mckp(losses, costs, capacity, name=f"mixdq_{name}")


def _bits(obj: Objective, layers: list[str], sol: Solution) -> dict[str, int | None]:
    return {n: obj.options[n][k] for n, k in zip(layers, sol.picks)}


def _split(table, obj: Objective, capacity: int, score: ScoreFn | None):
    """The original's scheme: each group maximises its own metric within its share."""
    groups = {g: [n for n in obj.layers if table.group(n) == g] for g in ("content", "quality")}
    size = {n: table.get(n, obj.target).size for n in obj.layers}
    lo = {g: sum(size[n] * obj.options[n][0] for n in ls) for g, ls in groups.items()}
    hi = {g: sum(size[n] * obj.options[n][-1] for n in ls) for g, ls in groups.items()}
    slack = capacity - lo["content"] - lo["quality"]
    regret = {n: max(obj.value(n, b) for b in obj.options[n]) for n in obj.layers}
    solved: dict[tuple[str, int], Solution] = {}
    seconds, best = 0.0, None
    for ratio in obj.config.split_ratios:
        cap_c = min(lo["content"] + math.floor(ratio * slack), hi["content"])
        cap_q = min(capacity - cap_c, hi["quality"])
        cap_c = min(capacity - cap_q, hi["content"])
        bits: dict[str, int | None] = {}
        statuses = []
        for g, cap in (("content", cap_c), ("quality", cap_q)):
            if (g, cap) not in solved:
                solved[g, cap] = _solve(table, obj, groups[g],
                                        lambda n, b: regret[n] - obj.value(n, b), cap,
                                        f"{obj.target}_{g}")
                seconds += solved[g, cap].solve_s
            bits.update(_bits(obj, groups[g], solved[g, cap]))
            statuses.append(solved[g, cap].status)
        full = dict(bits, **{n: None for n in obj.protected})
        value = score(obj.target, full) if score is not None else obj.predict(bits).loss
        if best is None or value < best[0]:
            status = "Optimal" if all(s in ("Optimal", "Trivial") for s in statuses) else \
                "; ".join(statuses)
            best = (value, bits, status, ratio)
    return best[1], best[2], seconds, best[3], len(solved)


def _fixed_cost(table: SensitivityTable, obj: Objective) -> int:
    return sum(table.get(n, obj.target).size * PROTECTED_ACT_BITS for n in obj.protected)


def _group_bits(table, obj: Objective, bits) -> dict[str, float]:
    out = {}
    for g in ("content", "quality"):
        names = [n for n in obj.layers if table.group(n) == g]
        total = sum(table.get(n, obj.target).size for n in names)
        if total:
            out[g] = sum(table.get(n, obj.target).size * bits[n] for n in names) / total
    return out


def _infeasible(target: str, budget: Budget, lo: int, hi: int, total: int) -> str:
    # Round the smallest value up so that a value copied from the message is feasible.
    def down(x: Fraction) -> str:
        return f"{math.floor(x * 10000) / 10000:.4f}"

    def up(x: Fraction) -> str:
        return f"{math.ceil(x * 10000) / 10000:.4f}"

    bits = f"{up(Fraction(lo, total))} to {down(Fraction(hi, total))} average bits"
    mb = f"{up(Fraction(lo, 8_000_000))} to {down(Fraction(hi, 8_000_000))} MB"
    return (f"{target} budget {budget} cannot be met: allocations range from {bits} ({mb}, "
            f"fewest to most candidate bits)")


def _fraction(value: str | float | int, what: str) -> Fraction:
    try:
        frac = Fraction(str(value).strip())
    except (ValueError, ZeroDivisionError):
        raise MixDQError(f"budget {value!r} is not a number of {what}") from None
    return frac
