"""The sensitivity table: rows, the resumable per-rank logs, the merged CSV and the protect list.

Every finished layer is appended to its rank's log (``SENS.csv.parts/rank-00000.jsonl``) as one
complete JSON line, flushed and fsynced, so a killed run loses at most the layer it was on; a
torn last line is ignored on resume. The merged CSV lists layers in the model's module order,
each layer's weight rows then its activation rows by ascending bits, with floats written as
Python's shortest round-trip ``repr``: the same measurements give the same bytes, whichever
ranks measured them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from pathlib import Path
from typing import Iterable

from ..errors import MixDQError
from ..protect import read_protect_list
from ..utils.io import write_text

COLUMNS = ("layer", "group", "target", "bits", "sqnr_db", "ssim", "size")
TARGETS = ("weight", "act")


@dataclasses.dataclass(frozen=True)
class Row:
    """One measurement: ``layer`` quantized alone, its ``target`` at ``bits``.

    ``sqnr_db`` is the SQNR of the UNet output (``inf`` when unchanged, ``-inf`` when the output
    is not finite); ``ssim`` is ``None`` where not measured; ``size`` is the weight's parameter
    count (weight rows) or the input elements per sample (act rows).
    """

    layer: str
    group: str
    target: str
    bits: int
    sqnr_db: float
    ssim: float | None
    size: int

    def __post_init__(self):
        if self.target not in TARGETS:
            raise MixDQError(f"sensitivity row of {self.layer}: target must be one of "
                             f"{TARGETS}, got {self.target!r}")

    def to_json(self) -> list:
        return [self.layer, self.group, self.target, self.bits, _fmt(self.sqnr_db),
                None if self.ssim is None else _fmt(self.ssim), self.size]

    @classmethod
    def from_json(cls, item: list) -> "Row":
        layer, group, target, bits, sqnr, ssim, size = item
        return cls(layer, group, target, int(bits), float(sqnr),
                   None if ssim is None else float(ssim), int(size))


def _fmt(value: float) -> str:
    return repr(float(value))


def _order(rows: Iterable[Row], layers: list[str]) -> list[Row]:
    rank = {name: i for i, name in enumerate(layers)}
    return sorted(rows, key=lambda r: (rank[r.layer], TARGETS.index(r.target), r.bits))


class LayerLog:
    """One rank's append-only log of finished layers (JSON lines).

    Args:
        path: the log file; created on first append.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def read(self) -> dict[str, list[Row]]:
        """Finished layers and their rows; a torn last line (killed mid-write) is skipped.

        Raises:
            MixDQError: a damaged line other than the last.
        """
        if not self.path.is_file():
            return {}
        lines = self.path.read_bytes().split(b"\n")
        done = {}
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                rows = [Row.from_json(item) for item in record["rows"]]
                done[record["layer"]] = rows
            except (ValueError, KeyError, TypeError):
                if i == len(lines) - 1:  # the last line has no newline: a torn write
                    break
                raise MixDQError(f"{self.path}: line {i + 1} is damaged; delete the file to "
                                 f"measure its layers again") from None
        return done

    def repair(self) -> None:
        """Cut a torn last line so that the next append starts on a fresh line."""
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
                f.flush()
                os.fsync(f.fileno())

    def append(self, layer: str, rows: list[Row]) -> None:
        """Append one finished layer as a single line, flushed to disk before returning."""
        line = json.dumps({"layer": layer, "rows": [r.to_json() for r in rows]},
                          separators=(",", ":"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as f:
            f.write(line.encode("utf-8") + b"\n")
            f.flush()
            os.fsync(f.fileno())


def read_logs(parts_dir: str | os.PathLike) -> dict[str, list[Row]]:
    """Every finished layer recorded in the rank logs of ``parts_dir``."""
    done: dict[str, list[Row]] = {}
    for path in sorted(Path(parts_dir).glob("rank-*.jsonl")):
        done.update(LayerLog(path).read())
    return done


def format_csv(rows: Iterable[Row], layers: list[str]) -> str:
    """The CSV text of ``rows`` in canonical order (``layers`` gives the layer order)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in _order(rows, layers):
        writer.writerow([r.layer, r.group, r.target, r.bits, _fmt(r.sqnr_db),
                         "" if r.ssim is None else _fmt(r.ssim), r.size])
    return buf.getvalue()


def write_csv(path: str | os.PathLike, rows: Iterable[Row], layers: list[str]) -> None:
    """Write the sensitivity CSV atomically."""
    write_text(path, format_csv(rows, layers))


def read_csv(path: str | os.PathLike) -> list[Row]:
    """Read a sensitivity CSV back into rows.

    Raises:
        MixDQError: a missing file, wrong columns, or a malformed value (naming the line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise MixDQError(f"{path}: cannot read the sensitivity table "
                         f"({type(e).__name__})") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(header) != COLUMNS:
        raise MixDQError(f"{path}: not a sensitivity table (columns must be {','.join(COLUMNS)})")
    rows = []
    for n, item in enumerate(reader, start=2):
        try:
            layer, group, target, bits, sqnr, ssim, size = item
            rows.append(Row(layer, group, target, int(bits), float(sqnr),
                            float(ssim) if ssim else None, int(size)))
        except (ValueError, MixDQError):
            raise MixDQError(f"{path}: line {n} is malformed: {','.join(item)!r}") from None
        if math.isnan(rows[-1].sqnr_db):
            raise MixDQError(f"{path}: line {n}: SQNR is NaN")
    return rows


PROTECT_RULES = ("group", "global")


def protect_list(rows: Iterable[Row], fraction: float = 0.01, bits: int | None = None,
                 rule: str = "group") -> list[str]:
    """The activation layers to keep in floating point: the most sensitive ``fraction``.

    - ``rule="group"`` (the original's, method ``paper``): per group, ``ceil(fraction * n)`` of
      the group's ``n`` measured layers at ``bits`` (default: the highest measured activation
      bits, A8): the quality layers with the lowest SQNR and the content layers with the lowest
      SSIM (SQNR where a content layer has no SSIM). On SDXL-Turbo this gives 4 + 5 = 9 layers.
    - ``rule="global"``: ``round(fraction * n)`` of all layers ranked together by SQNR at
      ``bits`` (default: the lowest measured activation bits, A4).

    Ties keep table order; at least one layer (per group for ``group``).

    Args:
        rows: the sensitivity rows (in table order).
        fraction: share of the measured layers to protect, in ``(0, 1]``.
        bits: activation bit width to rank at.
        rule: ``group`` or ``global``.

    Returns:
        Layer names, most sensitive first (quality before content for ``group``).
    """
    if not 0 < fraction <= 1:
        raise MixDQError(f"protect fraction must be in (0, 1], got {fraction}")
    if rule not in PROTECT_RULES:
        raise MixDQError(f"protect rule must be one of {', '.join(PROTECT_RULES)}, got {rule!r}")
    act = [r for r in rows if r.target == "act"]
    if not act:
        return []
    bits = _protect_bits(act, bits, rule)
    ranked = [r for r in act if r.bits == bits]
    if not ranked:
        raise MixDQError(f"no activation measurements at {bits} bits to derive a protect list")
    if rule == "global":
        count = max(1, round(fraction * len(ranked)))
        order = sorted(range(len(ranked)), key=lambda i: (ranked[i].sqnr_db, i))
        return [ranked[i].layer for i in order[:count]]
    names = []
    for group in ("quality", "content"):
        members = [r for r in ranked if r.group == group]
        if not members:
            continue
        count = max(1, math.ceil(fraction * len(members) - 1e-9))
        order = sorted(range(len(members)), key=lambda i: (_protect_key(members[i]), i))
        names += [members[i].layer for i in order[:count]]
    return names


def _protect_bits(act: list[Row], bits: int | None, rule: str) -> int:
    if bits is not None:
        return bits
    measured = [r.bits for r in act]
    return max(measured) if rule == "group" else min(measured)


def _protect_key(row: Row) -> float:
    if row.group == "content" and row.ssim is not None:
        return row.ssim
    return row.sqnr_db


def format_protect(names: list[str], rows: list[Row], fraction: float,
                   rule: str = "group", bits: int | None = None) -> str:
    """The protect-list file: ``#`` comments, then one layer name per line."""
    act = [r for r in rows if r.target == "act"]
    bits = _protect_bits(act, bits, rule) if act else None
    by_name = {r.layer: r for r in act if r.bits == bits}
    measured = len({r.layer for r in act})
    if rule == "group":
        how = (f"per group, {fraction:.2%} of each (rounded up): quality by output SQNR, content "
               f"by image SSIM, with only that input at A{bits}")
    else:
        how = f"{fraction:.2%} of {measured} by output SQNR with only that input at A{bits}"
    lines = [f"# activation layers to keep in floating point: the {len(names)} most sensitive "
             f"({how})", "# derived by mixdq sensitivity; one layer name per line"]
    for name in names:
        row = by_name[name]
        ssim = f", SSIM {row.ssim:.4f}" if row.ssim is not None else ""
        lines.append(f"# {name} ({row.group}): {row.sqnr_db:.2f} dB{ssim}")
    return "\n".join(lines + names) + "\n"


def read_protect(path: str | os.PathLike) -> list[str]:
    """Layer names of a protect-list file (blank lines and ``#`` comments skipped)."""
    return read_protect_list(path)
