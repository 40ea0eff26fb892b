"""The one timer: milliseconds per call, CUDA events on a GPU and a wall clock elsewhere.

Every latency mixdq reports (benchmark UNet latency, kernel and backend tuning, the GPU UNet
benchmark) comes from :func:`time_calls`; :class:`Spread` summarises the samples (median,
min/max, quartiles, repeats) and says when they vary too much to trust a single number.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable

import torch

# max/min above this: the samples disagree (a busy machine, clock changes); say so
SPREAD_WARNING_RATIO = 1.5


def time_calls(fn: Callable[[], object], repeats: int, *, warmup: int = 0,
               device: torch.device | str | None = None) -> list[float]:
    """Milliseconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls.

    On a CUDA ``device`` each call is bracketed by CUDA events (the GPU time of the work it
    queued, waited for before the next call); otherwise by ``time.perf_counter``.
    """
    for _ in range(warmup):
        fn()
    times = []
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
    return times


def median_ms(fn: Callable[[], object], repeats: int, *, warmup: int = 0,
              device: torch.device | str | None = None) -> float:
    """The median of :func:`time_calls`."""
    return statistics.median(time_calls(fn, repeats, warmup=warmup, device=device))


@dataclasses.dataclass(frozen=True)
class Spread:
    """Summary of timing samples (milliseconds)."""

    median: float
    min: float
    max: float
    q1: float
    q3: float
    repeats: int

    @classmethod
    def of(cls, times: list[float]) -> "Spread":
        if not times:
            raise ValueError("no timing samples")
        ordered = sorted(times)
        if len(ordered) >= 2:
            q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
        else:
            q1 = q3 = ordered[0]
        return cls(statistics.median(ordered), ordered[0], ordered[-1], q1, q3, len(ordered))

    @property
    def ratio(self) -> float:
        """max / min (1.0 for identical samples)."""
        return self.max / self.min if self.min > 0 else float("inf")

    def unsteady(self, threshold: float = SPREAD_WARNING_RATIO) -> bool:
        return self.ratio > threshold

    def format(self) -> str:
        """``median (min–max, N×)``."""
        return f"{self.median:.2f} ({self.min:.2f}–{self.max:.2f}, {self.repeats}×)"
