"""The two sensitivity metrics: output SQNR (quality) and image SSIM (content).

SSIM follows the original's near-global window: both images are area-downsampled by an integer
factor to at most ``size`` pixels on the long side (default 32: 512 px SDXL images by 16, the
64 px ``tiny`` images by 2), then torchmetrics' SSIM runs with a uniform window one pixel short
of the side (31 for 32 px, the original's 511 for 512 px), which leaves 2x2 window positions:
global means, contrasts and correlation, i.e. composition and colour rather than texture. The
downsampling keeps the cost of the huge window small (torchmetrics evaluates it at every pixel
before cropping): about 50 ms per 8 images on one CPU core instead of about 1 s at 64 px.
SSIM is computed in float32 (float64 convolutions are ~40x slower on CPU), which resolves
differences down to about 1e-6.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from ..errors import MixDQError


class SqnrMeter:
    """Accumulates ``10 log10(sum y_ref^2 / sum (y - y_ref)^2)`` over batches (float64).

    Sums stay on the tensors' device until :meth:`value`, so batches do not synchronize.
    """

    def __init__(self):
        self.signal = None
        self.noise = None
        self.finite = True

    def add(self, y: torch.Tensor, ref: torch.Tensor) -> None:
        y, ref = y.double(), ref.to(y.device, torch.float64)
        signal, noise = ref.square().sum(), (y - ref).square().sum()
        self.signal = signal if self.signal is None else self.signal + signal
        self.noise = noise if self.noise is None else self.noise + noise

    def value(self) -> float:
        """The SQNR in dB: ``inf`` for an exact match, ``-inf`` for a non-finite output."""
        if self.signal is None:
            raise MixDQError("SQNR of no batches")
        signal, noise = float(self.signal), float(self.noise)
        if not math.isfinite(noise):
            return -math.inf
        if noise == 0.0:
            return math.inf
        return 10.0 * math.log10(signal / noise)


def to_uint8_levels(images: torch.Tensor) -> torch.Tensor:
    """Round images in ``[0, 1]`` to the 256 levels a PNG stores (NaN counts as black).

    Same rounding as diffusers' ``numpy_to_pil`` (``round(x * 255)``, half to even).
    """
    images = torch.nan_to_num(images.float(), nan=0.0).clamp(0, 1)
    return (images * 255).round() / 255


@dataclasses.dataclass(frozen=True)
class SsimConfig:
    """How images are compared.

    Args:
        size: the long side, in pixels, images are area-downsampled to (by an integer factor)
            before SSIM.
        window: SSIM's uniform window; ``None`` is near-global (the downsampled side minus one,
            rounded down to odd).
    """

    size: int = 32
    window: int | None = None

    def __post_init__(self):
        if not isinstance(self.size, int) or self.size < 8:
            raise MixDQError(f"SSIM size must be an integer >= 8 pixels, got {self.size!r}")
        if self.window is not None and (self.window < 3 or self.window % 2 == 0):
            raise MixDQError(f"SSIM window must be odd and >= 3, got {self.window}")


class SsimMeter:
    """Mean SSIM of generated images against fixed reference images.

    Args:
        references: ``[N, 3, H, W]`` in ``[0, 1]`` (the reference PNGs), indexed by prompt.
        config: downsampling and window.
    """

    def __init__(self, references: torch.Tensor, config: SsimConfig = SsimConfig()):
        height, width = references.shape[-2:]
        self.factor = max(1, math.ceil(max(height, width) / config.size))
        self.references = self._shrink(references.float())
        side = min(self.references.shape[-2:])
        window = config.window or (side - 1 if side % 2 == 0 else side - 2)
        if window > side:
            raise MixDQError(f"SSIM window {window} exceeds the {side} px images it compares")
        self.window = window
        self.total = 0.0
        self.count = 0

    def _shrink(self, images: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(images, self.factor) if self.factor > 1 else images

    def scores(self, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Per-image SSIM of ``images`` against the references of prompts ``index``."""
        from torchmetrics.functional.image import structural_similarity_index_measure

        refs = self.references.to(images.device)[index.to(images.device)]
        images = self._shrink(to_uint8_levels(images))
        return structural_similarity_index_measure(
            images, refs, gaussian_kernel=False,
            kernel_size=self.window, data_range=1.0, reduction="none")

    def add(self, images: torch.Tensor, index: torch.Tensor) -> None:
        scores = self.scores(images, index).double()
        self.total += float(scores.sum())
        self.count += scores.numel()

    def value(self) -> float:
        if not self.count:
            raise MixDQError("SSIM of no images")
        return self.total / self.count


def load_references(calib) -> torch.Tensor:
    """The calibration folder's reference PNGs as a ``[N, 3, H, W]`` float tensor in ``[0, 1]``."""
    import numpy as np

    arrays = [np.asarray(image, dtype=np.float32) / 255.0 for image in calib.reference_images()]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
