"""Read the original MixDQ's sensitivity tables into our table format.

The original writes one YAML file per target and metric, each mapping ``model.<layer>`` to the
metric at its candidate widths, ``[m@2, m@4, m@8]``, plus per-layer size ratios (the layer's share
of the target's total: parameters for weights, input activation elements for activations):

    weight_sqnr.yaml       model.conv_in: [12.1, 30.5, 55.0]
    weight_ssim.yaml       model.down_blocks.1.attentions.0...attn2.to_k: [0.91, 0.99, 0.9999]
    act_sqnr.yaml / act_ssim.yaml
    weight_size_ratio.yaml model.conv_in: 6.8e-06     (and act_size_ratio.yaml)

A file is recognised by its name: the target (``weight``, or ``act``/``activation``) and the
metric (``sqnr``, ``ssim``, or ``size``/``ratio`` for the sizes) must each appear in it once.
:func:`read_mixdq_tables` turns a folder of them into :class:`~quant.sensitivity.results.Row`
objects (every layer needs SQNR; SSIM where the original measured it, usually content layers;
groups from :class:`~quant.sensitivity.groups.GroupRule`). Sizes become integers: a ratio times
the target's total (``weight_total`` / ``act_total``; SDXL: 2,567,463,684 parameters) when given,
else times 10^9 - which keeps average-bit budgets exact to ~1e-9 but makes megabyte budgets
meaningless. Write the result with :func:`~quant.sensitivity.results.write_csv`, or run
``scripts/convert_mixdq_tables.py DIR OUT.csv``.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from ..bitmap import check_bits
from ..errors import MixDQError
from .groups import GroupRule
from .results import Row

#: The widths of the original's lists.
ORIGINAL_BITS = (2, 4, 8)
#: Size scale when the target's total is not given.
DEFAULT_TOTAL = 10 ** 9

_TARGET_WORDS = {"weight": ("weight", "weights", "w"), "act": ("act", "acts", "activation",
                                                                 "activations", "a")}
_METRIC_WORDS = {"sqnr": ("sqnr",), "ssim": ("ssim",), "size": ("size", "ratio", "sizes",
                                                                 "ratios")}


def _classify(path: Path) -> tuple[str, str] | None:
    words = [w for w in re.split(r"[^a-z0-9]+", path.stem.lower()) if w]
    targets = {t for t, names in _TARGET_WORDS.items() if any(w in names for w in words)}
    metrics = {m for m, names in _METRIC_WORDS.items() if any(w in names for w in words)}
    if not targets and not metrics:
        return None
    if len(targets) != 1 or len(metrics) != 1:
        raise MixDQError(f"{path}: cannot tell the target (weight/act) and the metric "
                         f"(sqnr/ssim/size) from the file name")
    return targets.pop(), metrics.pop()


def _load(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise MixDQError(f"{path}: not a readable YAML file ({type(e).__name__})") from None
    if not isinstance(data, dict) or not data:
        raise MixDQError(f"{path}: expected a mapping model.<layer> -> values")
    return {_layer(str(k)): v for k, v in data.items()}


def _layer(key: str) -> str:
    return key.removeprefix("model.")


def _values(path: Path, layer: str, value, bits: tuple[int, ...]) -> dict[int, float]:
    if not isinstance(value, (list, tuple)) or len(value) != len(bits):
        raise MixDQError(f"{path}: {layer}: expected a list of {len(bits)} values "
                         f"(at {', '.join(map(str, bits))} bits), got {value!r}")
    try:
        out = {b: float(v) for b, v in zip(bits, value)}
    except (TypeError, ValueError):
        raise MixDQError(f"{path}: {layer}: non-numeric value in {value!r}") from None
    if any(math.isnan(v) for v in out.values()):
        raise MixDQError(f"{path}: {layer}: NaN in {value!r}")
    return out


def read_mixdq_tables(folder: str | os.PathLike, *, bits: tuple[int, ...] = ORIGINAL_BITS,
                      weight_total: int | None = None, act_total: int | None = None,
                      groups: GroupRule | None = None,
                      act_bits: tuple[int, ...] | None = None) -> tuple[list[Row], list[str]]:
    """Rows of our sensitivity table from a folder of the original's YAML tables.

    Args:
        folder: the folder holding the YAML files (see the module doc).
        bits: the widths the lists are measured at, in list order.
        weight_total, act_total: the targets' totals the size ratios are shares of.
        groups: the content/quality rule (default :class:`GroupRule`, the method's).
        act_bits: activation widths to keep (default: those of ``bits`` that activations
            support, i.e. 4..8; the original's A2 was measured but never used).

    Returns:
        ``(rows, layers)``: rows in table order and the layer order (that of the SQNR files).

    Raises:
        MixDQError: a missing folder or file, an unrecognisable or duplicate file name, a list
            of the wrong length, a layer without SQNR or size, or sizes that round to zero.
    """
    folder = Path(folder)
    groups = groups or GroupRule()
    if not folder.is_dir():
        raise MixDQError(f"{folder}: no such folder of MixDQ sensitivity tables")
    files: dict[tuple[str, str], Path] = {}
    for path in sorted(folder.glob("*.y*ml")):
        kind = _classify(path)
        if kind is None:
            continue
        if kind in files:
            raise MixDQError(f"{folder}: two {kind[0]} {kind[1]} tables: {files[kind].name} "
                             f"and {path.name}")
        files[kind] = path
    targets = [t for t in ("weight", "act") if (t, "sqnr") in files]
    if not targets:
        raise MixDQError(f"{folder}: no weight or act SQNR table (e.g. weight_sqnr.yaml)")
    act_bits = tuple(b for b in bits if 4 <= b <= 8) if act_bits is None else tuple(act_bits)
    totals = {"weight": weight_total, "act": act_total}
    rows: list[Row] = []
    order: list[str] = []
    for target in targets:
        keep = bits if target == "weight" else act_bits
        for b in keep:
            check_bits(b, "weight" if target == "weight" else "activation")
        if (target, "size") not in files:
            raise MixDQError(f"{folder}: no {target} size-ratio table (e.g. "
                             f"{target}_size_ratio.yaml)")
        sqnr_path, size_path = files[target, "sqnr"], files[target, "size"]
        sqnr = _load(sqnr_path)
        ssim = _load(files[target, "ssim"]) if (target, "ssim") in files else {}
        sizes = _load(size_path)
        unknown = sorted(set(ssim) - set(sqnr))
        if unknown:
            raise MixDQError(f"{files[target, 'ssim']}: layer {unknown[0]} has SSIM but no "
                             f"SQNR in {sqnr_path.name}")
        total = totals[target] or DEFAULT_TOTAL
        for layer, value in sqnr.items():
            if layer not in sizes:
                raise MixDQError(f"{size_path}: no size ratio for layer {layer}")
            try:
                ratio = float(sizes[layer])
            except (TypeError, ValueError):
                raise MixDQError(f"{size_path}: {layer}: size ratio {sizes[layer]!r} is not a "
                                 f"number") from None
            size = round(ratio * total)
            if size <= 0:
                raise MixDQError(f"{size_path}: {layer}: size ratio {ratio} x total {total} "
                                 f"rounds to {size}; give the target's total")
            metric = _values(sqnr_path, layer, value, bits)
            measured = _values(files[target, "ssim"], layer, ssim[layer], bits) \
                if layer in ssim else {}
            if layer not in order:
                if target != targets[0]:
                    raise MixDQError(f"{sqnr_path}: layer {layer} is not in the "
                                     f"{targets[0]} tables")
                order.append(layer)
            for b in keep:
                rows.append(Row(layer, groups.group(layer), target, b, metric[b],
                                measured.get(b), size))
    for target in targets[1:]:
        missing = set(order) - {r.layer for r in rows if r.target == target}
        if missing:
            raise MixDQError(f"{files[target, 'sqnr']}: layer {min(missing)} missing")
    return rows, order
