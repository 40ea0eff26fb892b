"""Quality metrics on the proxy: content accuracy, FID, and fidelity to full-precision outputs.

- **content accuracy**: share of generated images whose every attribute, as read by the
  :class:`~quant.proxy.classifier.AttributeClassifier`, matches the caption;
- **FID**: Frechet distance between the classifier's penultimate features of the generated
  images and of real dataset images for the same captions (the proxy's Inception);
- **SQNR / PSNR / SSIM** against reference images (the full-precision pipeline's outputs for
  the same captions and seeds), which is what a quantized pipeline is compared with;
- **quality score** (:func:`quality_scores`): the relative error of the images' high-frequency
  band (image minus its 3x3 blur) against the references, in percent (0 = the same fine detail).
  Blur removes that band, noise and texture add to it; ``sharpness`` tells the two directions
  apart (<1 blurrier, >1 noisier). It is a fidelity measure, so a wrong colour or a moved edge
  moves it too; content accuracy is what judges content alone.
"""

from __future__ import annotations

import math

import torch

from ..errors import MixDQError
from ..unet import sqnr_db  # noqa: F401  (re-exported)
from .classifier import AttributeClassifier
from .model import check_resolution, classifier_file
from .scenes import ATTRIBUTES, SPLITS, Scene, render_caption


def eval_captions(split: str = "heldout", repeats: int = 8) -> list[str]:
    """Every caption of ``split``, each ``repeats`` times (different seeds when generated)."""
    if split not in SPLITS:
        raise MixDQError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return [s.caption for s in SPLITS[split]] * repeats


def real_images(captions: list[str], seed: int = 0) -> torch.Tensor:
    """Dataset images for ``captions``: image ``i`` with jitter seed ``seed + i``."""
    return torch.stack([render_caption(c, seed + i) for i, c in enumerate(captions)])


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets ``[N, D]`` and ``[M, D]``.

    ``|mu_a - mu_b|^2 + tr(C_a) + tr(C_b) - 2 tr((C_a C_b)^(1/2))``, in float64. The trace of
    the matrix square root is taken as the sum of the square roots of the eigenvalues of
    ``C_a^(1/2) C_b C_a^(1/2)`` (symmetric, so exact even when the covariances are singular, as
    those of ReLU features with dead units are).
    """
    if feats_a.shape[0] < 2 or feats_b.shape[0] < 2:
        raise MixDQError("FID needs at least two images on each side")
    a, b = feats_a.double().cpu(), feats_b.double().cpu()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    evals, evecs = torch.linalg.eigh(cov_a)
    root_a = evecs @ torch.diag(evals.clamp(min=0).sqrt()) @ evecs.T
    middle = root_a @ cov_b @ root_a
    trace_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    dist = (mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * trace_root
    return float(max(dist.item(), 0.0))


@torch.no_grad()
def classifier_fid(classifier: AttributeClassifier, images: torch.Tensor,
                   real: torch.Tensor) -> float:
    """FID between ``images`` and ``real`` in the classifier's feature space."""
    classifier.eval()
    return frechet_distance(classifier.features(images.float()), classifier.features(real.float()))


def content_scores(classifier: AttributeClassifier, images: torch.Tensor,
                   captions: list[str]) -> dict[str, float]:
    """Content accuracy (all attributes right) and the accuracy of each attribute.

    Returns:
        ``{"content_acc": ..., "colour_acc": ..., "shape_acc": ..., "size_acc": ...,
        "position_acc": ...}``, each in [0, 1].
    """
    if len(images) != len(captions) or not captions:
        raise MixDQError(f"{len(images)} images for {len(captions)} captions")
    truth = [Scene.from_caption(c) for c in captions]
    pred = classifier.predict(images)
    scores = {"content_acc": sum(p == t for p, t in zip(pred, truth)) / len(truth)}
    for name in ATTRIBUTES:
        right = sum(getattr(p, name) == getattr(t, name) for p, t in zip(pred, truth))
        scores[f"{name}_acc"] = right / len(truth)
    return scores


