"""Resumable image generation for the benchmark: one PNG per prompt, written as it is made.

Layout: ``IMAGES_DIR/<index>.png`` (index zero-padded to 5 digits) plus ``manifest.json``, which
records the prompts, the generation settings and what produced the images, and ``images.json``,
which records each PNG's size and sha256 when it was written and the seconds spent on it. A rerun
skips every image on disk that matches its record (a truncated, empty or changed PNG is made
again), so an interrupted run continues where it stopped; a rerun with other settings or prompts
is refused instead of silently mixing two experiments in one folder.

Prompt ``i`` always uses the seed ``seed + i`` (:func:`quant.generate.generate`), so every
variant of a model sees the same initial noise and images do not depend on how the work was
split into batches or across processes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import MixDQError
from ..utils.distributed import Shard
from ..utils.io import clean_stale_temps, file_digest, save_image, write_json

MANIFEST = "manifest.json"
# Per-image records (size, sha256, generation seconds): ``images.json`` (``images.rankNNNNN.json``
# per rank when sharded). The only files of a benchmark whose content depends on timing.
RECORD = "images"


@dataclasses.dataclass
class GenerationSettings:
    """How every variant generates its images.

    Attributes:
        steps: denoising steps (1 for SDXL-Turbo).
        guidance: classifier-free guidance scale (0 for SDXL-Turbo).
        resolution: image side in pixels; ``None`` for the model's native size.
        seed: seed of prompt 0; prompt ``i`` uses ``seed + i``.
        batch_size: prompts per pipeline call. Batches are fixed blocks of consecutive indices,
            so a resumed run regenerates exactly the batches a clean run would.
        negative_prompt: the unconditional prompt when ``guidance > 1``.
    """

    steps: int = 1
    guidance: float = 0.0
    resolution: int | None = None
    seed: int = 42
    batch_size: int = 1
    negative_prompt: str = ""

    def __post_init__(self):
        if not isinstance(self.steps, int) or self.steps < 1:
            raise MixDQError(f"steps must be a positive integer, got {self.steps!r}")
        from ..generate import check_generation_args

        check_generation_args(guidance=self.guidance, resolution=self.resolution)
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise MixDQError(f"batch size must be a positive integer, got {self.batch_size!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GenerationSettings":
        return cls(**data)


def image_path(folder: str | Path, index: int) -> Path:
    """Where image ``index`` of a variant lives."""
    return Path(folder) / f"{index:05d}.png"


def select_prompts(prompts: list[str], num_prompts: int | None, what: str = "prompts") -> list[str]:
    """Check an inline prompt list and keep its first ``num_prompts`` (files and datasets are
    read by :func:`quant.calib.prompts.read_prompts`)."""
    if not prompts:
        raise MixDQError(f"{what}: no prompts")
    if any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise MixDQError(f"{what}: every prompt must be a non-empty string")
    if num_prompts is not None:
        if num_prompts < 1:
            raise MixDQError(f"--num-prompts must be positive, got {num_prompts}")
        if num_prompts > len(prompts):
            raise MixDQError(f"{what}: asked for {num_prompts} prompts but only "
                             f"{len(prompts)} are there")
        prompts = prompts[:num_prompts]
    return list(prompts)


# Entries of a variant's source that say where its files lie, not what makes the images (the
# checkpoint's sha256 does): left out of the manifest, so a moved run folder or another spelling
# of the same path resumes.
LOCATION_KEYS = ("quantized",)


def _identity(source: dict) -> dict:
    return {k: v for k, v in source.items() if k not in LOCATION_KEYS}


def check_manifest(folder: str | Path, prompts: list[str], settings: GenerationSettings,
                   source: dict, write: bool) -> None:
    """Refuse a folder made with other settings, another model or other prompts; record ours.

    Prompts may grow or shrink between runs as long as the common prefix is the same: asking
    for more prompts extends the set, asking for fewer uses the first images.

    Args:
        folder: the variant's image folder.
        prompts: this run's prompts.
        settings: this run's generation settings.
        source: what makes the images (model, checkpoint hash...), JSON-able; its
            :data:`LOCATION_KEYS` are not recorded.
        write: write the updated manifest (rank 0 only when sharded).
    """
    path = Path(folder) / MANIFEST
    mine = {"settings": settings.to_dict(), "source": _identity(source),
            "prompts": list(prompts)}
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            old_prompts = list(old["prompts"])
            same = (old["settings"] == mine["settings"]
                    and _identity(old["source"]) == mine["source"])
        except (ValueError, KeyError, TypeError):
            raise MixDQError(f"{path}: unreadable manifest; delete the folder to start "
                             f"over") from None
        common = min(len(old_prompts), len(prompts))
        if not same or old_prompts[:common] != list(prompts[:common]):
            what = "settings or model" if not same else "prompts"
            raise MixDQError(f"{folder}: made with other {what}; use another --out or delete "
                             f"this folder")
        if len(old_prompts) > len(prompts):
            mine["prompts"] = old_prompts
    if write:
        write_json(path, mine)


def shard_batches(n: int, batch_size: int, shard: Shard) -> list[range]:
    """The batches of indices ``0..n-1`` that ``shard`` generates.

    Batch ``c`` covers ``[c * batch_size, (c + 1) * batch_size)``; rank ``r`` of ``w`` takes the
    batches with ``c % w == r`` (with a batch size of 1: the indices with ``i % w == r``).
    """
    starts = range(0, n, batch_size)
    return [range(s, min(s + batch_size, n)) for c, s in enumerate(starts)
            if c % shard.world_size == shard.rank]


def record_path(folder: str | Path, shard: Shard = Shard()) -> Path:
    """The record of what ``shard`` wrote into ``folder``: per image its size, sha256 and the
    seconds its batch took (its share). One file per rank, so ranks never write the same file."""
    suffix = "" if shard.world_size == 1 else f".rank{shard.rank:05d}"
    return Path(folder) / f"{RECORD}{suffix}.json"


def read_records(folder: str | Path) -> dict[str, dict]:
    """Every image record in ``folder`` (all ranks), keyed by file name; unreadable files and
    entries are ignored (their images are then redone)."""
    records: dict[str, dict] = {}
    for path in sorted(Path(folder).glob(f"{RECORD}*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            records.update({k: v for k, v in data.items() if isinstance(v, dict)})
    return records


def image_ok(folder: str | Path, index: int, records: dict[str, dict]) -> bool:
    """Whether image ``index`` is on disk with the size and sha256 recorded when it was written."""
    path = image_path(folder, index)
    rec = records.get(path.name)
    if rec is None or not path.is_file() or path.stat().st_size != rec.get("bytes"):
        return False
    return file_digest(path) == rec.get("sha256")


def generation_seconds(folder: str | Path) -> float:
    """Seconds spent generating the images of ``folder``, over every run that wrote them."""
    return math.fsum(float(r.get("seconds", 0.0)) for r in read_records(folder).values())


def missing_images(folder: str | Path, n: int, shard: Shard = Shard()) -> list[int]:
    """Indices among shard's share of ``0..n-1`` whose image is not on disk yet (or does not
    match what was recorded when it was written)."""
    records = read_records(folder)
    return [i for batch in shard_batches(n, 1, shard) for i in batch
            if not image_ok(folder, i, records)]


def generate_images(pipe_fn: Callable[[], Any], prompts: list[str], folder: str | Path,
                    settings: GenerationSettings, *, source: dict | None = None,
                    shard: Shard = Shard(), desc: str = "generating") -> int:
    """Generate the missing images of one variant, writing each PNG atomically as it is made.

    Args:
        pipe_fn: returns the pipeline; called only if some image of this shard is missing.
        prompts: all prompts; image ``i`` is prompt ``i`` with seed ``settings.seed + i``.
        folder: the variant's image folder.
        settings: generation settings (the same for every variant of a benchmark).
        source: what makes the images, recorded in the manifest and checked on reruns.
        shard: this process's share of the work when sharded with torchrun.
        desc: label of the progress bar.

    Returns:
        How many images this call wrote.
    """
    from ..generate import generate
    from ..utils.progress import progress

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if shard.is_main:
        clean_stale_temps(folder)  # PNGs whose write a kill interrupted
    check_manifest(folder, prompts, settings, source or {}, write=shard.rank == 0)
    records = read_records(folder)
    mine_path = record_path(folder, shard)
    mine = {k: v for k, v in records.items()
            if k in {image_path(folder, i).name for b in shard_batches(len(prompts),
                                                                       settings.batch_size, shard)
                     for i in b}}
    todo = [b for b in shard_batches(len(prompts), settings.batch_size, shard)
            if any(not image_ok(folder, i, records) for i in b)]
    if not todo:
        return 0
    pipe = pipe_fn()
    written = 0
    bar = progress(total=sum(len(b) for b in todo), desc=desc, unit="images")
    for batch in todo:
        # The whole batch is regenerated even if part of it is on disk, so the images come
        # from the same batched computation as in an uninterrupted run.
        started = time.perf_counter()
        try:
            images = generate(pipe, prompts[batch.start:batch.stop], steps=settings.steps,
                              guidance=settings.guidance, resolution=settings.resolution,
                              negative_prompt=settings.negative_prompt,
                              seed=settings.seed + batch.start)
        except MixDQError as e:
            raise MixDQError(f"variant {folder.name}, prompts {batch.start}..{batch.stop - 1}: "
                             f"{e}") from None
        seconds = (time.perf_counter() - started) / len(batch)
        for i, image in zip(batch, images):
            path = image_path(folder, i)
            if not image_ok(folder, i, records):
                save_image(image, path)
                written += 1
            # The record follows the image: an image without one is redone on resume.
            mine[path.name] = {"bytes": path.stat().st_size, "sha256": file_digest(path),
                               "seconds": round(seconds, 6)}
        records.update(mine)
        write_json(mine_path, mine)
        bar.update(len(batch))
    bar.close()
    return written
