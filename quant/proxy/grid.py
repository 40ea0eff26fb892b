"""A captioned grid of images, for looking at what the proxy generates."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from ..utils.io import write_bytes


def save_grid(images: torch.Tensor, captions: list[str], path: str | Path, columns: int = 6,
              marks: list[bool] | None = None) -> None:
    """Write a PNG grid, each image under its caption (wrapped onto two lines).

    Args:
        images: ``[N, 3, H, W]`` in [0, 1].
        captions: one per image.
        path: output PNG.
        columns: images per row.
        marks: optional per-image verdict (e.g. the classifier agrees with the caption); a
            wrong one gets a red title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(captions)
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(1.55 * columns, 1.85 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(images[i].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
        words = captions[i].split()
        cut = (len(words) + 1) // 2
        colour = "black" if marks is None or marks[i] else "red"
        ax.set_title(" ".join(words[:cut]) + "\n" + " ".join(words[cut:]), fontsize=7,
                     color=colour)
    fig.tight_layout(pad=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    write_bytes(path, buf.getvalue())
