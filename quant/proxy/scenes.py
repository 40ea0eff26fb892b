"""A procedural text-to-image dataset: one coloured shape on a plain background, and its caption.

Every sample is a pure function of ``(seed, index)``: nothing is downloaded and any number of
samples can be drawn. A scene has four attributes, each stated by its caption::

    "a large red circle at the top left"      (size, colour, shape, position)
    "a small blue triangle in the center"

The image shows exactly that, with small nuisance variation (position and size jitter, colour
shade, background grey) so that a generator has something to vary and FID has something to
measure. A fixed tenth of the attribute combinations is held out of training
(:data:`HELD_OUT`): captions the generator never saw, built from words it did see.
"""

from __future__ import annotations

import dataclasses
import itertools
import re

import numpy as np
import torch

from ..errors import MixDQError

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.15, 0.15),
    "green": (0.15, 0.75, 0.20),
    "blue": (0.20, 0.30, 0.95),
    "yellow": (0.95, 0.85, 0.10),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Half-extent of the shape as a fraction of the image side.
SIZES: dict[str, float] = {"small": 0.15, "large": 0.24}
# Centre of the shape as (x, y) fractions of the image side.
POSITIONS: dict[str, tuple[float, float]] = {
    "top left": (0.28, 0.28),
    "top right": (0.72, 0.28),
    "bottom left": (0.28, 0.72),
    "bottom right": (0.72, 0.72),
    "center": (0.50, 0.50),
}
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS), "shape": SHAPES, "size": tuple(SIZES), "position": tuple(POSITIONS),
}

_CAPTION = re.compile(r"^a (?P<size>\w+) (?P<colour>\w+) (?P<shape>\w+) "
                      r"(?:at the (?P<corner>top left|top right|bottom left|bottom right)"
                      r"|in the (?P<centre>center))$")


@dataclasses.dataclass(frozen=True)
class Scene:
    """The content of one image: what its caption states."""

    colour: str
    shape: str
    size: str
    position: str

    def __post_init__(self):
        for name, values in ATTRIBUTES.items():
            if getattr(self, name) not in values:
                raise MixDQError(f"unknown {name} {getattr(self, name)!r}; "
                                 f"use one of {', '.join(values)}")

    @property
    def caption(self) -> str:
        where = "in the center" if self.position == "center" else f"at the {self.position}"
        return f"a {self.size} {self.colour} {self.shape} {where}"

    @classmethod
    def from_caption(cls, caption: str) -> "Scene":
        """Parse a caption of this dataset's grammar back into its scene.

        Raises:
            MixDQError: the caption does not follow the grammar or names an unknown attribute.
        """
        m = _CAPTION.match(" ".join(caption.lower().split()))
        if m is None:
            raise MixDQError(f"caption {caption!r} does not follow the proxy grammar "
                             f"'a SIZE COLOUR SHAPE at the top left|... / in the center'")
        return cls(colour=m["colour"], shape=m["shape"], size=m["size"],
                   position=m["corner"] or m["centre"])

    def labels(self) -> dict[str, int]:
        """Each attribute as the index of its value in :data:`ATTRIBUTES`."""
        return {name: values.index(getattr(self, name)) for name, values in ATTRIBUTES.items()}

    @classmethod
    def from_labels(cls, labels: dict[str, int]) -> "Scene":
        return cls(**{name: ATTRIBUTES[name][int(labels[name])] for name in ATTRIBUTES})


def all_scenes() -> list[Scene]:
    """Every attribute combination (120), in a fixed order."""
    return [Scene(c, s, z, p) for c, s, z, p in itertools.product(*ATTRIBUTES.values())]


def _held_out(scene: Scene) -> bool:
    # A fixed diagonal through the attribute grid: every single attribute value, and most pairs
    # of values, still occur in training, but these exact combinations never do.
    lab = scene.labels()
    return (lab["colour"] + 2 * lab["shape"] + 3 * lab["size"] + 5 * lab["position"]) % 10 == 0


HELD_OUT: tuple[Scene, ...] = tuple(s for s in all_scenes() if _held_out(s))
TRAIN: tuple[Scene, ...] = tuple(s for s in all_scenes() if not _held_out(s))
SPLITS = {"train": TRAIN, "heldout": HELD_OUT, "all": TRAIN + HELD_OUT}


