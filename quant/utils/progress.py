"""One progress display for every stage: a tqdm bar on a terminal, periodic lines in a log.

tqdm draws nothing useful into a file (or disables itself), so a stage redirected to a log
said nothing until it ended. :func:`progress` gives a tqdm bar when stderr is a terminal and
otherwise prints a plain line to stderr when it starts, every ``interval`` seconds
(``MIXDQ_PROGRESS_INTERVAL``, default 30) and when it ends::

    calibrate: 96/1024 prompts (9%), 2m10s elapsed, ~21m left
"""

from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator

DEFAULT_INTERVAL = 30.0


def _interval() -> float:
    try:
        return float(os.environ.get("MIXDQ_PROGRESS_INTERVAL", DEFAULT_INTERVAL))
    except ValueError:
        return DEFAULT_INTERVAL


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class LogProgress:
    """The non-terminal display: the same ``update``/``close``/iteration API as a tqdm bar."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None,
                 desc: str = "", unit: str = "it", initial: int = 0,
                 interval: float | None = None, stream=None, clock=time.monotonic):
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self._start_n = initial
        self.interval = _interval() if interval is None else interval
        self.stream, self.clock = stream, clock
        self._start = self._last = clock()
        self._closed = False
        self._line()

    def _line(self, final: bool = False) -> None:
        elapsed = self.clock() - self._start
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        parts = [f"{self.desc}: {count} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts.append(f"{_duration(elapsed)} elapsed")
        done = self.n - self._start_n
        if not final and self.total is not None and done > 0 and self.n < self.total:
            parts.append(f"~{_duration(elapsed / done * (self.total - self.n))} left")
        if final:
            parts.append("done" if self.total is None or self.n >= self.total else "stopped")
        print(", ".join(parts), file=self.stream or sys.stderr, flush=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self._last >= self.interval:
            self._last = now
            self._line()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._line(final=True)

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Off:
    """No display at all (``--no-progress``)."""

    def __init__(self, iterable=None, **_):
        self.iterable = iterable
        self.n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        pass

    def __iter__(self):
        return iter(self.iterable)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", initial: int = 0, enabled: bool = True, leave: bool = True):
    """A progress display over ``iterable`` (or ``total`` steps advanced with ``update``).

    Args:
        enabled: ``False`` shows nothing (the stages' ``--no-progress``).
        leave: keep the tqdm bar on screen when it ends (terminal only).
    """
    if not enabled:
        return _Off(iterable)
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial,
                    dynamic_ncols=True, leave=leave)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, initial=initial)
