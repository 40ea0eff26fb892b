"""MixDQ's ablation on the trained proxy: does each ingredient help on a model that has content?

Variants (each quantized from the same calibration set, scored on the same captions and seeds):

==========================  ==================================================================
``fp``                      full precision (the reference)
``naive-w8a8``              uniform W8A8, min-max weight scales, BOS token quantized with the rest
``naive-w8a8+bos``          the same with BOS-aware text embeddings
``uniform-w4a8``            uniform W4A8 (MSE weight scales, BOS-aware)
``mixdq-sqnr-w4a8``         mixed precision, W4A8 average, both groups scored by SQNR only
``mixdq-w8a8``              MixDQ metric-decoupled (SQNR + SSIM), W8A8 average, protect list
``mixdq-w5a8``              MixDQ metric-decoupled, W5A8 average, protect list
``mixdq-w4a8``              MixDQ metric-decoupled, W4A8 average, protect list
==========================  ==================================================================

Every variant is scored on held-out captions (attribute combinations the proxy never saw) with
content accuracy and its 95% Wilson interval, FID, the high-frequency quality score, SQNR, SSIM
and UNet weight megabytes. Calibration, sensitivity and bit allocation run through the same
stage functions as ``mixdq run`` (:mod:`quant.stages`, one :class:`~quant.models.ModelSpec`),
quantization through :func:`quant.quantize.quantize_unet` in memory; every call into the library
is in :class:`Stages`.

Every stage is resumable: calibration and sensitivity resume themselves, and each variant's
scores are stored as they finish.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load, save

from ..errors import MixDQError
from ..utils.io import write_bytes, write_json, write_text

if TYPE_CHECKING:
    from ..models.spec import ModelSpec

MODEL = "proxy"


@dataclasses.dataclass(frozen=True)
class AblationConfig:
    """Sizes of the ablation.

    Attributes:
        calib_prompts: training captions used for calibration and sensitivity.
        eval_repeats: each held-out caption is generated this many times (seeds differ); the
            default gives 14 x 43 = 602 images per variant.
        split: captions to evaluate on (``heldout``, ``train`` or ``all``).
        seed: seed of the first evaluation image (image ``i``: ``seed + i``).
        batch_size: calibration samples per UNet call.
        method: the MixDQ method preset (``paper``/``plus``) passed to every stage's options
            that has a ``method`` field, and its quantize settings to the in-memory
            quantization; ``None`` = the stages' defaults.
    """

    calib_prompts: int = 32
    eval_repeats: int = 43
    split: str = "heldout"
    seed: int = 42
    batch_size: int = 8
    method: str | None = None

    def __post_init__(self):
        if min(self.calib_prompts, self.eval_repeats, self.batch_size) < 1:
            raise MixDQError("ablation sizes must be positive")
        if self.method is not None:
            from ..methods import method_settings

            method_settings(self.method)  # an unknown method: one line


def _stage_options() -> tuple:
    """The option classes of the stages the ablation runs."""
    from ..stages import AllocateOptions, CalibrateOptions, SensitivityOptions

    return CalibrateOptions, SensitivityOptions, AllocateOptions


def _takes_method(options_class) -> bool:
    return "method" in {f.name for f in dataclasses.fields(options_class)}


def _variants():
    """name -> (description, how the bit map is made, quantize_unet options)."""
    return {
        "naive-w8a8": ("naive min-max W8A8", ("uniform", 8, 8),
                       dict(weight_scale="minmax", bos=False)),
        "naive-w8a8+bos": ("+ BOS-aware", ("uniform", 8, 8), dict(weight_scale="minmax", bos=True)),
        "uniform-w4a8": ("uniform W4A8", ("uniform", 4, 8), dict(weight_scale="mse", bos=True)),
        "mixdq-sqnr-w4a8": ("MixDQ mixed, SQNR only, W4A8 avg", ("allocate", 4.0, 8.0, "sqnr"),
                            dict(weight_scale="mse", bos=True)),
        "mixdq-w8a8": ("MixDQ metric-decoupled W8A8", ("allocate", 8.0, 8.0, "ssim"),
                       dict(weight_scale="mse", bos=True)),
        "mixdq-w5a8": ("MixDQ metric-decoupled W5A8 avg", ("allocate", 5.0, 8.0, "ssim"),
                       dict(weight_scale="mse", bos=True)),
        "mixdq-w4a8": ("MixDQ metric-decoupled W4A8 avg", ("allocate", 4.0, 8.0, "ssim"),
                       dict(weight_scale="mse", bos=True)),
    }


@dataclasses.dataclass(frozen=True)
class Stages:
    """The ablation's calls into the library, all in one place: the stage functions of
    :mod:`quant.stages` with one :class:`~quant.models.ModelSpec`, as ``mixdq run`` calls them.

    ``method`` goes into every stage's options that has a ``method`` field (:meth:`options`).
    """

    model: ModelSpec
    batch_size: int = 8
    seed: int = 42
    method: str | None = None
    progress: bool = True

    def options(self, options_class, **settings):
        """``options_class(**settings)``, with ``method`` when set and the class has the field."""
        if self.method is not None and _takes_method(options_class):
            settings["method"] = self.method
        return options_class(**settings)

    def calibrate(self, captions: list[str], calib_dir: Path, log) -> None:
        """The calibrate stage on ``captions`` (written beside ``calib_dir`` as its prompt
        file), one step unguided as SDXL-Turbo samples."""
        from ..stages import CalibrateOptions, calibrate

        source = calib_dir.parent / "calib-prompts.txt"
        write_text(source, "".join(c + "\n" for c in captions))
        calibrate(self.model, self.options(
            CalibrateOptions, prompts=str(source), num_prompts=len(captions), steps=1,
            guidance=0.0, batch_size=self.batch_size, seed=self.seed,
            no_progress=not self.progress), calib_dir, log=log)

    def sensitivity(self, calib_dir: Path, sens_csv: Path, log) -> None:
        from ..stages import SensitivityOptions, sensitivity

        sensitivity(self.model, self.options(SensitivityOptions, batch_size=self.batch_size,
                                             no_progress=not self.progress),
                    calib_dir, sens_csv, log=log)

    def bit_map(self, how, unet, sens_csv: Path, out: Path):
        """A uniform bit map, or the allocate stage's (written to ``out``) from the table and
        its protect list."""
        from ..bitmap import BitMap
        from ..stages import AllocateOptions, allocate
        from ..structure import quantizable_layers

        if how[0] == "uniform":
            return BitMap.uniform(quantizable_layers(unet), how[1], how[2])
        _, w, a, metric = how
        protect = sens_csv.with_name(sens_csv.stem + ".protect.txt")
        options = self.options(AllocateOptions, weight_bits=w, act_bits=a, content_metric=metric,
                               pick="predicted", protect=str(protect))
        return allocate(options, sens_csv, out, log=lambda line: None).bit_map

    def quantize(self, unet, bit_map, calib_dir: Path, options: dict) -> None:
        """Quantize ``unet`` in place, activation ranges from the calibration: the quantize
        stage's core without its checkpoint; the method's quantize settings (weight scales,
        conv1 split) apply where the variant does not set them."""
        from ..calib import CalibrationData
        from ..methods import method_settings
        from ..quantize import quantize_unet

        if self.method is not None:
            preset = method_settings(self.method)["quantize"]
            options = {**{k: preset[k] for k in ("weight_scale", "conv1_split") if k in preset},
                       **options}

        batches = CalibrationData(calib_dir).batches(self.batch_size, device=unet.device)
        quantize_unet(unet, bit_map, batches, progress=False, **options)


def _scores(result: dict, unet) -> dict:
    from ..utils.sizes import weight_bytes

    keep = ("content_acc", "content_lo", "content_hi", "fid", "quality", "sharpness", "sqnr_db",
            "psnr_db", "ssim")
    row = {k: float(result[k]) for k in keep if k in result}
    row["weight_mb"] = weight_bytes(unet) / 1e6
    return row


def run_ablation(out_dir: str | Path, config: AblationConfig = AblationConfig(), *,
                 device=None, progress: bool = True, log=print) -> dict:
    """Calibrate, measure sensitivity, quantize every variant and score it on the proxy.

    Args:
        out_dir: working folder (calibration, sensitivity table, per-variant scores, report).
        config: sizes.
        device: where to run (default CUDA when present).
        progress: progress bars of the long stages.
        log: where progress lines go.

    Returns:
        The report: settings and one row of scores per variant, as written to ``ablation.json``.
    """
    from ..models import ModelSpec
    from .grid import save_grid
    from .metrics import eval_captions, evaluate

    out = Path(out_dir)
    model = ModelSpec(MODEL, device=None if device is None else str(device))
    stages = Stages(model, batch_size=config.batch_size, seed=config.seed, method=config.method,
                    progress=progress)
    captions = eval_captions(config.split, config.eval_repeats)
    calib_dir, sens_csv = out / "calib", out / "sensitivity" / "sens.csv"
    variants = out / "variants"
    pipe = model.load()
    # A seeded sample, not the first N: captions come in grammar order, and the first few share
    # one colour and shape, which would leave the activation ranges too narrow for the rest.
    train = eval_captions("train", 1)
    calib_captions = random.Random(config.seed).sample(train, min(config.calib_prompts, len(train)))
    if not (calib_dir / "manifest.json").exists():
        log(f"[ablation] calibrating on {len(calib_captions)} training captions")
        stages.calibrate(calib_captions, calib_dir, log)
    if not sens_csv.exists():
        log("[ablation] measuring layer sensitivity (SQNR for all, SSIM for content layers)")
        stages.sensitivity(calib_dir, sens_csv, log)
    unique = len(captions) // config.eval_repeats  # captions repeat with period `unique`
    picks = list(range(0, unique, max(1, unique // 6)))[:6]  # the grid's rows
    log(f"[ablation] full precision on {len(captions)} captions")
    fp = evaluate(pipe, captions, seed=config.seed)
    references = fp["images"]
    rows = {"fp": dict(_scores(fp, pipe.unet), description="full precision")}
    grid = {"fp": references[picks]}
    for name, (description, how, options) in _variants().items():
        cached, cached_grid = variants / f"{name}.json", variants / f"{name}.grid.safetensors"
        if cached.exists() and cached_grid.exists():  # a finished variant: scores and grid images
            rows[name] = json.loads(cached.read_text())
            grid[name] = load(cached_grid.read_bytes())["images"]
            continue
        pipe = model.load()
        log(f"[ablation] {name}: {description}")
        bit_map = stages.bit_map(how, pipe.unet, sens_csv, variants / f"{name}.bitmap.json")
        stages.quantize(pipe.unet, bit_map, calib_dir, options)
        result = evaluate(pipe, captions, seed=config.seed, reference_images=references)
        rows[name] = dict(_scores(result, pipe.unet), description=description)
        grid[name] = result["images"][picks].contiguous()
        write_bytes(cached_grid, save({"images": grid[name]}))
        write_json(cached, rows[name])
    report = {"model": MODEL, "settings": dataclasses.asdict(config),
              "eval_captions": len(captions), "variants": rows}
    write_json(out / "ablation.json", report)
    write_text(out / "ablation.md", markdown(report))
    names = list(grid)
    images = torch.stack([grid[n][row] for row in range(len(picks)) for n in names])
    labels = [f"{n}: {captions[i]}" for i in picks for n in names]
    save_grid(images, labels, out / "ablation_grid.png", columns=len(names))
    return report


def markdown(report: dict) -> str:
    """The ablation as a Markdown table."""
    settings = report.get("settings", {})
    split = settings.get("split", "heldout")
    method = settings.get("method") or "library defaults"
    title = (f"# MixDQ ablation on `--model proxy` ({report['eval_captions']} {split} captions, "
             f"1 step, method: {method})")
    lines = [title, "",
             ("| variant | content acc [95% CI] | FID | quality (HF err %) | SQNR (dB) | SSIM | "
              "UNet weights (MB) |"),
             "|---|---|---|---|---|---|---|"]

    def cell(row, key, fmt):
        return fmt.format(row[key]) if key in row else "—"

    for name, row in report["variants"].items():
        acc = cell(row, "content_acc", "{:.3f}")
        if "content_lo" in row:
            acc += f" [{row['content_lo']:.3f}, {row['content_hi']:.3f}]"
        lines.append(f"| {name} ({row['description']}) | {acc} | {cell(row, 'fid', '{:.2f}')} | "
                     f"{cell(row, 'quality', '{:.1f}')} | {cell(row, 'sqnr_db', '{:.2f}')} | "
                     f"{cell(row, 'ssim', '{:.4f}')} | {cell(row, 'weight_mb', '{:.3f}')} |")
    return "\n".join(lines) + "\n"
