"""The integer program: choose one option per layer, minimise the summed loss, within a budget.

This is a multiple-choice knapsack: binary ``x[i, k]`` (layer ``i`` takes its option ``k``),
``sum_k x[i, k] = 1`` per layer, ``sum x[i, k] * cost[i][k] <= capacity``, minimise
``sum x[i, k] * loss[i][k]``. It is solved by CBC through pulp, to proven optimality.

Costs are integers (``size * bits``) so that the budget can be checked exactly. CBC works in
floating point with a feasibility tolerance, and with costs around 1e10 (SDXL weights) a solution
one unit over the capacity could pass its test; so the capacity row is divided by the costs'
greatest common divisor, the chosen options are checked in exact integer arithmetic afterwards,
and in the (never yet observed) case of an excess the program is solved again with the capacity
lowered by that excess. The result states when that happened.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Sequence

from ..errors import MixDQError


@dataclasses.dataclass
class Solution:
    """The optimum of one program.

    Attributes:
        picks: per layer, the index of the chosen option.
        loss: the summed loss of the chosen options (computed exactly, not CBC's value).
        cost: the summed cost of the chosen options (an exact integer, ``<= capacity``).
        status: ``Optimal`` (proven by CBC), ``Trivial`` (nothing to choose), or ``Optimal
            (capacity lowered by N)`` after an exact-feasibility repair.
        solve_s: wall time of the solver calls, seconds.
    """

    picks: list[int]
    loss: float
    cost: int
    status: str
    solve_s: float


class InfeasibleBudget(ValueError):
    """No choice of options fits the capacity; ``min_cost`` is the smallest achievable cost."""

    def __init__(self, min_cost: int, capacity: int):
        super().__init__(f"capacity {capacity} is below the smallest achievable cost {min_cost}")
        self.min_cost = min_cost
        self.capacity = capacity


def solve_mckp(losses: Sequence[Sequence[float]], costs: Sequence[Sequence[int]],
               capacity: int, name: str = "mixdq") -> Solution:
    """Minimise the summed loss, one option per layer, with the summed cost within ``capacity``.

    Args:
        losses: ``losses[i][k]``, loss of option ``k`` of layer ``i`` (finite floats).
        costs: ``costs[i][k]``, non-negative integer cost of the same option.
        capacity: the largest allowed summed cost (inclusive).
        name: a name for the pulp problem (shows in solver logs).

    Returns:
        The proven optimum as a :class:`Solution`.

    Raises:
        InfeasibleBudget: when even the cheapest options exceed ``capacity``.
        MixDQError: when CBC cannot run or does not report a proven optimum (it always should
            for a feasible program of this kind).
    """
    if len(losses) != len(costs) or any(len(a) != len(b) or not a
                                        for a, b in zip(losses, costs)):
        raise ValueError("losses and costs must have the same, non-empty, option lists")
    min_cost = sum(min(c) for c in costs)
    if min_cost > capacity:
        raise InfeasibleBudget(min_cost, capacity)
    start = time.perf_counter()
    if all(len(c) == 1 for c in costs):
        picks = [0] * len(costs)
        return _solution(picks, losses, costs, "Trivial", time.perf_counter() - start)
    lowered = 0
    for _ in range(3):
        picks = _cbc(losses, costs, capacity - lowered, name)
        cost = sum(c[k] for c, k in zip(costs, picks))
        if cost <= capacity:
            status = "Optimal" if not lowered else f"Optimal (capacity lowered by {lowered})"
            picks = _prefer_costlier_ties(picks, losses, costs, capacity)
            return _solution(picks, losses, costs, status, time.perf_counter() - start)
        lowered += cost - (capacity - lowered)  # CBC's excess over the row it was given
    raise MixDQError(f"{name}: CBC's solutions stay over the capacity {capacity}")


def _prefer_costlier_ties(picks, losses, costs, capacity: int) -> list[int]:
    """Break ties toward more bits: move a layer to a costlier option whose loss is not larger
    (exactly; the optimum's loss is unchanged) while the budget allows, largest gain in cost
    first, layers in order."""
    picks = list(picks)
    spare = capacity - sum(c[k] for c, k in zip(costs, picks))
    for i, (row_l, row_c) in enumerate(zip(losses, costs)):
        k = picks[i]
        better = [j for j in range(len(row_c)) if row_c[j] > row_c[k] and row_l[j] <= row_l[k]
                  and row_c[j] - row_c[k] <= spare]
        if better:
            j = max(better, key=lambda j: (row_c[j], -j))
            spare -= row_c[j] - row_c[k]
            picks[i] = j
    return picks


def _solution(picks, losses, costs, status, seconds) -> Solution:
    loss = math.fsum(row[k] for row, k in zip(losses, picks))
    cost = sum(c[k] for c, k in zip(costs, picks))
    return Solution(picks, loss, cost, status, seconds)


def _cbc(losses, costs, capacity: int, name: str) -> list[int]:
    import pulp

    # Shift each layer's losses so that its best option costs 0: the same optimum, and CBC sees
    # small non-negative coefficients instead of large ones with tiny differences.
    shifted = [[v - min(row) for v in row] for row in losses]
    # CBC ignores improvements below its absolute tolerances (~1e-5 on the objective; with raw
    # normalised losses it missed a choice 1e-7 better), and losses of quiet layers differ by that
    # little: scale the largest coefficient to 1e6 so that every difference that matters in
    # double precision is far above those tolerances.
    top = max((v for row in shifted for v in row), default=0.0)
    scale = 1e6 / top if top > 0 else 1.0
    g = 0
    for row in costs:
        for c in row:
            g = math.gcd(g, int(c))
    g = g or 1
    prob = pulp.LpProblem(name, pulp.LpMinimize)
    x = [[pulp.LpVariable(f"x_{i}_{k}", cat="Binary") for k in range(len(row))]
         for i, row in enumerate(costs)]
    prob += pulp.lpSum(v * scale * var for row, xs in zip(shifted, x)
                       for v, var in zip(row, xs) if v)
    for i, xs in enumerate(x):
        prob += pulp.lpSum(xs) == 1, f"one_{i}"
    prob += (pulp.lpSum((c // g) * var for row, xs in zip(costs, x) for c, var in zip(row, xs)
                        if c) <= capacity // g, "budget")
    try:
        prob.solve(pulp.PULP_CBC_CMD(msg=False, gapRel=0.0, gapAbs=0.0))
    except pulp.PulpSolverError as e:
        raise MixDQError(f"the CBC solver bundled with pulp could not run "
                         f"({str(e).splitlines()[0]}); reinstall pulp") from None
    if prob.status != pulp.LpStatusOptimal or prob.sol_status != pulp.LpSolutionOptimal:
        raise MixDQError(f"{name}: CBC ended with status {pulp.LpStatus[prob.status]} "
                         f"({pulp.LpSolution[prob.sol_status]}), not a proven optimum")
    return [max(range(len(xs)), key=lambda k: xs[k].varValue or 0.0) for xs in x]
