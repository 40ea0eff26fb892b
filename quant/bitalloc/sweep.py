"""The Pareto front: budget against predicted quality, as CSV and as a plot."""

from __future__ import annotations

import csv
import io
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import MixDQError
from ..utils.io import atomic_path, write_text
from .allocate import Budget, ProgramResult, allocate_target, cost_range
from .config import AllocConfig
from .table import SensitivityTable

FRONT_COLUMNS = ("target", "budget_bits", "avg_bits", "mb", "predicted_loss",
                 "predicted_sqnr_db", "predicted_ssim", "status", "solve_s", "pareto")


def sweep(table: SensitivityTable, target: str, config: AllocConfig | None = None,
          protected: Iterable[str] = (), points: int = 17) -> list[ProgramResult]:
    """Allocate ``target`` at ``points`` average-bit budgets spread evenly over its feasible range.

    Args:
        table: the sensitivity table.
        target: ``weight`` or ``act``.
        config: allocation settings (the mode in use is swept).
        protected: activation layers kept in floating point.
        points: number of budgets, at least 2 (the two ends included).

    Returns:
        One :class:`ProgramResult` per budget, from the smallest budget to the largest.
    """
    from ..utils.progress import progress

    if points < 2:
        raise MixDQError(f"a sweep needs at least 2 points, got {points}")
    config = config or AllocConfig()
    protected = list(protected)
    table.check_candidates(target, config.candidates(target), config.content_metric)
    lo, hi, total = cost_range(table, target, config, protected)
    out = []
    for i in progress(range(points), desc=f"sweep {target}", unit="budgets", leave=False):
        value = Fraction(lo * (points - 1) + (hi - lo) * i, (points - 1) * total)
        out.append(allocate_target(table, target, Budget(value, "bits"), config, protected))
    return out


def pareto(results: Sequence[ProgramResult]) -> list[bool]:
    """Whether each result is on the front: no other is as cheap or cheaper and strictly better,
    or strictly cheaper and as good (cost = ``sum(size * bits)``, quality = predicted loss)."""
    flags = []
    for r in results:
        dominated = any((o.cost <= r.cost and o.prediction.loss < r.prediction.loss) or
                        (o.cost < r.cost and o.prediction.loss <= r.prediction.loss)
                        for o in results)
        flags.append(not dominated)
    return flags


def front_rows(results: Sequence[ProgramResult]) -> list[dict]:
    """CSV rows (:data:`FRONT_COLUMNS`) for the results of one target."""
    rows = []
    for r, on_front in zip(results, pareto(results)):
        p = r.prediction
        rows.append({"target": r.target, "budget_bits": f"{float(r.budget.value):.6f}",
                     "avg_bits": f"{r.avg_bits:.6f}", "mb": f"{r.mb:.6f}",
                     "predicted_loss": f"{p.loss:.8g}", "predicted_sqnr_db": f"{p.sqnr_db:.4f}",
                     "predicted_ssim": "" if p.ssim is None else f"{p.ssim:.6f}",
                     "status": r.status, "solve_s": f"{r.solve_s:.3f}",
                     "pareto": int(on_front)})
    return rows


def write_front(path: str | Path, fronts: dict[str, Sequence[ProgramResult]]) -> Path:
    """Write the fronts (target -> results) as one CSV and a PNG plot beside it.

    Returns:
        The path of the plot (``path`` with the suffix ``.png``).
    """
    path = Path(path)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FRONT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for results in fronts.values():
        writer.writerows(front_rows(results))
    write_text(path, buf.getvalue())
    png = path.with_suffix(".png")
    plot_front(png, fronts)
    return png


def plot_front(path: str | Path, fronts: dict[str, Sequence[ProgramResult]]) -> None:
    """Plot predicted SQNR (and SSIM where measured) against achieved average bits, per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(fronts), figsize=(5.5 * len(fronts), 4), squeeze=False)
    for ax, (target, results) in zip(axes[0], fronts.items()):
        x = [r.avg_bits for r in results]
        ax.plot(x, [r.prediction.sqnr_db for r in results], "o-", color="tab:blue")
        ax.set_xlabel(f"{target}: average bits (achieved)")
        ax.set_ylabel("predicted UNet-output SQNR (dB)", color="tab:blue")
        ax.grid(alpha=0.3)
        ssim = [r.prediction.ssim for r in results]
        if all(s is not None for s in ssim):
            twin = ax.twinx()
            twin.plot(x, ssim, "s--", color="tab:orange")
            twin.set_ylabel("predicted SSIM", color="tab:orange")
        ax.set_title(f"{target} ({results[0].mode})")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
