"""Settings of bit allocation, as one typed, validated dataclass (YAML/JSON fills it)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Mapping

from ..bitmap import check_bits
from ..errors import MixDQError
from .table import GROUPS

MODES = ("joint", "split")
CONTENT_METRICS = ("ssim", "sqnr")
NORMALIZE = ("group", "none")
#: Bits a protected (floating-point) activation counts as in the activation average: fp16.
PROTECTED_ACT_BITS = 16


def _default_weight() -> dict[str, tuple[int, ...]]:
    return {"content": (2, 4, 8), "quality": (4, 8)}


def _default_act() -> dict[str, tuple[int, ...]]:
    return {"content": (4, 8), "quality": (4, 8)}


@dataclasses.dataclass
class AllocConfig:
    """How bits are allocated.

    Attributes:
        weight_candidates: group -> candidate weight bit widths (the original's defaults:
            content {2, 4, 8}, quality {4, 8}).
        act_candidates: group -> candidate activation bit widths (default {4, 8} for both).
        mode: ``joint`` - one program over both groups, minimising the sum of each group's
            normalised loss (see :mod:`quant.bitalloc.objective`); ``split`` - the original:
            each group maximises its own summed metric under its share of the budget, the share
            swept over ``split_ratios`` and the best picked by a scoring function. ``joint`` is
            the default because it measured better end to end: on ``tiny`` at a W4 average
            (A8), held-out UNet-output SQNR 21.3 dB / image SSIM 0.9995 against 15.6 / 0.9980
            (split, predicted-loss pick) and 16.5 / 0.9984 (split, pixel-MSE pick), uniform
            W4A8 13.1 / 0.9966 (``scripts/bench_bitalloc.py --ssim``).
        content_metric: the content group's metric, ``ssim`` (the method's) or ``sqnr`` (when
            the table has no SSIM). The quality group always uses SQNR.
        normalize: ``group`` divides each group's losses by that group's total loss with every
            layer at its lowest candidate, so the two groups weigh the same; ``none`` adds raw
            losses, which with ``content_metric='sqnr'`` is the predicted total output noise.
        content_weight: factor on the content group's loss in the joint program.
        split_ratios: in split mode, the fractions of the budget above both groups' minimum
            that go to the content group.
    """

    weight_candidates: dict[str, tuple[int, ...]] = dataclasses.field(
        default_factory=_default_weight)
    act_candidates: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=_default_act)
    mode: str = "joint"
    content_metric: str = "ssim"
    normalize: str = "group"
    content_weight: float = 1.0
    split_ratios: tuple[float, ...] = tuple(i / 10 for i in range(11))

    def __post_init__(self):
        for field, target in (("weight_candidates", "weight"), ("act_candidates", "activation")):
            value = getattr(self, field)
            if not isinstance(value, Mapping) or set(value) != set(GROUPS):
                raise MixDQError(f"{field} must give candidate bits for exactly the groups "
                                 f"{', '.join(GROUPS)}")
            clean = {}
            for group in GROUPS:
                try:
                    bits = tuple(sorted(set(value[group])))
                except TypeError:
                    raise MixDQError(f"{field}: group {group} needs a list of bit widths, got "
                                     f"{value[group]!r}") from None
                if not bits:
                    raise MixDQError(f"{field}: no candidate bits for group {group}")
                for b in bits:
                    check_bits(b, target)
                clean[group] = bits
            setattr(self, field, clean)
        for field, allowed in (("mode", MODES), ("content_metric", CONTENT_METRICS),
                               ("normalize", NORMALIZE)):
            if getattr(self, field) not in allowed:
                raise MixDQError(f"{field} must be one of {', '.join(allowed)}, got "
                                 f"{getattr(self, field)!r}")
        if not (isinstance(self.content_weight, (int, float)) and self.content_weight > 0):
            raise MixDQError(f"content_weight must be a positive number, got "
                             f"{self.content_weight!r}")
        ratios = tuple(float(r) for r in self.split_ratios)
        if not ratios or any(not 0.0 <= r <= 1.0 for r in ratios):
            raise MixDQError("split_ratios must be a non-empty list of numbers in [0, 1]")
        self.split_ratios = ratios

    def candidates(self, target: str) -> dict[str, tuple[int, ...]]:
        """Candidate bits per group for ``weight`` or ``act``."""
        return self.weight_candidates if target == "weight" else self.act_candidates

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["weight_candidates"] = {k: list(v) for k, v in self.weight_candidates.items()}
        d["act_candidates"] = {k: list(v) for k, v in self.act_candidates.items()}
        d["split_ratios"] = list(self.split_ratios)
        return d

    @classmethod
    def from_dict(cls, data: Mapping) -> "AllocConfig":
        if not isinstance(data, Mapping):
            raise MixDQError("allocation config must be a mapping")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MixDQError(f"allocation config: unknown key(s) {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> "AllocConfig":
        """Read a YAML (``.yaml``/``.yml``) or JSON file into a config."""
        path = Path(path)
        if not path.is_file():
            raise MixDQError(f"allocation config {path}: no such file")
        try:
            text = path.read_text(encoding="utf-8")
            if path.suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as e:  # both parsers raise their own error types
            raise MixDQError(f"allocation config {path}: malformed "
                             f"({str(e).splitlines()[0]})") from None
        return cls.from_dict(data)
