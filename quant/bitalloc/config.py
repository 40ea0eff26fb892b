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
WEIGHT_STORAGE = ("packed", "int4")
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
        mode: ``split`` (the original's; method ``paper``): each group maximises its own summed
            metric within its share of the budget, the share swept over a grid and the best
            picked by a scoring function (images measured against full precision, see
            :class:`quant.bitalloc.pick.ImageScore`; without one, the predicted loss);
            ``joint`` (switch ``joint_objective``): one program over both groups, minimising
            the sum of each group's normalised loss (see :mod:`quant.bitalloc.objective`). On
            ``tiny`` at a W4 average (A8), joint measured held-out UNet-output SQNR 21.3 dB /
            image SSIM 0.9995 against 15.6 / 0.9980 (split, predicted-loss pick) and
            16.5 / 0.9984 (split, pixel-MSE pick) (``scripts/bench_bitalloc.py --ssim``); see
            ``docs/METHODS.md`` for the measurement that decides ``plus``.
        content_metric: the content group's metric, ``ssim`` (the method's) or ``sqnr`` (when
            the table has no SSIM). The quality group always uses SQNR.
        normalize: ``group`` divides each group's losses by that group's total loss with every
            layer at its lowest candidate, so the two groups weigh the same; ``none`` adds raw
            losses, which with ``content_metric='sqnr'`` is the predicted total output noise.
        content_weight: factor on the content group's loss in the joint program.
        split_ratios: in split mode, the fractions of the budget above both groups' minimum
            that go to the content group; ``None`` (default) is an even grid over ``[0, 1]``
            (both ends included) of ``split_points[target]`` shares: the original's 10 for
            weights and 20 for activations (it also swept 10 average budgets; here the budget
            is given).
        split_points: grid sizes per target when ``split_ratios`` is ``None``.
        band: split mode: each group's size-weighted average bits must lie within ``+-band``
            of its share (the original's 0.02), so the whole allocation lands within ``+-band``
            average bits of the budget and may exceed it by up to ``band``; ``None`` makes the
            budget an inclusive upper bound for each group (and the total).
            When no share lands within the band (a small model's layers are too coarse), the
            shares become upper bounds and the result's status says so.
        weight_storage: how a weight width is counted in budgets: ``packed`` (each width at its
            own bits: what :mod:`quant.checkpoint` stores, 2-bit packed four per byte; the
            original's accounting and method ``paper``) or ``int4`` (2- and 3-bit weights at 4
            bits: what the CUDA path of :mod:`quant.deploy` keeps resident, which stores every
            2..4-bit weight as int4).
    """

    weight_candidates: dict[str, tuple[int, ...]] = dataclasses.field(
        default_factory=_default_weight)
    act_candidates: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=_default_act)
    mode: str = "split"
    content_metric: str = "ssim"
    normalize: str = "group"
    content_weight: float = 1.0
    split_ratios: tuple[float, ...] | None = None
    split_points: dict[str, int] = dataclasses.field(
        default_factory=lambda: {"weight": 10, "act": 20})
    band: float | None = 0.02
    weight_storage: str = "packed"

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
        if self.split_ratios is not None:
            ratios = tuple(float(r) for r in self.split_ratios)
            if not ratios or any(not 0.0 <= r <= 1.0 for r in ratios):
                raise MixDQError("split_ratios must be a non-empty list of numbers in [0, 1]")
            self.split_ratios = ratios
        points = dict(self.split_points)
        if set(points) != {"weight", "act"} or any(
                not isinstance(v, int) or v < 1 for v in points.values()):
            raise MixDQError("split_points must give a positive grid size for weight and act")
        self.split_points = points
        if self.band is not None and not (isinstance(self.band, (int, float))
                                          and 0 <= self.band < 1):
            raise MixDQError(f"band must be None or a number of bits in [0, 1), got "
                             f"{self.band!r}")
        if self.weight_storage not in WEIGHT_STORAGE:
            raise MixDQError(f"weight_storage must be one of {', '.join(WEIGHT_STORAGE)}, got "
                             f"{self.weight_storage!r}")

    def ratios(self, target: str) -> tuple[float, ...]:
        """The content group's budget shares the split mode tries for ``target``."""
        if self.split_ratios is not None:
            return self.split_ratios
        n = self.split_points[target]
        return (0.5,) if n == 1 else tuple(i / (n - 1) for i in range(n))

    def cost_bits(self, target: str, bits: int) -> int:
        """The bits a ``target`` value of width ``bits`` counts as in the budget."""
        if target == "weight" and self.weight_storage == "int4" and bits < 4:
            return 4
        return bits

    def candidates(self, target: str) -> dict[str, tuple[int, ...]]:
        """Candidate bits per group for ``weight`` or ``act``."""
        return self.weight_candidates if target == "weight" else self.act_candidates

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["weight_candidates"] = {k: list(v) for k, v in self.weight_candidates.items()}
        d["act_candidates"] = {k: list(v) for k, v in self.act_candidates.items()}
        d["split_ratios"] = None if self.split_ratios is None else list(self.split_ratios)
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
        return cls.from_dict(cls.read(path))

    @staticmethod
    def read(path: str | Path) -> dict:
        """The settings a YAML/JSON config file gives, as written (no defaults filled in)."""
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
        if not isinstance(data, Mapping):
            raise MixDQError(f"allocation config {path}: expected a mapping")
        return dict(data)
