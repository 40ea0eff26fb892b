"""Allocation end to end on small tables: optimality by enumeration, budgets, protect list."""

import itertools
import math

import pytest

from quant.bitalloc import AllocConfig, Budget, Objective, allocate, allocate_target, cost_range
from quant.errors import MixDQError

ALL3 = {"content": (2, 4, 8), "quality": (2, 4, 8)}


def enumerate_bits(obj, layers):
    for combo in itertools.product(*(obj.options[n] for n in layers)):
        yield dict(zip(layers, combo))


def cost(table, target, bits):
    return sum(table.get(n, target).size * b for n, b in bits.items())


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("metric", ["ssim", "sqnr"])
def test_joint_is_optimal_against_brute_force(make_table, seed, metric):
    table = make_table(seed)
    config = AllocConfig(weight_candidates=ALL3, content_metric=metric)
    obj = Objective(table, "weight", config)
    lo, hi, total = cost_range(table, "weight", config)
    for frac in (0.0, 0.2, 0.5, 0.8):
        budget = Budget.bits(f"{(lo + frac * (hi - lo)) / total:.4f}")
        if budget.capacity(total) < lo:
            continue
        result = allocate_target(table, "weight", budget, config)
        best = min(sum(obj.loss(n, b) for n, b in bits.items())
                   for bits in enumerate_bits(obj, table.layers)
                   if cost(table, "weight", bits) <= budget.capacity(total))
        assert result.status == "Optimal"
        assert result.cost <= budget.capacity(total) and result.avg_bits <= budget.value
        assert result.prediction.loss == pytest.approx(best, rel=1e-9, abs=1e-12)


def split_caps(lo, hi, capacity, ratio):
    """The split mode's budget shares, as documented in AllocConfig.split_ratios."""
    slack = capacity - lo["content"] - lo["quality"]
    cap_c = min(lo["content"] + math.floor(ratio * slack), hi["content"])
    cap_q = min(capacity - cap_c, hi["quality"])
    return min(capacity - cap_q, hi["content"]), cap_q


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ratio", [0.0, 0.3, 1.0])
def test_split_groups_are_optimal_against_brute_force(make_table, seed, ratio):
    table = make_table(seed, layers=6)
    config = AllocConfig(act_candidates={"content": (4, 6, 8), "quality": (4, 6, 8)}, mode="split",
                         split_ratios=(ratio,))
    obj = Objective(table, "act", config)
    lo_all, hi_all, total = cost_range(table, "act", config)
    budget = Budget.bits(f"{(lo_all + 0.45 * (hi_all - lo_all)) / total:.3f}")
    result = allocate_target(table, "act", budget, config)
    groups = {g: [n for n in table.layers if table.group(n) == g] for g in ("content", "quality")}
    lo = {g: sum(table.get(n, "act").size * obj.options[n][0] for n in ls)
          for g, ls in groups.items()}
    hi = {g: sum(table.get(n, "act").size * obj.options[n][-1] for n in ls)
          for g, ls in groups.items()}
    caps = dict(zip(("content", "quality"), split_caps(lo, hi, budget.capacity(total), ratio)))
    for g, layers in groups.items():
        best = max(sum(obj.value(n, b) for n, b in bits.items())
                   for bits in enumerate_bits(obj, layers)
                   if cost(table, "act", bits) <= caps[g])
        chosen = {n: result.bits[n] for n in layers}
        assert cost(table, "act", chosen) <= caps[g]
        assert sum(obj.value(n, b) for n, b in chosen.items()) == pytest.approx(best, rel=1e-9)
    assert result.cost <= budget.capacity(total) and result.split_ratio == ratio