def _signed_distance(shape: str, xs: torch.Tensor, ys: torch.Tensor, cx: float, cy: float,
                     r: float) -> torch.Tensor:
    """Signed distance in pixels (negative inside) to the shape's outline."""
    dx, dy = xs - cx, ys - cy
    if shape == "circle":
        return torch.sqrt(dx * dx + dy * dy) - r
    if shape == "square":
        return torch.maximum(dx.abs(), dy.abs()) - 0.9 * r  # about the circle's area
    # Upward isosceles triangle (base 2.2 r, height 2 r, apex at cy - 1.1 r), as the max over its
    # three edge half-planes: exact inside a convex polygon, a lower bound outside, which is
    # enough for anti-aliasing.
    height = 2.0 * r
    base, half = cy + 0.45 * height, 1.1 * r
    edge = float(np.hypot(half, height))
    left = (-height * (xs - cx + half) - half * (ys - base)) / edge
    right = (height * (xs - cx - half) - half * (ys - base)) / edge
    return torch.maximum(torch.maximum(left, right), ys - base)


def render(scene: Scene, rng: np.random.Generator, resolution: int = 32) -> torch.Tensor:
    """Draw ``scene`` with nuisance variation drawn from ``rng``.

    Args:
        scene: what to draw.
        rng: source of the jitter (position, size, colour shade, background).
        resolution: image side in pixels.

    Returns:
        A float32 tensor ``[3, resolution, resolution]`` in [0, 1].
    """
    n = resolution
    jitter = rng.uniform(-1, 1, size=6)
    cx, cy = (np.asarray(POSITIONS[scene.position]) + 0.04 * jitter[:2]) * n
    r = SIZES[scene.size] * (1 + 0.1 * jitter[2]) * n
    colour = torch.tensor(COLOURS[scene.colour]) * (1 + 0.06 * jitter[3])
    background = 0.12 + 0.08 * jitter[4]
    coords = torch.arange(n, dtype=torch.float32) + 0.5
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    coverage = (0.5 - _signed_distance(scene.shape, xs, ys, float(cx), float(cy), float(r)))
    coverage = coverage.clamp(0, 1)
    image = background + coverage * (colour.clamp(0, 1)[:, None, None] - background)
    return image.clamp(0, 1).float()


@dataclasses.dataclass(frozen=True)
class ShapesDataset:
    """Deterministic, unbounded samples: sample ``i`` depends only on ``(seed, split, i)``.

    Args:
        seed: dataset seed.
        split: ``"train"`` (scenes outside :data:`HELD_OUT`), ``"heldout"`` or ``"all"``.
        resolution: image side in pixels.
    """

    seed: int = 0
    split: str = "train"
    resolution: int = 32

    def __post_init__(self):
        if self.split not in SPLITS:
            raise MixDQError(f"unknown split {self.split!r}; use one of {', '.join(SPLITS)}")
        if self.resolution < 8:
            raise MixDQError(f"resolution {self.resolution} is too small (at least 8 px)")

    @property
    def scenes(self) -> tuple[Scene, ...]:
        return SPLITS[self.split]

    def _rng(self, index: int) -> np.random.Generator:
        split_id = tuple(SPLITS).index(self.split)
        return np.random.default_rng([self.seed, split_id, index])

    def scene(self, index: int) -> Scene:
        """The scene of sample ``index`` (cheap: no rendering)."""
        return self.scenes[int(self._rng(index).integers(len(self.scenes)))]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        rng = self._rng(index)
        scene = self.scenes[int(rng.integers(len(self.scenes)))]
        return render(scene, rng, self.resolution), scene.caption

    def batch(self, start: int, size: int) -> tuple[torch.Tensor, list[str]]:
        """Samples ``start .. start + size - 1`` stacked: images ``[size, 3, H, W]``, captions."""
        items = [self[i] for i in range(start, start + size)]
        return torch.stack([im for im, _ in items]), [c for _, c in items]


def render_caption(caption: str, seed: int, resolution: int = 32) -> torch.Tensor:
    """A real dataset image for ``caption``, its jitter drawn from ``seed``."""
    return render(Scene.from_caption(caption), np.random.default_rng([seed, 99]), resolution)
