"""Image-quality metrics of every variant, computed from the generated PNGs on disk.

Images are streamed in batches, so a 30k-prompt benchmark never holds one image set in memory.
The reference (full-precision) and real-image feature statistics are computed once and shared.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import MixDQError
from ..utils.progress import progress
from .clipscore import CLIPScorer
from .fid import FeatureStats, extract_features, fid_from_stats
from .generation import image_path
from .metrics import ImageRewardModel, load_images, psnr_per_image, ssim_per_image


@dataclasses.dataclass
class MetricModels:
    """The networks behind the metrics; ``None`` means that metric is skipped.

    Attributes:
        fid_extractor: uint8 ``[N, 3, H, W]`` -> features ``[N, d]`` (Inception, or any module).
        clip: ``(model, processor)`` for CLIPScore (model: a :class:`CLIPFeatureAdapter`).
        image_reward: ImageReward, or the reason it is unavailable.
        skipped: metric key -> why it is skipped (shown in the report).
        notes: remarks for the report (e.g. that stand-in networks were used).
    """

    fid_extractor: nn.Module | None = None
    clip: tuple[nn.Module, Any] | None = None
    image_reward: ImageRewardModel = dataclasses.field(default_factory=ImageRewardModel)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def load(cls, *, fid: bool = True, inception: str | None = None, clip: bool = True,
             clip_model: str | None = None, image_reward: bool = True,
             device: str | torch.device = "cpu") -> "MetricModels":
        """Load the metric networks from local files (see :func:`quant.bench.fid.load_inception`
        and :func:`quant.bench.clipscore.load_clip`); a disabled metric is marked skipped.

        Raises:
            MixDQError: an enabled metric's weights are not available offline.
        """
        from .clipscore import load_clip
        from .fid import load_inception

        skipped = {}
        extractor = load_inception(inception) if fid else None
        if not fid:
            skipped["fid"] = "skipped (--no-fid)"
        clip_pair = load_clip(clip_model) if clip else None
        if not clip:
            skipped["clip_score"] = "skipped (--no-clip)"
        from .tiny_nets import TINY, TINY_NOTE

        used = [flag for flag, on, value in (("--inception", fid, inception),
                                              ("--clip", clip, clip_model))
                if on and value == TINY]
        notes = [f"{' and '.join(f'{u} tiny' for u in used)}: {TINY_NOTE}."] if used else []
        return cls(fid_extractor=extractor, clip=clip_pair,
                   image_reward=ImageRewardModel.load(device, enabled=image_reward),
                   skipped=skipped, notes=notes)


def _batches(n: int, size: int) -> list[range]:
    return [range(s, min(s + size, n)) for s in range(0, n, size)]


def _mean(values: list[float]) -> float:
    return float(torch.tensor(values, dtype=torch.float64).mean())


@torch.no_grad()
def image_stats(extractor: nn.Module, paths: list[Path], device, batch_size: int,
                size: int | None = None) -> FeatureStats:
    """Feature statistics of the images at ``paths`` (resized to ``size`` if given)."""
    stats = FeatureStats()
    for b in _batches(len(paths), batch_size):
        stats.update(extract_features(extractor, load_images(paths[b.start:b.stop], size),
                                      device))
    return stats


@torch.no_grad()
def evaluate_variants(folders: dict[str, Path], reference: str, prompts: list[str],
                      models: MetricModels, *, real_paths: list[Path] | None = None,
                      device: str | torch.device = "cpu", batch_size: int = 32
                      ) -> dict[str, dict]:
    """Every metric of every variant.

    Args:
        folders: variant name -> image folder (``<index>.png`` for every prompt index).
        reference: the full-precision variant's name (FID/PSNR/SSIM "vs FP" compare to it).
        prompts: the prompts, image ``i`` belongs to prompt ``i``.
        models: the metric networks.
        real_paths: real images for "FID vs real" (resized to the generated size), or ``None``.
        device: where the metric networks run.
        batch_size: images per batch.

    Returns:
        Variant name -> metric key -> number, or a string saying why there is none.
    """
    device = torch.device(device)
    n = len(prompts)
    for name, folder in folders.items():
        missing = [i for i in range(n) if not image_path(folder, i).is_file()]
        if missing:
            raise MixDQError(f"{folder}: image {missing[0]} of variant {name} is missing; "
                             f"rerun the benchmark to finish generating")
    extractor = models.fid_extractor.to(device).eval() if models.fid_extractor else None
    scorer = CLIPScorer(*models.clip, device=device) if models.clip else None
    order = [reference] + [k for k in folders if k != reference]
    fid_note = "n/a (FID needs at least 2 images)" if n < 2 else None

    real_stats = None
    if extractor is not None and real_paths and fid_note is None:
        side = load_images([image_path(folders[reference], 0)]).shape[-1]
        real_stats = image_stats(extractor, real_paths, device, batch_size, size=side)

    results: dict[str, dict] = {}
    ref_stats = None
    for name in order:
        is_ref = name == reference
        stats = FeatureStats()
        psnr, ssim, rewards = [], [], []
        clip_metric = scorer.new_metric() if scorer else None
        for b in progress(_batches(n, batch_size), desc=f"scoring {name}", unit="batches"):
            images = load_images([image_path(folders[name], i) for i in b])
            if extractor is not None:
                stats.update(extract_features(extractor, images, device))
            if not is_ref:
                ref = load_images([image_path(folders[reference], i) for i in b])
                if ref.shape != images.shape:
                    raise MixDQError(f"variant {name}: images of size {tuple(images.shape[-2:])}"
                                     f" but the reference's are {tuple(ref.shape[-2:])}")
                psnr += psnr_per_image(images, ref).tolist()
                ssim += ssim_per_image(images, ref).tolist()
            if clip_metric is not None:
                clip_metric.update(images.to(device), prompts[b.start:b.stop])
            if models.image_reward.available:
                rewards += models.image_reward.score(images, prompts[b.start:b.stop])
        m: dict[str, Any] = {}
        if extractor is not None:
            if is_ref:
                ref_stats = stats
            else:
                m["fid_vs_fp"] = fid_note or fid_from_stats(stats, ref_stats)
            if real_paths:
                m["fid_vs_real"] = fid_note or fid_from_stats(stats, real_stats)
        elif "fid" in models.skipped:
            if not is_ref:
                m["fid_vs_fp"] = models.skipped["fid"]
            if real_paths:
                m["fid_vs_real"] = models.skipped["fid"]
        if clip_metric is not None:
            m["clip_score"] = float(clip_metric.compute())
        elif "clip_score" in models.skipped:
            m["clip_score"] = models.skipped["clip_score"]
        m["image_reward"] = _mean(rewards) if rewards else (models.image_reward.note or "n/a")
        if not is_ref:
            m["psnr_vs_fp"] = _mean(psnr)
            m["ssim_vs_fp"] = _mean(ssim)
        results[name] = m
    return {name: results[name] for name in folders}
