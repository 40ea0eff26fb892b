"""The two sensitivity metrics: output SQNR (quality) and image SSIM (content).

SSIM follows the original: images at the decoded resolution (``size=None``, method ``paper``)
and a uniform window one pixel short of the side (the original's 511 for 512 px; rounded down to
odd for an odd side): nearly global means, contrasts and correlation. At full resolution those
statistics still see blur and texture (a 5x5 blur of a 512 px image scores about 0.72).
Optionally (``size=N``) both images are first area-downsampled by an integer factor to at most
``N`` pixels; that is cheaper but blind to blur (the same blur then scores 0.999), so it is not
the default.

:func:`uniform_ssim` gives torchmetrics' uniform-kernel SSIM numbers (reflection padding, the
map averaged over every pixel) from integral images: about 0.1 s per 512 px image on one CPU
core whatever the window. SSIM is computed in float32 on images in ``[0, 1]``, which
resolves differences down to about 1e-6.
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


def uniform_ssim(images: torch.Tensor, refs: torch.Tensor, window: int,
                 data_range: float = 1.0) -> torch.Tensor:
    """Per-image SSIM with a uniform ``window`` x ``window`` window.

    The same numbers as torchmetrics' ``structural_similarity_index_measure(gaussian_kernel=False,
    kernel_size=window)`` (what the original's window-511 SSIM is): both images are
    reflection-padded by ``(window - 1) / 2``, the windowed means, variances and covariance are
    taken at every pixel (population statistics, ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``) and
    the SSIM map is averaged over pixels and channels. The window sums come from integral images
    (float64 running sums; the statistics are then float32), so a 511 window costs no more than
    a small one.

    Args:
        images, refs: ``[N, C, H, W]``.
        window: odd, smaller than ``2 * min(H, W)``.

    Returns:
        ``[N]`` float32 SSIM values.
    """
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    x, y = images.float(), refs.float()
    stacked = torch.cat([x, y, x * x, y * y, x * y])
    pad = (window - 1) // 2
    stacked = F.pad(stacked, (pad, pad, pad, pad), mode="reflect").double()
    sums = F.pad(stacked.cumsum(-1).cumsum(-2), (1, 0, 1, 0))
    box = (sums[..., window:, window:] - sums[..., :-window, window:]
           - sums[..., window:, :-window] + sums[..., :-window, :-window])
    mu_x, mu_y, xx, yy, xy = (box / window ** 2).float().split(x.shape[0])
    var_x = (xx - mu_x * mu_x).clamp(min=0.0)
    var_y = (yy - mu_y * mu_y).clamp(min=0.0)
    cov = xy - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return ssim.flatten(1).mean(1)


@dataclasses.dataclass(frozen=True)
class SsimConfig:
    """How images are compared.

    Args:
        size: the long side, in pixels, images are area-downsampled to (by an integer factor)
            before SSIM; ``None`` (the original's) keeps the decoded resolution.
        window: SSIM's uniform window; ``None`` is near-global (the compared side minus one,
            rounded down to odd: 511 for 512 px).
    """

    size: int | None = None
    window: int | None = None

    def __post_init__(self):
        if self.size is not None and (not isinstance(self.size, int) or self.size < 8):
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
        self.factor = (1 if config.size is None
                       else max(1, math.ceil(max(height, width) / config.size)))
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
        refs = self.references.to(images.device)[index.to(images.device)]
        images = self._shrink(to_uint8_levels(images))
        return uniform_ssim(images, refs, self.window)

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
