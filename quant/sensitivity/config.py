"""What a sensitivity run measures, as one validated, serializable object."""

from __future__ import annotations

import dataclasses
import re

from ..bitmap import check_bits
from ..errors import MixDQError
from .groups import GroupRule
from .metrics import SsimConfig
from .replay import DEFAULT_CONTAINERS

SSIM_SCOPES = ("content", "all", "none")


@dataclasses.dataclass(frozen=True)
class SensitivityConfig:
    """Settings of a sensitivity run.

    Args:
        weight_bits: candidate weight bit widths (2..8).
        act_bits: candidate activation bit widths (4..8).
        groups: the content/quality rule.
        ssim: which layers also get the content metric: ``content`` (MixDQ), ``all``, ``none``.
        ssim_size: SSIM compares images downsampled to this long side (see
            :mod:`quant.sensitivity.metrics`).
        batch_size: calibration samples per UNet call.
        protect_fraction: share of activation layers in the protect list (at least one).
        weight_scale: weight scale method of the quantized layers (``mse`` or ``minmax``).
        bos: BOS-aware quantization of cross-attention key/value inputs.
        momentum: moving-average momentum of the activation ranges.
        containers: list names whose items are block-caching units (see
            :mod:`quant.sensitivity.replay`; ``TOP_LEVEL`` caches block inputs only).
        layers: optional regular expression; only layers whose name it matches (``re.search``)
            are measured.
        reuse_first_step: multi-step/guided SSIM: take the first step's UNet output from the
            block-cached pass instead of recomputing it (see :mod:`quant.sensitivity.decode`).
    """

    weight_bits: tuple[int, ...] = (2, 4, 8)
    act_bits: tuple[int, ...] = (4, 8)
    groups: GroupRule = GroupRule()
    ssim: str = "content"
    ssim_size: int = 32
    batch_size: int = 8
    protect_fraction: float = 0.01
    weight_scale: str = "mse"
    bos: bool = True
    momentum: float = 0.95
    containers: tuple[str, ...] = DEFAULT_CONTAINERS
    layers: str | None = None
    reuse_first_step: bool = True

    def __post_init__(self):
        for field, target in (("weight_bits", "weight"), ("act_bits", "activation")):
            bits = tuple(getattr(self, field))
            if len(set(bits)) != len(bits):
                raise MixDQError(f"{field} lists a bit width twice: {bits}")
            for b in bits:
                check_bits(b, target)
            object.__setattr__(self, field, tuple(sorted(bits)))
        if not self.weight_bits and not self.act_bits:
            raise MixDQError("no candidate bit widths to measure")
        if self.ssim not in SSIM_SCOPES:
            raise MixDQError(f"ssim must be one of {', '.join(SSIM_SCOPES)}, got {self.ssim!r}")
        SsimConfig(self.ssim_size)
        if not isinstance(self.batch_size, int) or self.batch_size <= 0:
            raise MixDQError(f"batch size must be a positive integer, got {self.batch_size!r}")
        if not 0 < self.protect_fraction <= 1:
            raise MixDQError(f"protect fraction must be in (0, 1], got {self.protect_fraction}")
        if self.weight_scale not in ("mse", "minmax"):
            raise MixDQError(f"weight scale must be 'mse' or 'minmax', got {self.weight_scale!r}")
        if not 0 <= self.momentum < 1:
            raise MixDQError(f"momentum must be in [0, 1), got {self.momentum}")
        object.__setattr__(self, "containers", tuple(self.containers))
        if self.layers is not None:
            try:
                re.compile(self.layers)
            except re.error as e:
                raise MixDQError(f"--layers {self.layers!r} is not a regular expression: "
                                 f"{e}") from None

    @property
    def ssim_config(self) -> SsimConfig:
        return SsimConfig(self.ssim_size)

    def evaluations(self) -> list[tuple[str, int]]:
        """The ``(target, bits)`` measured for every layer, in table order."""
        return ([("weight", b) for b in self.weight_bits] + [("act", b) for b in self.act_bits])

    def wants_ssim(self, group: str) -> bool:
        return self.ssim == "all" or (self.ssim == "content" and group == "content")

    def select(self, names: list[str]) -> list[str]:
        """The layers to measure among ``names`` (all, or those ``layers`` matches).

        Raises:
            MixDQError: the pattern matches no layer.
        """
        if self.layers is None:
            return list(names)
        chosen = [n for n in names if re.search(self.layers, n)]
        if not chosen:
            raise MixDQError(f"--layers {self.layers!r} matches none of the {len(names)} layers")
        return chosen

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["groups"] = self.groups.to_dict()
        out["weight_bits"], out["act_bits"] = list(self.weight_bits), list(self.act_bits)
        out["containers"] = list(self.containers)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "SensitivityConfig":
        data = dict(data)
        if "groups" in data:
            data["groups"] = GroupRule.from_dict(data["groups"])
        for key in ("weight_bits", "act_bits", "containers"):
            if key in data:
                data[key] = tuple(data[key])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MixDQError(f"unknown sensitivity settings: {', '.join(unknown)}")
        return cls(**data)
