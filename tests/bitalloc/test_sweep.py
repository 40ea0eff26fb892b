"""The Pareto front: monotone in the budget, written as CSV and PNG."""

import csv

from PIL import Image

from quant.bitalloc import AllocConfig, cost_range, pareto, sweep, write_front


def test_sweep_is_monotone_and_spans_the_range(make_table, tmp_path):
    table = make_table(11, layers=8)
    config = AllocConfig(act_candidates={"content": (4, 6, 8), "quality": (4, 8)}, mode="joint")
    lo, hi, total = cost_range(table, "act", config)
    results = sweep(table, "act", config, points=6)
    assert [r.cost for r in (results[0], results[-1])] == [lo, hi]
    losses = [r.prediction.loss for r in results]
    assert all(a >= b - 1e-12 for a, b in zip(losses, losses[1:]))  # more bits, no worse
    assert all(r.cost <= r.budget.capacity(total) for r in results)
    assert all(r.status == "Optimal" for r in results)
    flags = pareto(results)
    assert flags[0] and flags[-1]
    fronts = {"weight": sweep(table, "weight", config, points=4), "act": results}
    png = write_front(tmp_path / "front.csv", fronts)
    rows = list(csv.DictReader(open(tmp_path / "front.csv")))
    assert len(rows) == 10 and rows[0]["target"] == "weight" and rows[-1]["target"] == "act"
    assert float(rows[-1]["avg_bits"]) == hi / total and rows[-1]["pareto"] == "1"
    assert float(rows[4]["predicted_loss"]) == float(f"{results[0].prediction.loss:.8g}")
    image = Image.open(png)
    assert image.size[0] > 600 and len(image.getcolors(1 << 20)) > 10


def test_dominated_points_are_flagged(make_table):
    table = make_table(1, layers=4)
    results = sweep(table, "weight", AllocConfig(mode="joint"), points=3)
    worse = results[1]
    worse_copy = type(worse)(**{**worse.__dict__, "cost": results[2].cost + 1})
    assert pareto(results + [worse_copy])[-1] is False