def test_split_picks_the_best_scored_ratio(make_table):
    table = make_table(7, layers=8)
    ratios = (0.0, 0.25, 0.5, 0.75, 1.0)
    budget = Budget.bits("5")
    singles = {r: allocate_target(table, "weight", budget, AllocConfig(
        weight_candidates=ALL3, mode="split", split_ratios=(r,))) for r in ratios}
    config = AllocConfig(weight_candidates=ALL3, mode="split", split_ratios=ratios)
    # Default: the joint program's predicted loss.
    default = allocate_target(table, "weight", budget, config)
    assert default.prediction.loss == min(s.prediction.loss for s in singles.values())
    # An injected score (lower is better) decides instead: prefer the most quality bits.
    seen = []

    def score(target, bits):
        seen.append((target, dict(bits)))
        return -sum(table.get(n, target).size * b for n, b in bits.items()
                    if table.group(n) == "quality")

    picked = allocate_target(table, "weight", budget, config, score=score)
    assert len(seen) == len(ratios) and {t for t, _ in seen} == {"weight"}
    assert all(set(bits) == set(table.layers) for _, bits in seen)
    assert picked.bits == singles[picked.split_ratio].bits
    assert picked.group_bits["quality"] == max(s.group_bits["quality"] for s in singles.values())


def test_budget_exact_decimal_and_megabytes():
    assert Budget.bits("1.15").capacity(100) == 115  # float 1.15 * 100 = 114.999...
    assert Budget.bits(1.15).capacity(100) == 115
    assert Budget.megabytes("0.001").capacity(123) == 8000
    for bad in ("abc", "nan", "inf"):
        with pytest.raises(MixDQError, match="is not a number"):
            Budget.bits(bad)
    with pytest.raises(MixDQError, match="must be positive"):
        Budget.bits("0")


def test_weight_mb_budget_and_infeasible_message(make_table):
    table = make_table(2)
    config = AllocConfig()
    lo, hi, total = cost_range(table, "weight", config)
    mb = (lo + hi) / 2 / 8e6
    result = allocate_target(table, "weight", Budget.megabytes(f"{mb:.6f}"), config)
    assert result.mb <= float(f"{mb:.6f}") and result.status == "Optimal"
    with pytest.raises(MixDQError) as exc:
        allocate_target(table, "weight", Budget.bits("2.0"), config)
    msg = str(exc.value)
    lo_bits, hi_bits = lo / total, hi / total
    assert msg.startswith("weight budget 2 average bits cannot be met: allocations range from "
                          f"{math.ceil(lo_bits * 1e4) / 1e4:.4f} to {hi_bits:.4f} average bits")
    assert f"{math.ceil(lo / 8e6 * 1e4) / 1e4:.4f} to" in msg
    # The printed minimum itself is feasible, and any budget above the widest gives the widest.
    floor_budget = msg.split("range from ")[1].split(" ")[0]
    assert allocate_target(table, "weight", Budget.bits(floor_budget), config).cost >= lo
    top = allocate_target(table, "weight", Budget.bits("16"), config)
    assert top.cost == hi and all(b == 8 for b in top.bits.values())


def test_protected_activations_count_as_16_bits(make_table):
    table = make_table(4, layers=6)
    protected = [table.layers[0], table.layers[3]]
    sizes = {n: table.get(n, "act").size for n in table.layers}
    total = sum(sizes.values())
    fixed = 16 * sum(sizes[n] for n in protected)
    free_lo = 4 * sum(sizes[n] for n in table.layers if n not in protected)
    assert cost_range(table, "act", AllocConfig(), protected)[0] == fixed + free_lo
    result = allocate(table, Budget.bits("8"), Budget.bits("8"), AllocConfig(),
                      protected=protected)
    a = result.act
    assert all(a.bits[n] is None for n in protected)
    assert a.cost == fixed + sum(sizes[n] * a.bits[n] for n in table.layers if n not in protected)
    assert a.cost <= 8 * total
    # Paying for the fp16 layers forces some 4-bit activations under an 8-bit average.
    assert 4 in a.bits.values()
    assert all(result.bit_map[n].a is None for n in protected)
    assert {n for n, lb in result.bit_map.layers.items()} == set(table.layers)
    assert all(result.bit_map[n].w == result.weight.bits[n] for n in table.layers)


