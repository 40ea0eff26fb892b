"""The sensitivity table (``mixdq sensitivity --out SENS.csv``) and the protect list, checked.

CSV columns ``layer,group,target,bits,sqnr_db,ssim,size`` (docs/DESIGN.md), one row per
(layer, target, bits); extra columns are ignored. Everything the allocator relies on is checked
here, so that a bad file fails with one line naming the row or the layer:

- the seven columns exist; ``target`` is ``weight`` or ``act``; ``group`` is ``content`` or
  ``quality`` and the same on every row of a layer; ``bits`` is a bit width the bit map supports;
- ``sqnr_db`` is a finite number on every row, ``ssim`` is empty or a finite number in [-1, 1]
  (values up to 1e-4 outside, float rounding, are clipped);
- ``size`` is a positive integer, the same on every row of one (layer, target);
- no (layer, target, bits) appears twice;
- every layer has rows for the same targets. A table may hold both targets or only one (a
  weight-only run, for W4A16-style maps: the other side is then not allocated and stays floating
  point). A layer measured for one side when the others have both is an error rather than a
  silent default: inventing its missing side would hide a sensitivity run that stopped half way.

Whether every layer has a row for each *candidate* bit width depends on the allocation settings,
so that is checked by :meth:`SensitivityTable.check_candidates`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from pathlib import Path
from typing import Iterable, Mapping

from ..bitmap import ACT_BITS, WEIGHT_BITS
from ..errors import MixDQError
from ..protect import read_protect_list  # noqa: F401  (re-exported)
from ..utils.io import write_text

COLUMNS = ("layer", "group", "target", "bits", "sqnr_db", "ssim", "size")
TARGETS = ("weight", "act")
GROUPS = ("content", "quality")
SSIM_SLACK = 1e-4


@dataclasses.dataclass
class Measurement:
    """What was measured for one side (``target``) of one layer, at each bit width.

    Attributes:
        layer: module name in the UNet.
        group: ``content`` or ``quality``.
        target: ``weight`` or ``act``.
        size: parameter count (weight) or input activation elements per sample (act).
        sqnr_db: bits -> UNet-output SQNR in dB with only this side of this layer quantized.
        ssim: bits -> image SSIM against the full-precision images, where it was measured.
    """

    layer: str
    group: str
    target: str
    size: int
    sqnr_db: dict[int, float] = dataclasses.field(default_factory=dict)
    ssim: dict[int, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class SensitivityTable:
    """All measurements, keyed by ``(layer, target)``; ``layers`` keeps the file's order and
    ``source`` names the table in error messages."""

    layers: list[str]
    entries: dict[tuple[str, str], Measurement]
    source: str = "sensitivity table"

    @classmethod
    def read(cls, path: str | Path) -> "SensitivityTable":
        """Read and validate a sensitivity CSV.

        Raises:
            MixDQError: a missing file, a missing column, or a bad row (named by line number).
        """
        path = Path(path)
        if not path.is_file():
            raise MixDQError(f"sensitivity table {path}: no such file")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise MixDQError(f"sensitivity table {path}: not UTF-8 text") from None
        return cls.parse(text, source=str(path))

    def check_layers(self, names: Iterable[str], source: str = "sensitivity table") -> None:
        """Refuse a table that lacks a layer of the model (``names``: its quantizable layers):
        a bit map allocated from it would not name every layer (layers with only some of the
        targets are refused when the table is read).

        Raises:
            MixDQError: naming the first missing layer and how many are missing.
        """
        names = list(names)
        missing = [n for n in names if n not in self.layers]
        if missing:
            raise MixDQError(f"{source}: layer {missing[0]} of the model is missing "
                             f"({len(missing)} of {len(names)} layers missing); rerun "
                             f"`mixdq sensitivity` with the same arguments to complete it")

    @classmethod
    def parse(cls, text: str, source: str = "sensitivity table") -> "SensitivityTable":
        """Validate CSV text (see the module docstring); ``source`` names it in errors."""
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise MixDQError(f"{source}: missing column(s) {', '.join(missing)}; expected "
                             f"{','.join(COLUMNS)}")
        layers: dict[str, None] = {}
        entries: dict[tuple[str, str], Measurement] = {}
        groups: dict[str, str] = {}
        for row in reader:
            where = f"{source} line {reader.line_num}"
            layer, group, target = ((row[k] or "").strip() for k in ("layer", "group", "target"))
            if not layer:
                raise MixDQError(f"{where}: empty layer name")
            if target not in TARGETS:
                raise MixDQError(f"{where}: unknown target {target!r} (use weight or act)")
            if group not in GROUPS:
                raise MixDQError(f"{where}: unknown group {group!r} (use content or quality)")
            if groups.setdefault(layer, group) != group:
                raise MixDQError(f"{where}: layer {layer} is in group {group} here but "
                                 f"{groups[layer]} on an earlier row")
            bits = _int(row["bits"], "bits", where)
            if bits not in (WEIGHT_BITS if target == "weight" else ACT_BITS):
                raise MixDQError(f"{where}: unsupported {target} bit width {bits} for layer "
                                 f"{layer}")
            size = _int(row["size"], "size", where)
            if size <= 0:
                raise MixDQError(f"{where}: size must be positive, got {size}")
            sqnr = _sqnr(row["sqnr_db"], where)
            ssim = None if not (row["ssim"] or "").strip() else _float(row["ssim"], "ssim", where)
            if ssim is not None:
                # float32 SSIM of identical images can come out as 1.0000001: tolerate rounding.
                if not -1.0 - SSIM_SLACK <= ssim <= 1.0 + SSIM_SLACK:
                    raise MixDQError(f"{where}: ssim {ssim} is outside [-1, 1]")
                ssim = min(1.0, max(-1.0, ssim))
            m = entries.setdefault((layer, target), Measurement(layer, group, target, size))
            if m.size != size:
                raise MixDQError(f"{where}: layer {layer} ({target}) has size {size} here but "
                                 f"{m.size} on an earlier row")
            if bits in m.sqnr_db:
                raise MixDQError(f"{where}: duplicate row for layer {layer}, {target}, "
                                 f"{bits} bits")
            m.sqnr_db[bits] = sqnr
            if ssim is not None:
                m.ssim[bits] = ssim
            layers[layer] = None
        if not entries:
            raise MixDQError(f"{source}: no rows")
        present = {target for _, target in entries}
        for layer in layers:
            for target in sorted(present):
                if (layer, target) not in entries:
                    other = TARGETS[1 - TARGETS.index(target)]
                    raise MixDQError(f"{source}: layer {layer} has {other} rows but no {target} "
                                     f"rows, unlike other layers; every layer needs the same "
                                     f"targets")
        return cls(list(layers), entries, source)

    @property
    def targets(self) -> tuple[str, ...]:
        """The targets the table measures: ``("weight", "act")``, or one of them."""
        present = {target for _, target in self.entries}
        return tuple(t for t in TARGETS if t in present)

    def get(self, layer: str, target: str) -> Measurement:
        return self.entries[(layer, target)]

    def group(self, layer: str) -> str:
        m = self.entries.get((layer, "weight")) or self.entries[(layer, "act")]
        return m.group

    def check_candidates(self, target: str, candidates: Mapping[str, Iterable[int]],
                         content_metric: str = "sqnr") -> None:
        """Check that every layer has a row, and a content metric, for each candidate width.

        Args:
            target: ``weight`` or ``act``.
            candidates: group -> candidate bit widths.
            content_metric: ``ssim`` requires an SSIM value on each content layer's candidates.

        Raises:
            MixDQError: naming the first layer that lacks a candidate, or the target when the
                table has no rows for it at all.
        """
        if target not in self.targets:
            raise MixDQError(f"{self.source} has no {target} rows: it cannot allocate "
                             f"{target} bits (leave that side in floating point)")
        for layer in self.layers:
            m = self.get(layer, target)
            for bits in candidates[m.group]:
                if bits not in m.sqnr_db:
                    have = ",".join(map(str, sorted(m.sqnr_db)))
                    raise MixDQError(f"{self.source}: layer {layer} ({target}, {m.group}) has "
                                     f"no row for candidate {bits} bits (has {have})")
                if content_metric == "ssim" and m.group == "content" and bits not in m.ssim:
                    raise MixDQError(f"{self.source}: layer {layer} ({target}, content) has no "
                                     f"ssim at {bits} bits; measure it, or use the content "
                                     f"metric sqnr (--content-metric sqnr)")

    def rows(self) -> list[dict]:
        """The table as CSV rows (dicts with :data:`COLUMNS` keys), layers in order."""
        out = []
        for layer in self.layers:
            for target in self.targets:
                m = self.get(layer, target)
                for bits in sorted(m.sqnr_db):
                    ssim = m.ssim.get(bits)
                    out.append({"layer": layer, "group": m.group, "target": target,
                                "bits": bits, "sqnr_db": repr(m.sqnr_db[bits]),
                                "ssim": "" if ssim is None else repr(ssim), "size": m.size})
        return out

    def write(self, path: str | Path) -> None:
        """Write the table as CSV, atomically (floats in full precision)."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows())
        write_text(path, buf.getvalue())


def _int(text: str | None, column: str, where: str) -> int:
    try:
        return int((text or "").strip())
    except ValueError:
        raise MixDQError(f"{where}: {column} {text!r} is not an integer") from None


# The sensitivity stage writes +inf when quantizing a layer changed nothing measurable and -inf
# when it made the UNet output non-finite; both are real measurements, kept finite here so the
# objective stays well defined: +inf is "as good as it gets", -inf "never choose this".
SQNR_CEIL_DB = 200.0
SQNR_FLOOR_DB = -100.0


def _sqnr(text: str | None, where: str) -> float:
    stripped = (text or "").strip().lower()
    if stripped in ("inf", "+inf", "infinity", "+infinity"):
        return SQNR_CEIL_DB
    if stripped in ("-inf", "-infinity"):
        return SQNR_FLOOR_DB
    return min(max(_float(text, "sqnr_db", where), SQNR_FLOOR_DB), SQNR_CEIL_DB)


def _float(text: str | None, column: str, where: str) -> float:
    try:
        value = float((text or "").strip())
    except ValueError:
        raise MixDQError(f"{where}: {column} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise MixDQError(f"{where}: {column} is {text.strip()}; a finite number is required")
    return value
