"""The multiple-choice knapsack against exhaustive enumeration."""

import itertools
import math
import random

import pytest

from quant.bitalloc.solver import InfeasibleBudget, solve_mckp


def brute_force(losses, costs, capacity):
    best = None
    for picks in itertools.product(*(range(len(r)) for r in losses)):
        cost = sum(c[k] for c, k in zip(costs, picks))
        if cost <= capacity:
            loss = math.fsum(row[k] for row, k in zip(losses, picks))
            best = loss if best is None else min(best, loss)
    return best


@pytest.mark.parametrize("seed", range(12))
def test_optimal_against_brute_force(seed):
    rng = random.Random(seed)
    n = rng.randint(3, 7)
    bits = [2, 4, 8]
    sizes = [rng.choice([3, 64, 320, 1000, 4096]) * rng.randint(1, 9) for _ in range(n)]
    losses = [[rng.uniform(0, 1) * 10 ** rng.uniform(-4, 1) for _ in bits] for _ in range(n)]
    costs = [[s * b for b in bits] for s in sizes]
    lo, hi = sum(min(c) for c in costs), sum(max(c) for c in costs)
    for capacity in (lo, hi, lo + (hi - lo) // 3, lo + 2 * (hi - lo) // 3 + 1):
        sol = solve_mckp(losses, costs, capacity)
        assert sol.status == "Optimal"
        assert sol.cost <= capacity
        assert sol.cost == sum(c[k] for c, k in zip(costs, sol.picks))
        assert sol.loss == pytest.approx(brute_force(losses, costs, capacity), rel=1e-9,
                                         abs=1e-12)


def test_budget_is_inclusive_and_exact():
    # Only the exact-capacity choice is optimal: one unit less forces the worse option.
    losses = [[1.0, 0.0], [1.0, 0.0]]
    costs = [[2, 4], [3, 6]]
    assert solve_mckp(losses, costs, 10).picks == [1, 1]
    sol = solve_mckp(losses, costs, 9)
    assert sol.cost <= 9 and sol.loss == 1.0


def test_huge_costs_stay_within_capacity():
    # SDXL-scale costs (~1e10) where a float tolerance of one part in 1e8 would let an excess
    # through: the capacity is one unit below the cost of the best choice.
    rng = random.Random(3)
    sizes = [rng.randint(10**7, 10**8) for _ in range(40)]
    costs = [[s * 4, s * 8] for s in sizes]
    losses = [[1.0 + rng.random(), rng.random()] for _ in sizes]
    capacity = sum(s * 8 for s in sizes) - 1
    sol = solve_mckp(losses, costs, capacity)
    assert sol.cost <= capacity
    assert sol.picks.count(0) == 1  # one layer had to give up its 8 bits
    cheapest = min(range(len(sizes)), key=lambda i: losses[i][0] - losses[i][1])
    assert sol.picks[cheapest] == 0


def test_infeasible_and_trivial():
    with pytest.raises(InfeasibleBudget) as exc:
        solve_mckp([[0.0, 1.0]], [[8, 4]], 3)
    assert exc.value.min_cost == 4
    sol = solve_mckp([[0.5], [0.25]], [[4], [8]], 12)
    assert sol.status == "Trivial" and sol.loss == 0.75 and sol.cost == 12
