"""The sensitivity heatmap: blocks down the side, ``(target, bits)`` across, SQNR in the cells."""

from __future__ import annotations

import math
import os
from collections import defaultdict

from ..utils.io import atomic_path
from .groups import block_of, block_order
from .results import TARGETS, Row


def block_table(rows: list[Row]) -> tuple[list[str], list[tuple[str, int]], dict]:
    """Group finite SQNRs by block (rows, in running order) and ``(target, bits)`` (columns).

    Returns:
        ``(blocks, columns, values)`` with ``values[(block, column)]`` a list of SQNRs in dB
        (``inf`` left out: an unchanged output says nothing about a block's average).
    """
    blocks = block_order([block_of(r.layer) for r in rows])
    columns = sorted({(r.target, r.bits) for r in rows},
                     key=lambda c: (TARGETS.index(c[0]), c[1]))
    values: dict = defaultdict(list)
    for r in rows:
        if math.isfinite(r.sqnr_db):
            values[(block_of(r.layer), (r.target, r.bits))].append(r.sqnr_db)
    return blocks, columns, values


def save_heatmap(path: str | os.PathLike, rows: list[Row], title: str = "") -> None:
    """Write a PNG with two panels, mean and minimum SQNR per block and ``(target, bits)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    blocks, columns, values = block_table(rows)
    labels = [f"{'W' if t == 'weight' else 'A'}{b}" for t, b in columns]
    panels = {"mean": np.mean, "min": np.min}
    fig, axes = plt.subplots(1, 2, figsize=(3 + 1.1 * len(columns) * 2, 1.2 + 0.42 * len(blocks)),
                             squeeze=False)
    for ax, (stat, fn) in zip(axes[0], panels.items()):
        grid = np.full((len(blocks), len(columns)), np.nan)
        for i, block in enumerate(blocks):
            for j, column in enumerate(columns):
                cell = values.get((block, column))
                if cell:
                    grid[i, j] = fn(cell)
        image = ax.imshow(grid, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(columns)), labels)
        ax.set_yticks(range(len(blocks)), blocks)
        ax.set_title(f"{stat} SQNR (dB)")
        for i in range(len(blocks)):
            for j in range(len(columns)):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=7,
                            color="white" if grid[i, j] < np.nanmean(grid) else "black")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