def wilson_interval(successes: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% for the default ``z``)."""
    if total < 1 or not 0 <= successes <= total:
        raise MixDQError(f"Wilson interval of {successes} successes in {total} trials")
    p = successes / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def high_frequency(images: torch.Tensor) -> torch.Tensor:
    """The high-frequency band of ``[B, C, H, W]`` images: the image minus its 3x3 binomial blur
    (edges replicated)."""
    import torch.nn.functional as F

    x = images.double()
    k = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    k = (k[:, None] * k[None, :] / 16).expand(x.shape[1], 1, 3, 3)
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=x.shape[1])
    return x - blurred


def quality_scores(images: torch.Tensor, references: torch.Tensor) -> dict[str, float]:
    """High-frequency fidelity of ``images`` to ``references`` (both ``[B, 3, H, W]``).

    Returns:
        ``quality``: ``100 * ||hf(images) - hf(references)|| / ||hf(references)||`` over the batch
        (0 when identical; lower is better); ``sharpness``: ``||hf(images)|| / ||hf(references)||``.
    """
    if images.shape != references.shape:
        raise MixDQError(f"images {tuple(images.shape)} and references "
                         f"{tuple(references.shape)} differ in shape")
    hf_x, hf_ref = high_frequency(images), high_frequency(references)
    ref_norm = hf_ref.norm().item()
    if ref_norm == 0:
        raise MixDQError("the reference images have no high-frequency content (flat images)")
    return {"quality": 100 * (hf_x - hf_ref).norm().item() / ref_norm,
            "sharpness": hf_x.norm().item() / ref_norm}


def fidelity(images: torch.Tensor, references: torch.Tensor) -> dict[str, float]:
    """SQNR, PSNR and SSIM of ``images`` against ``references`` (both ``[B, 3, H, W]`` in
    [0, 1])."""
    from torchmetrics.functional.image import (
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )

    if images.shape != references.shape:
        raise MixDQError(f"images {tuple(images.shape)} and references "
                         f"{tuple(references.shape)} differ in shape")
    x, y = images.float(), references.float()
    return {"sqnr_db": sqnr_db(y, x),
            "psnr_db": float(peak_signal_noise_ratio(x, y, data_range=1.0)),
            "ssim": float(structural_similarity_index_measure(x, y, data_range=1.0)),
            **quality_scores(x, y)}


def generate_images(pipe, captions: list[str], seed: int = 42, steps: int = 1,
                    batch: int = 64) -> torch.Tensor:
    """Images ``[N, 3, 32, 32]`` in [0, 1]; caption ``i`` uses seed ``seed + i`` (any batching)."""
    from ..generate import generate

    check_resolution(pipe)
    chunks = []
    for start in range(0, len(captions), batch):
        chunks.append(generate(pipe, captions[start:start + batch], steps=steps, guidance=0.0,
                               seed=seed + start, output_type="pt").float().cpu())
    return torch.cat(chunks)


def evaluate(pipe, captions: list[str], seed: int = 42, steps: int = 1,
             reference_images: torch.Tensor | None = None,
             classifier: AttributeClassifier | None = None, real_seed: int = 10_000) -> dict:
    """Generate one image per caption and score it.

    Args:
        pipe: a proxy-sized SDXL pipeline (full precision or quantized).
        captions: captions of the proxy grammar, e.g. :func:`eval_captions`.
        seed: generator seed of the first caption (caption ``i`` uses ``seed + i``).
        steps: denoising steps.
        reference_images: the full-precision outputs for the same captions and seeds; when
            given, SQNR/PSNR/SSIM against them are added.
        classifier: the judge; default the shipped one.
        real_seed: jitter seed of the real images that FID compares with.

    Returns:
        ``content_acc`` with its 95% Wilson interval (``content_lo``, ``content_hi``) and
        per-attribute accuracies, ``fid``, and with references ``sqnr_db``, ``psnr_db``, ``ssim``,
        ``quality``, ``sharpness``; plus ``images``, the generated tensor (for use as references).
    """
    classifier = classifier or AttributeClassifier.load(classifier_file())
    images = generate_images(pipe, captions, seed=seed, steps=steps)
    result = content_scores(classifier, images, captions)
    right = round(result["content_acc"] * len(captions))
    result["content_lo"], result["content_hi"] = wilson_interval(right, len(captions))
    result["fid"] = classifier_fid(classifier, images, real_images(captions, real_seed))
    if reference_images is not None:
        result.update(fidelity(images, reference_images))
    result["images"] = images
    return result
