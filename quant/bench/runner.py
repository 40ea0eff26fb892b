"""The benchmark: generate with every variant on the same seeds, time the UNets, score, report."""

from __future__ import annotations

import dataclasses
import gc
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import MixDQError
from ..utils.distributed import Shard
from .evaluate import MetricModels, evaluate_variants
from .generation import (GenerationSettings, generate_images, generation_seconds, image_path,
                         missing_images)
from .metrics import list_images
from .report import FORMAT, latency_warnings, save_grid, versions, write_report
from .timing import capture_unet_inputs, measure_unet
from .variants import Variant, check_variants


@dataclasses.dataclass
class BenchmarkConfig:
    """Settings of one benchmark run (the CLI flags of ``mixdq benchmark``).

    Attributes:
        out_dir: report folder: ``images/<variant>/``, ``report.json``, ``report.md``, ``grid.png``.
        generation: how images are generated (shared by all variants).
        real_images: folder of real images for "FID vs real", or ``None``.
        fid, inception: compute FID; local Inception weights (see ``load_inception``).
        clip, clip_model: compute CLIPScore; local CLIP folder (see ``load_clip``).
        image_reward: compute ImageReward when the package is installed.
        latency, latency_repeats, latency_warmup, cuda_graphs: UNet timing.
        metric_batch_size: images per batch for the metric networks.
        grid_rows: prompts shown in ``grid.png``.
        device: where the metric networks run (default: CUDA if present).
    """

    out_dir: str
    generation: GenerationSettings = dataclasses.field(default_factory=GenerationSettings)
    real_images: str | None = None
    fid: bool = True
    inception: str | None = None
    clip: bool = True
    clip_model: str | None = None
    image_reward: bool = True
    latency: bool = True
    latency_repeats: int = 10
    latency_warmup: int = 3
    cuda_graphs: bool = False
    metric_batch_size: int = 32
    grid_rows: int = 8
    device: str | None = None

    def __post_init__(self):
        if isinstance(self.generation, dict):
            self.generation = GenerationSettings.from_dict(self.generation)
        if not self.out_dir:
            raise MixDQError("the benchmark needs an output folder (--out)")
        for key in ("latency_repeats", "metric_batch_size", "grid_rows"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise MixDQError(f"{key} must be a positive integer, got {getattr(self, key)!r}")
        if not isinstance(self.latency_warmup, int) or self.latency_warmup < 0:
            raise MixDQError(f"latency_warmup must be >= 0, got {self.latency_warmup!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "BenchmarkConfig":
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise MixDQError(f"unknown benchmark setting(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def metric_device(self) -> torch.device:
        from ..precision import default_device

        return torch.device(self.device) if self.device else default_device()


class _LazyPipeline:
    """Loads a variant's pipeline on first use, at most once; :meth:`release` frees it."""

    def __init__(self, load: Callable[[], Any]):
        self._load, self.pipe = load, None

    def get(self):
        if self.pipe is None:
            self.pipe = self._load()
        return self.pipe

    def release(self) -> None:
        self.pipe = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # between variants, so one variant's peak is its own


def _perf(pipe, prompts: list[str], config: BenchmarkConfig) -> dict:
    gen = config.generation
    args, kwargs = capture_unet_inputs(pipe, prompts[0], resolution=gen.resolution,
                                       guidance=gen.guidance, seed=gen.seed)
    perf = measure_unet(pipe, args, kwargs, repeats=config.latency_repeats,
                        warmup=config.latency_warmup, cuda_graphs=config.cuda_graphs).to_dict()
    perf["execution"] = getattr(pipe, "mixdq_execution", "full precision")
    return perf


def run_benchmark(variants: list[Variant], prompts: list[str], config: BenchmarkConfig, *,
                  models: MetricModels | None = None, shard: Shard = Shard(),
                  prompts_source: str = "") -> dict | None:
    """Generate, time and score every variant; write the report.

    Generation is resumable (images on disk are kept) and, under torchrun, split across ranks;
    rank 0 then times the UNets, computes the metrics and writes the report.

    Args:
        variants: the pipelines to compare; the reference (full precision) is the one marked
            ``reference`` (else the first).
        prompts: one image per prompt and variant; image ``i`` uses seed ``seed + i``.
        config: the settings.
        models: metric networks (tests inject small ones); default: loaded from the config's
            flags before anything is generated, so missing weights fail fast.
        shard: this process's share when launched with torchrun.
        prompts_source: where the prompts came from, for the report.

    Returns:
        The report (also written to ``config.out_dir``), or ``None`` on ranks other than 0.
    """
    reference = check_variants(variants)
    if not prompts:
        raise MixDQError("no prompts to benchmark")
    out = Path(config.out_dir)
    real_paths = list_images(config.real_images) if config.real_images else None
    device = config.metric_device()
    if models is None and shard.is_main:
        models = MetricModels.load(fid=config.fid, inception=config.inception, clip=config.clip,
                                   clip_model=config.clip_model, image_reward=config.image_reward,
                                   device=device)
    folders = {v.name: out / "images" / v.name for v in variants}
    perf: dict[str, dict] = {}
    lazies = {v.name: _LazyPipeline(v.load) for v in variants}
    if any(missing_images(folders[v.name], len(prompts), shard) for v in variants):
        # Only when something is generated: a complete benchmark never loads a pipeline.
        _check_fingerprints(variants, reference, lazies[reference.name])
    for v in variants:
        lazy = lazies[v.name]
        generate_images(lazy.get, prompts, folders[v.name], config.generation, source=v.source,
                        shard=shard, desc=f"generating {v.name}")
        if shard.is_main and config.latency:
            perf[v.name] = _perf(lazy.get(), prompts, config)
        lazy.release()
    shard.barrier()
    # Summed from the per-image records, so a resumed run counts the work of every run.
    generation_s = sum(generation_seconds(f) for f in folders.values())
    if not shard.is_main:
        return None

    metrics = evaluate_variants(folders, reference.name, prompts, models, real_paths=real_paths,
                                device=device, batch_size=config.metric_batch_size)
    save_grid(out / "grid.png", folders, prompts, rows=config.grid_rows)
    resolution = _image_side(image_path(folders[reference.name], 0))
    notes = [f"FID, CLIPScore, PSNR and SSIM are computed from the PNGs in "
             f"{out / 'images'}; PSNR is capped at 100 dB (identical images)."]
    notes += models.notes
    notes += latency_warnings(perf)
    if any(v.source.get("quantized") for v in variants) and config.latency:
        notes.append("Quantized UNets are timed as loaded: simulated (fake-quantized) layers "
                     "unless integer kernels are in use, so their latency is the simulation's.")
    if len(prompts) < 2048 and (models.fid_extractor is not None):
        notes.append(f"FID from {len(prompts)} images is biased upwards and noisy; compare "
                     f"variants only at equal prompt counts.")
    report = {
        "format": FORMAT, "version": 1,
        "settings": {"num_prompts": len(prompts), "prompts_source":
                     prompts_source or f"{len(prompts)} prompts (a list)",
                     "resolution": resolution, "generation": config.generation.to_dict(),
                     "config": config.to_dict(), "world_size": shard.world_size,
                     "real_images": len(real_paths) if real_paths else 0},
        "device": str(device),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "versions": versions(),
        "generation_seconds": round(generation_s, 3),
        "variants": [{"name": v.name, "reference": v.name == reference.name, "source": v.source,
                      "images": str(folders[v.name]), "metrics": metrics[v.name],
                      "perf": perf.get(v.name)} for v in variants],
        "notes": notes,
    }
    write_report(out, report)
    return report


def _check_fingerprints(variants: list[Variant], reference: Variant,
                        lazy: _LazyPipeline) -> None:
    """Refuse quantized checkpoints made from another model than the reference's, before any
    image is generated (the reference's own images come first and could take hours)."""
    from ..checkpoint import read_config
    from ..calib.store import model_fingerprint

    quantized = [v for v in variants if v.source.get("quantized")]
    if not quantized:
        return
    model = model_fingerprint(lazy.get().unet)
    for v in quantized:
        config = read_config(v.source["quantized"])
        if config["unet_hash"] != model:
            raise MixDQError(f"variant {v.name}: checkpoint {v.source['quantized']} was made from "
                             f"a different UNet (fingerprint {config['unet_hash'][:12]}) than the "
                             f"reference {reference.name} ({str(model)[:12]}); benchmark it "
                             f"with the model it was quantized from")


def _image_side(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as im:
        return im.size[0]
