"""Per-image metrics and image loading: PSNR and SSIM (torchmetrics), ImageReward (optional).

FID lives in :mod:`quant.bench.fid` and CLIPScore in :mod:`quant.bench.clipscore`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import MixDQError

PSNR_CAP_DB = 100.0  # identical images have infinite PSNR; cap it so means and JSON stay finite
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def load_image(path: str | Path, size: int | None = None) -> torch.Tensor:
    """One image as uint8 ``[3, H, W]``.

    Args:
        path: image file.
        size: if given, resize the shorter side to ``size`` (bicubic) and center-crop a square,
            the usual way to bring real photographs to the generated resolution.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size is not None and im.size != (size, size):
                w, h = im.size
                scale = size / min(w, h)
                im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))),
                               Image.BICUBIC)
                w, h = im.size
                left, top = (w - size) // 2, (h - size) // 2
                im = im.crop((left, top, left + size, top + size))
            array = np.asarray(im, dtype=np.uint8).copy()
    except (OSError, ValueError) as e:
        raise MixDQError(f"{path}: not a readable image ({e})") from e
    return torch.from_numpy(array).permute(2, 0, 1)


def load_images(paths: list[Path], size: int | None = None) -> torch.Tensor:
    """Images as one uint8 batch ``[N, 3, H, W]`` (all must have one size unless ``size``)."""
    images = [load_image(p, size) for p in paths]
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) > 1:
        raise MixDQError(f"images of different sizes in one set: {sorted(shapes)[:2]}")
    return torch.stack(images)


def list_images(folder: str | Path, what: str = "--real-images") -> list[Path]:
    """The image files in ``folder`` (sorted by name), at least two of them (FID needs two)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MixDQError(f"{what} {folder}: no such folder")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(paths) < 2:
        raise MixDQError(f"{what} {folder}: needs at least 2 images "
                         f"({', '.join(IMAGE_SUFFIXES)}), found {len(paths)}")
    return paths


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, 3, H, W]`` to float32 in [0, 1]."""
    return images.float() / 255.0


def psnr_per_image(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each image pair (uint8 ``[N, 3, H, W]``), capped at :data:`PSNR_CAP_DB`."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    values = peak_signal_noise_ratio(to_unit(preds), to_unit(target), data_range=1.0,
                                     reduction="none", dim=(1, 2, 3))
    return values.nan_to_num(posinf=PSNR_CAP_DB).clamp_max(PSNR_CAP_DB)


def ssim_per_image(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM of each image pair (uint8 ``[N, 3, H, W]``; Gaussian window 11, sigma 1.5)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    side = min(preds.shape[-2:])
    kernel = min(11, side - (1 - side % 2))  # odd and no larger than the image
    return structural_similarity_index_measure(to_unit(preds), to_unit(target), data_range=1.0,
                                               kernel_size=kernel, reduction="none")


@dataclasses.dataclass
class ImageRewardModel:
    """ImageReward, when the ``image-reward`` package and its weights are available.

    Attributes:
        model: the loaded ImageReward model, or ``None``.
        note: why it is unavailable (shown in the report instead of a number).
    """

    model: Any = None
    note: str = ""

    @classmethod
    def load(cls, device: str | torch.device = "cpu", enabled: bool = True) -> "ImageRewardModel":
        """Load ``ImageReward-v1.0`` if the package is installed; otherwise say why not."""
        if not enabled:
            return cls(note="n/a (disabled)")
        try:
            import ImageReward as reward
        except ImportError:
            return cls(note="n/a (package not installed)")
        try:
            return cls(model=reward.load("ImageReward-v1.0", device=str(device)))
        except Exception as e:  # missing weights offline and the like: the benchmark goes on
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return cls(note=f"n/a (could not load ImageReward-v1.0: {first})")

    @property
    def available(self) -> bool:
        return self.model is not None

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompts: list[str]) -> list[float]:
        """ImageReward score of each uint8 image ``[N, 3, H, W]`` for its prompt."""
        from PIL import Image

        scores = []
        for image, prompt in zip(images, prompts):
            pil = Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
            value = self.model.score(prompt, [pil])
            scores.append(float(value[0] if isinstance(value, (list, tuple)) else value))
        return scores
