"""Fréchet Inception Distance: feature statistics, the distance, and the Inception network.

The network is the one torchmetrics' ``FrechetInceptionDistance`` uses by default (torch-fidelity's
TensorFlow-compatible Inception v3, 2048-d pool features, weights
``weights-inception-2015-12-05-6726825d.pth``). Any ``nn.Module`` that maps uint8 images
``[N, 3, H, W]`` to features ``[N, d]`` can stand in for it (torchmetrics allows the same), which
is how tests run offline. Statistics are accumulated in float64 and the distance is computed here
from them, so one set of features (the full-precision images, the real images) serves every
variant; ``tests/bench/test_fid.py`` checks the result against torchmetrics' own FID.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from ..errors import MixDQError

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
NO_WEIGHTS_HINT = ("pass --inception PATH (torch-fidelity's " + INCEPTION_FILE + ", the file "
                   "torchmetrics downloads, or a TorchScript feature extractor), --inception "
                   "tiny (random stand-in, for trying things out) or --no-fid")


@dataclasses.dataclass
class FeatureStats:
    """Running sums of features: enough for their mean and covariance (float64)."""

    n: int = 0
    total: torch.Tensor | None = None
    outer: torch.Tensor | None = None

    def update(self, features: torch.Tensor) -> None:
        """Add a batch of features ``[N, d]``."""
        f = features.detach().to("cpu", torch.float64).reshape(features.shape[0], -1)
        if self.total is None:
            self.total = torch.zeros(f.shape[1], dtype=torch.float64)
            self.outer = torch.zeros(f.shape[1], f.shape[1], dtype=torch.float64)
        if f.shape[1] != self.total.shape[0]:
            raise MixDQError(f"feature size changed from {self.total.shape[0]} to {f.shape[1]}")
        self.n += f.shape[0]
        self.total += f.sum(0)
        self.outer += f.T @ f

    def mean_cov(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``[d]`` and unbiased covariance ``[d, d]`` of the features seen so far."""
        if self.n < 2:
            raise MixDQError(f"FID needs at least 2 images per set, got {self.n}")
        mean = self.total / self.n
        cov = (self.outer - self.n * torch.outer(mean, mean)) / (self.n - 1)
        return mean, cov


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix (tiny negative eigenvalues,
    rounding noise of a rank-deficient covariance, are treated as 0)."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor,
                     sigma2: torch.Tensor) -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    ``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))``, where the last
    trace is computed as ``tr((s1^(1/2) sigma2 s1^(1/2))^(1/2))``, the same number from a
    symmetric matrix, which keeps it real and stable when the covariances are singular (fewer
    images than feature dimensions).

    Returns:
        The distance as a Python float (float64 arithmetic).
    """
    mu1, mu2, sigma1, sigma2 = (t.to(torch.float64) for t in (mu1, mu2, sigma1, sigma2))
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    values = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0)
    distance = ((mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace()
                - 2 * values.sqrt().sum())
    return float(distance.clamp_min(0))


def fid_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    """FID between two feature sets."""
    return frechet_distance(*a.mean_cov(), *b.mean_cov())


@torch.no_grad()
def extract_features(extractor: nn.Module, images: torch.Tensor, device) -> torch.Tensor:
    """Run ``extractor`` on uint8 images ``[N, 3, H, W]`` and return float features ``[N, d]``."""
    features = extractor(images.to(device))
    if isinstance(features, (tuple, list)):
        features = features[0]
    return features.reshape(images.shape[0], -1).float()


class TorchScriptExtractor(nn.Module):
    """A TorchScript feature network saved with ``torch.jit.save``: uint8 ``[N, 3, H, W]`` in.

    Networks whose ``forward`` takes ``return_features`` (the StyleGAN-style Inception export)
    are asked for features rather than logits.
    """

    def __init__(self, module: torch.jit.ScriptModule):
        super().__init__()
        self.net = module
        try:
            names = [a.name for a in module.forward.schema.arguments]
        except (AttributeError, RuntimeError):
            names = []
        self.kwargs = {"return_features": True} if "return_features" in names else {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images, **self.kwargs)


def _torch_fidelity_inception(weights: Path) -> nn.Module:
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
        import torch_fidelity  # noqa: F401
    except ImportError:
        raise MixDQError(f"--inception {weights}: this Inception state dict needs the "
                         f"torch-fidelity package (pip install torch-fidelity), or pass a "
                         f"TorchScript feature extractor, or --no-fid") from None
    try:
        return NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                  feature_extractor_weights_path=str(weights))
    except Exception as e:  # a wrong file surfaces as any of several torch errors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MixDQError(f"--inception {weights}: not torch-fidelity's Inception weights "
                         f"({first})") from e


def default_inception_path() -> Path:
    """Where torchmetrics/torch-fidelity cache the Inception weights after a download."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def load_inception(path: str | None = None) -> nn.Module:
    """The FID feature network, from local files only.

    Args:
        path: torch-fidelity's Inception state dict (``.pth``), a TorchScript feature extractor,
            ``"tiny"`` for the built-in random stand-in (:mod:`quant.bench.tiny_nets`), or
            ``None`` to look for the weights in the torch hub cache.

    Returns:
        A module mapping uint8 images ``[N, 3, H, W]`` (any size; Inception resizes to 299) to
        features ``[N, d]``.

    Raises:
        MixDQError: missing file, unusable file, or no weights available offline (the message
            names ``--inception`` and ``--no-fid``).
    """
    if path is None:
        cached = default_inception_path()
        if not cached.is_file():
            raise MixDQError(f"FID: no Inception weights offline (not in {cached.parent}); "
                             f"{NO_WEIGHTS_HINT}")
        return _torch_fidelity_inception(cached)
    if path == "tiny":
        from .tiny_nets import TinyFeatureNet

        return TinyFeatureNet()
    weights = Path(path).expanduser()
    if not weights.is_file():
        raise MixDQError(f"--inception {path}: no such file")
    try:
        module = torch.jit.load(str(weights), map_location="cpu")
    except (RuntimeError, ValueError):
        return _torch_fidelity_inception(weights)
    return TorchScriptExtractor(module).eval()
