"""A small CNN that reads every attribute of a shapes image: the judge of generated content.

Its predictions give the **content accuracy** of a generated image (all four attributes match
the caption), and its penultimate features are the embedding in which the proxy's FID is
measured (the role Inception-v3 plays for real images).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..errors import MixDQError
from .scenes import ATTRIBUTES, ShapesDataset, Scene


class AttributeClassifier(nn.Module):
    """Three conv stages (32 -> 16 -> 8 -> 4 px), a feature layer, one head per attribute.

    Args:
        width: channels of the first stage (doubled in the next two).
        features: size of the penultimate feature vector (the FID embedding).
    """

    def __init__(self, width: int = 16, features: int = 128):
        super().__init__()
        self.width, self.num_features = width, features
        chans = [3, width, 2 * width, 2 * width]
        layers = []
        for cin, cout in zip(chans, chans[1:]):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                       nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                       nn.MaxPool2d(2)]
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(chans[-1] * 16, features)
        self.heads = nn.ModuleDict({name: nn.Linear(features, len(values))
                                    for name, values in ATTRIBUTES.items()})

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``[B, features]`` of images ``[B, 3, 32, 32]`` in [0, 1]."""
        if images.shape[-2:] != (32, 32):
            images = F.interpolate(images, size=(32, 32), mode="bilinear", antialias=True,
                                   align_corners=False)
        x = self.body(images - 0.5)
        return F.relu(self.fc(x.flatten(1)))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per attribute."""
        feats = self.features(images)
        return {name: head(feats) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch: int = 256) -> list[Scene]:
        """The scene each image shows, according to the classifier."""
        self.eval()
        out = []
        for chunk in images.split(batch):
            logits = self(chunk.float())
            idx = {name: lg.argmax(1).tolist() for name, lg in logits.items()}
            out += [Scene.from_labels({n: idx[n][i] for n in idx}) for i in range(len(chunk))]
        return out

    def save(self, path: str | Path) -> None:
        """Save to one safetensors file (sizes in its metadata), atomically."""
        from safetensors.torch import save_file

        from ..utils.io import atomic_path

        meta = {"format": "mixdq-proxy-classifier",
                "config": json.dumps({"width": self.width, "features": self.num_features})}
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in self.state_dict().items()}, tmp,
                      metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> "AttributeClassifier":
        """Load a classifier written by :meth:`save`.

        Raises:
            MixDQError: the file is missing or is not a proxy classifier.
        """
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise MixDQError(f"proxy classifier {path} is missing; train it with "
                             f"`python scripts/train_proxy.py`")
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != "mixdq-proxy-classifier":
            raise MixDQError(f"{path} is not a proxy classifier (format "
                             f"{meta.get('format')!r})")
        model = cls(**json.loads(meta["config"]))
        model.load_state_dict(load_file(str(path)))
        return model.eval()


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    """How the shipped classifier was trained."""

    seed: int = 1
    steps: int = 400
    batch: int = 64
    lr: float = 2e-3
    noise: float = 0.05  # augmentation: additive noise up to this std, and a light blur

    def __post_init__(self):
        if self.steps < 1 or self.batch < 2 or self.lr <= 0:
            raise MixDQError("classifier steps and lr must be positive, batch at least 2")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ClassifierConfig":
        return cls(**data)


def _augment(images: torch.Tensor, gen: torch.Generator, noise: float) -> torch.Tensor:
    # Generated images are a little noisy and soft; the judge must not depend on crisp pixels.
    b = images.shape[0]
    blur = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    mix = torch.rand(b, 1, 1, 1, generator=gen) * 0.7
    images = images + mix * (blur - images)
    std = torch.rand(b, 1, 1, 1, generator=gen) * noise
    return (images + std * torch.randn(images.shape, generator=gen)).clamp(0, 1)


def train_classifier(cfg: ClassifierConfig = ClassifierConfig()) -> AttributeClassifier:
    """Train an :class:`AttributeClassifier` on every scene of the dataset (deterministic).

    Returns:
        The trained classifier in eval mode.
    """
    torch.manual_seed(cfg.seed)
    model = AttributeClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps)
    data = ShapesDataset(seed=cfg.seed, split="all")
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    for step in tqdm(range(cfg.steps), desc="classifier", mininterval=5):
        images, captions = data.batch(step * cfg.batch, cfg.batch)
        labels = [Scene.from_caption(c).labels() for c in captions]
        logits = model(_augment(images, gen, cfg.noise))
        loss = sum(F.cross_entropy(lg, torch.tensor([lab[name] for lab in labels]))
                   for name, lg in logits.items())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()