def test_prediction_adds_noise_powers(make_table):
    table = make_table(5, layers=4)
    config = AllocConfig(weight_candidates=ALL3)
    result = allocate_target(table, "weight", Budget.bits("8"), config)
    noise = sum(10 ** (-table.get(n, "weight").sqnr_db[8] / 10) for n in table.layers)
    assert result.prediction.sqnr_db == pytest.approx(-10 * math.log10(noise))
    lost = sum(1 - table.get(n, "weight").ssim[8] for n in table.layers
               if table.group(n) == "content")
    assert result.prediction.ssim == pytest.approx(1 - lost)
    # Normalised: each group's losses sum to 1 with every layer at its fewest bits.
    low = allocate_target(table, "weight", Budget.bits("2"), config)
    assert low.prediction.loss == pytest.approx(2.0)


def test_config_validation():
    with pytest.raises(MixDQError, match="unsupported weight bit width 1"):
        AllocConfig(weight_candidates={"content": (1, 4), "quality": (4,)})
    with pytest.raises(MixDQError, match="group content needs a list of bit widths, got 4"):
        AllocConfig(weight_candidates={"content": 4, "quality": (4,)})
    with pytest.raises(MixDQError, match="exactly the groups"):
        AllocConfig(act_candidates={"content": (4, 8)})
    with pytest.raises(MixDQError, match="mode must be one of joint, split"):
        AllocConfig(mode="greedy")
    with pytest.raises(MixDQError, match="split_ratios"):
        AllocConfig(split_ratios=(0.5, 2.0))
    with pytest.raises(MixDQError, match="unknown key"):
        AllocConfig.from_dict({"budget": 4})
    cfg = AllocConfig(mode="split", content_metric="sqnr")
    assert AllocConfig.from_dict(cfg.to_dict()) == cfg


def test_one_side_only(make_table):
    table = make_table(6, layers=4)
    w_only = allocate(table, Budget.bits("4"), None)
    assert w_only.act is None and {lb.a for lb in w_only.bit_map.layers.values()} == {None}
    assert all(w_only.bit_map[n].w == w_only.weight.bits[n] for n in table.layers)
    a_only = allocate(table, None, Budget.bits("6"))
    assert a_only.weight is None and {lb.w for lb in a_only.bit_map.layers.values()} == {None}
    with pytest.raises(MixDQError, match="give a weight budget, an activation budget, or both"):
        allocate(table, None, None)


def _noisy_table(make_table):
    """Content layers whose 8-bit SSIM is 1e-8 *below* their 4-bit SSIM (measurement noise)."""
    table = make_table(3, layers=6)
    for name in table.layers:
        m = table.get(name, "weight")
        if m.ssim:
            m.ssim[8] = m.ssim[4] - 1e-8
        m.sqnr_db[8] = m.sqnr_db[4] - 1e-8
    return table


@pytest.mark.parametrize("mode", ["joint", "split"])
def test_a_budget_for_every_layers_most_bits_gives_them(make_table, mode):
    table = _noisy_table(make_table)
    config = AllocConfig(mode=mode)
    lo, hi, total = cost_range(table, "weight", config)
    for budget in (Budget.bits("8"), Budget.bits("16")):
        r = allocate_target(table, "weight", budget, config)
        assert set(r.bits.values()) == {8}, r.bits
        assert r.cost == hi and r.status == "Optimal"


def test_solver_breaks_exact_ties_toward_more_bits():
    from quant.bitalloc.solver import solve_mckp

    # layer 0: 4 and 8 bits equally good; layer 1: 8 bits clearly better. Budget fits one upgrade
    # beyond layer 1's: the tie goes to more bits.
    losses = [[1.0, 0.5, 0.5], [1.0, 0.6, 0.1]]
    costs = [[2, 4, 8], [2, 4, 8]]
    sol = solve_mckp(losses, costs, capacity=16)
    assert sol.picks == [2, 2] and sol.cost == 16 and sol.loss == pytest.approx(0.6)
    sol = solve_mckp(losses, costs, capacity=12)
    assert sol.picks == [1, 2] and sol.cost == 12
