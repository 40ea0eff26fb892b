"""The per-layer bit map: layer name -> weight bits and activation bits.

It is the output of bit allocation and the input of quantization, saved as one JSON or YAML file::

    {"format": "mixdq-bitmap", "version": 1,
     "layers": {"conv_in": {"w": 8, "a": null}, "down_blocks.1...to_q": {"w": 4, "a": 8}, ...}}

``null`` means that side of the layer stays in floating point.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterable, Mapping

from .errors import MixDQError
from .utils.io import write_text

WEIGHT_BITS = (2, 3, 4, 5, 6, 7, 8)
ACT_BITS = (4, 5, 6, 7, 8)
FORMAT = "mixdq-bitmap"
VERSION = 1


@dataclasses.dataclass(frozen=True)
class LayerBits:
    """Bits of one layer; ``None`` keeps that side in floating point."""

    w: int | None = 8
    a: int | None = 8

    def __post_init__(self):
        check_bits(self.w, "weight")
        check_bits(self.a, "activation")


def check_bits(bits: int | None, target: str, layer: str | None = None) -> None:
    """Raise :class:`MixDQError` if ``bits`` is not supported for ``target`` (weight/activation)."""
    allowed = WEIGHT_BITS if target == "weight" else ACT_BITS
    if bits is None:
        return
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in allowed:
        where = f" for layer {layer}" if layer else ""
        raise MixDQError(f"unsupported {target} bit width {bits!r}{where}; "
                         f"supported: {', '.join(map(str, allowed))} or null (floating point)")


@dataclasses.dataclass
class BitMap:
    """Per-layer bits, keyed by the UNet's module names."""

    layers: dict[str, LayerBits]

    @classmethod
    def uniform(cls, names: Iterable[str], w: int | None, a: int | None) -> "BitMap":
        """The same bits for every layer in ``names`` (presets such as W8A8, W4A8)."""
        bits = LayerBits(w, a)
        return cls({name: bits for name in names})

    @classmethod
    def preset(cls, names: Iterable[str], preset: str) -> "BitMap":
        """A uniform map from a name like ``"W8A8"``, ``"W4A8"`` or ``"W8A16"`` (A16 = float)."""
        import re

        m = re.fullmatch(r"[wW](\d+|16|fp)[aA](\d+|16|fp)", preset.strip())
        if not m:
            raise MixDQError(f"unknown preset {preset!r}; use the form W8A8, W4A8, W8A16")
        w, a = (None if g in ("16", "fp") else int(g) for g in m.groups())
        return cls.uniform(names, w, a)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION,
                "layers": {k: {"w": v.w, "a": v.a} for k, v in self.layers.items()}}

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "bit map") -> "BitMap":
        if not isinstance(data, Mapping) or not isinstance(data.get("layers"), Mapping):
            raise MixDQError(f"{source}: not a mixdq bit map (expected a 'layers' mapping)")
        if data.get("format", FORMAT) != FORMAT:
            raise MixDQError(f"{source}: format {data.get('format')!r} is not {FORMAT!r}")
        if data.get("version", VERSION) != VERSION:
            raise MixDQError(f"{source}: bit map version {data.get('version')!r} is not "
                             f"supported (this mixdq reads version {VERSION})")
        layers = {}
        for name, entry in data["layers"].items():
            if not isinstance(entry, Mapping) or set(entry) - {"w", "a"}:
                raise MixDQError(f"{source}: layer {name}: expected {{'w': bits, 'a': bits}}, "
                                 f"got {entry!r}")
            check_bits(entry.get("w"), "weight", name)
            check_bits(entry.get("a"), "activation", name)
            layers[name] = LayerBits(entry.get("w"), entry.get("a"))
        return cls(layers)

    def dumps(self, path: str | Path = "bitmap.json") -> str:
        """The text :meth:`save` writes: YAML for a ``.yaml``/``.yml`` ``path``, else JSON."""
        if Path(path).suffix in (".yaml", ".yml"):
            import yaml

            return yaml.safe_dump(self.to_dict(), sort_keys=False)
        return json.dumps(self.to_dict(), indent=1) + "\n"

    def save(self, path: str | Path) -> None:
        """Write the map atomically; ``.yaml``/``.yml`` gives YAML, anything else JSON."""
        write_text(path, self.dumps(path))

    @classmethod
    def load(cls, path: str | Path) -> "BitMap":
        path = Path(path)
        if not path.is_file():
            raise MixDQError(f"bit map {path}: no such file")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise MixDQError(f"bit map {path}: not UTF-8 text") from None
        try:
            if path.suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as e:  # both parsers raise their own error types
            raise MixDQError(f"bit map {path}: malformed ({str(e).splitlines()[0]})") from None
        return cls.from_dict(data, source=f"bit map {path}")

    def validate(self, layer_names: Iterable[str]) -> None:
        """Check the map against a model's quantizable layers.

        Raises:
            MixDQError: naming the first unknown layer, or the first layer missing from the map.
        """
        names = list(layer_names)
        known = set(names)
        for name in self.layers:
            if name not in known:
                raise MixDQError(f"bit map names unknown layer {name!r} (not a Linear/Conv2d "
                                 f"of this UNet)")
        for name in names:
            if name not in self.layers:
                raise MixDQError(f"layer {name!r} is missing from the bit map")

    def __getitem__(self, name: str) -> LayerBits:
        return self.layers[name]

    def __len__(self) -> int:
        return len(self.layers)
