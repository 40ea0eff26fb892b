"""The whole proxy recipe: classifier, VAE, UNet with text encoders, then the shipped files.

Every stage checkpoints into a work folder and resumes from it; stages already finished are
skipped. The shipped pipeline stores its weights in float16 (half the bytes; they load as
float32 on CPU), so what is evaluated is always the rounded model that ships.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..utils.io import atomic_path, write_json
from .classifier import AttributeClassifier, ClassifierConfig, train_classifier
from .model import build_untrained, classifier_file, pipeline_dir
from .train import TrainConfig, train_unet, train_vae

STAGES = ("classifier", "vae", "unet", "export")


def export_pipeline(pipe, out_dir: Path) -> None:
    """Save ``pipe`` as a diffusers folder with float16 weights, atomically."""
    pipe.to(torch.float16)
    try:
        with atomic_path(out_dir) as tmp:
            pipe.save_pretrained(tmp, safe_serialization=True)
    finally:
        pipe.to(torch.float32)


def train_proxy(work_dir: str | Path, cfg: TrainConfig = TrainConfig(),
                classifier_cfg: ClassifierConfig = ClassifierConfig(),
                out_root: str | Path | None = None, stages: tuple[str, ...] = STAGES) -> dict:
    """Run the proxy recipe.

    Args:
        work_dir: checkpoints and logs of the run (resumed from if present).
        cfg: generator training configuration.
        classifier_cfg: attribute classifier training configuration.
        out_root: where ``pipeline/`` and ``classifier.safetensors`` go; default the package's
            ``quant/proxy/weights``.
        stages: subset of :data:`STAGES` to run (the UNet stage needs the VAE checkpoint).

    Returns:
        A summary: the configurations and the seconds each stage took.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    out_pipe = Path(out_root) / "pipeline" if out_root else pipeline_dir()
    out_cls = Path(out_root) / "classifier.safetensors" if out_root else classifier_file()
    summary = {"train": cfg.to_dict(), "classifier": classifier_cfg.to_dict(), "seconds": {}}
    if "classifier" in stages:
        start = time.time()
        cls_path = work_dir / "classifier.safetensors"
        if not cls_path.is_file():
            train_classifier(classifier_cfg).save(cls_path)
        AttributeClassifier.load(cls_path).save(out_cls)
        summary["seconds"]["classifier"] = round(time.time() - start, 1)
    if not {"vae", "unet", "export"} & set(stages):
        return summary
    pipe = build_untrained(cfg.seed, cfg.bos_peak)
    start = time.time()
    train_vae(pipe, cfg, work_dir)  # a finished checkpoint only re-derives the scaling factor
    summary["seconds"]["vae"] = round(time.time() - start, 1)
    if "unet" in stages or "export" in stages:
        start = time.time()
        train_unet(pipe, cfg, work_dir)
        summary["seconds"]["unet"] = round(time.time() - start, 1)
    if "export" in stages:
        export_pipeline(pipe, out_pipe)
    write_json(work_dir / "summary.json", summary)
    return summary
