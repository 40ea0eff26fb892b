"""The benchmark's outputs: ``report.json``, ``report.md`` (one row per variant), ``grid.png``."""

from __future__ import annotations

import io
import platform
import textwrap
from pathlib import Path
from typing import Any

from ..utils.io import write_bytes, write_json, write_text
from ..utils.sizes import UNIT, format_mb, percent_of
from ..utils.timing import Spread

FORMAT = "mixdq-benchmark"

# (column title, key in a variant's "metrics", format)
COLUMNS = [
    ("FID vs FP", "fid_vs_fp", "{:.4g}"),
    ("FID vs real", "fid_vs_real", "{:.4g}"),
    ("CLIPScore", "clip_score", "{:.2f}"),
    ("ImageReward", "image_reward", "{:.3f}"),
    ("PSNR vs FP (dB)", "psnr_vs_fp", "{:.2f}"),
    ("SSIM vs FP", "ssim_vs_fp", "{:.4f}"),
]


def versions() -> dict[str, str]:
    """Versions of the software that produced a report."""
    import diffusers
    import torch
    import torchmetrics
    import transformers

    from .. import __version__

    return {"mixdq": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "cuda": str(torch.version.cuda), "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "torchmetrics": torchmetrics.__version__}


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return fmt.format(value)


def _latency(perf: dict) -> str:
    """``median (min–max, N×)`` ms, or the median alone for a report without the samples."""
    times = perf.get("latency_ms_all")
    if times:
        return Spread.of(times).format()
    return _cell(perf.get("latency_ms"), "{:.2f}")


def fp16_baseline(report: dict) -> int | None:
    """Bytes of the reference UNet's weights in fp16: what every size is compared with."""
    for v in report["variants"]:
        if v.get("reference") and v.get("perf"):
            return v["perf"].get("fp16_weight_bytes")
    return None


def latency_warnings(perf: dict[str, dict | None]) -> list[str]:
    """One line per variant whose timed calls disagree by more than the spread threshold."""
    out = []
    for name, p in perf.items():
        if not p or not p.get("latency_ms_all"):
            continue
        spread = Spread.of(p["latency_ms_all"])
        if spread.unsteady():
            out.append(f"warning: {name}'s UNet latency varied {spread.ratio:.1f}x over "
                       f"{spread.repeats} calls ({spread.min:.2f} to {spread.max:.2f} ms): the "
                       f"machine was busy or its clock changed; rerun on an idle machine or "
                       f"with more --latency-repeats before comparing latencies")
    return out


def markdown(report: dict) -> str:
    """The report as Markdown: settings, then one table row per variant."""
    s = report["settings"]
    gen = s["generation"]
    lines = [
        "# mixdq benchmark", "",
        f"Prompts: {s['prompts_source']}. {gen['steps']} step(s), guidance {gen['guidance']}, "
        f"seed {gen['seed']} + i, {s['resolution']} px; metrics on {report['device']}"
        + (f", GPU {report['gpu']}" if report.get("gpu") else "") + ".", "",
    ]
    metric_cols = [c for c in COLUMNS if any(c[1] in v["metrics"] for v in report["variants"])]
    baseline = fp16_baseline(report)
    head = (["variant"] + [c[0] for c in metric_cols]
            + ["UNet latency (ms): median (min–max, calls)", f"peak memory ({UNIT})",
               f"UNet weights ({UNIT})", "UNet weights (% of fp16)", "UNet runs on"])
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in report["variants"]:
        m, perf = v["metrics"], v.get("perf") or {}
        row = [v["name"] + (" (reference)" if v.get("reference") else "")]
        row += [_cell(m.get(key), fmt) for _, key, fmt in metric_cols]
        row += [_latency(perf), format_mb(perf.get("peak_memory_bytes")),
                format_mb(perf.get("weight_bytes")),
                percent_of(perf.get("weight_bytes"), baseline), perf.get("execution", "—")]
        lines.append("| " + " | ".join(row) + " |")
    if baseline:
        lines += ["", f"{UNIT} = 10^6 bytes. UNet weights as deployed (packed integers and "
                  f"scales for quantized layers); % of the reference UNet's weights in fp16 "
                  f"({format_mb(baseline)} {UNIT})."]
    notes = report.get("notes") or []
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


GRID_LABEL_WIDTH = 26   # characters per line of a row caption
GRID_LABEL_LINES = 8    # lines that fit beside one image row at 8 pt


def grid_label(prompt: str, width: int = GRID_LABEL_WIDTH, lines: int = GRID_LABEL_LINES) -> str:
    """A row caption that fits its cell: wrapped to ``width`` characters (long words broken)
    and cut to ``lines`` lines, ending in "..." when the prompt was longer."""
    wrapped = textwrap.wrap(" ".join(prompt.split()), width, break_long_words=True) or [""]
    if len(wrapped) > lines:
        wrapped = wrapped[:lines]
        wrapped[-1] = wrapped[-1][: width - 3].rstrip() + "..."
    return "\n".join(wrapped)


def save_grid(path: str | Path, folders: dict[str, Path], prompts: list[str],
              rows: int = 8) -> None:
    """An image grid PNG: one row per prompt (the first ``rows``), one column per variant.

    Args:
        path: output PNG, written atomically.
        folders: variant name -> its image folder, in column order.
        prompts: the prompts; each row is captioned with its (wrapped) prompt.
        rows: how many prompts to show.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from .generation import image_path

    n, cols = min(rows, len(prompts)), len(folders)
    fig, axes = plt.subplots(n, cols + 1, figsize=(2.2 * cols + 2.0, 2.2 * n + 0.4),
                             squeeze=False, gridspec_kw={"width_ratios": [0.9] + [1] * cols})
    for r in range(n):
        axes[r][0].axis("off")
        axes[r][0].text(1.0, 0.5, grid_label(prompts[r]), fontsize=8, ha="right",
                        va="center", transform=axes[r][0].transAxes)
    for c, (name, folder) in enumerate(folders.items(), start=1):
        for r in range(n):
            ax = axes[r][c]
            with Image.open(image_path(folder, r)) as im:
                ax.imshow(im.convert("RGB"))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    write_bytes(path, buffer.getvalue())


def write_report(out_dir: str | Path, report: dict) -> dict[str, Path]:
    """Write ``report.json`` and ``report.md`` atomically; returns their paths."""
    out_dir = Path(out_dir)
    paths = {"json": out_dir / "report.json", "markdown": out_dir / "report.md"}
    write_json(paths["json"], report)
    write_text(paths["markdown"], markdown(report))
    return paths
