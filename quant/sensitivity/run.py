"""A whole sensitivity run: shard, measure, log, merge, and write the table and its companions.

Files beside ``--out SENS.csv``::

    SENS.csv.parts/settings.json        what is being measured (a resumed run must match it)
    SENS.csv.parts/rank-00000.jsonl     finished layers of rank 0, one JSON line each
    SENS.csv                            the merged table (rank 0, when every layer is done)
    SENS.protect.txt                    activation layers to keep in floating point
    SENS.heatmap.png                    mean / min SQNR by block and (target, bits)
    SENS.summary.json                   baseline, evaluation counts and timings

Under ``torchrun`` the layers still to do are dealt round robin to the ranks; every rank appends
its finished layers to its own log; rank 0 merges after a barrier. Any number of ranks may
resume any earlier run: the logs of all ranks count as done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path

from ..errors import MixDQError
from ..models.spec import ModelSpec
from ..utils.io import write_json, write_text
from ..utils.distributed import Distributed
from ..utils.records import first_difference
from .config import SensitivityConfig
from .results import LayerLog, format_protect, protect_list, read_logs, write_csv

FORMAT = "mixdq-sensitivity-run"
VERSION = 1


@dataclasses.dataclass(frozen=True)
class Outputs:
    """The files of a run, named after ``--out``."""

    csv: Path

    @property
    def parts(self) -> Path:
        return self.csv.with_name(self.csv.name + ".parts")

    def _beside(self, suffix: str) -> Path:
        return self.csv.with_name(self.csv.stem + suffix)

    @property
    def protect(self) -> Path:
        return self._beside(".protect.txt")

    @property
    def heatmap(self) -> Path:
        return self._beside(".heatmap.png")

    @property
    def summary(self) -> Path:
        return self._beside(".summary.json")


@dataclasses.dataclass
class RunSummary:
    """What a run did. Timings are device-seconds summed over ranks."""

    outputs: Outputs
    layers: int
    measured_layers: int
    evaluations: int
    seconds: float
    unet_seconds: float
    image_seconds: float
    full_forward_s: float | None
    baseline: dict | None
    protect: list[str]
    world: int
    merged: bool = False
    rerun_macs: int = 0
    full_macs: int = 0

    @property
    def seconds_per_evaluation(self) -> float | None:
        return self.seconds / self.evaluations if self.evaluations else None

    @property
    def unet_seconds_per_evaluation(self) -> float | None:
        return self.unet_seconds / self.evaluations if self.evaluations else None

    @property
    def rerun_fraction(self) -> float | None:
        """Linear/Conv2d MACs the block-cached evaluations re-ran, as a fraction of as many
        full forwards (counted from layer shapes, so independent of machine load)."""
        return self.rerun_macs / self.full_macs if self.full_macs else None

    def format(self) -> str:
        lines = [f"sensitivity: {self.layers} layers in {self.outputs.csv}; measured "
                 f"{self.measured_layers} now ({self.evaluations} evaluations on "
                 f"{self.world} process(es))"]
        if self.evaluations:
            lines.append(f"  {self.seconds:.1f} s, {self.seconds_per_evaluation:.3f} s per "
                         f"evaluation: UNet {self.unet_seconds_per_evaluation:.3f} s, images "
                         f"and SSIM {self.image_seconds / self.evaluations:.3f} s")
            if self.rerun_fraction:
                lines.append(f"  block caching re-runs {100 * self.rerun_fraction:.1f}% of a "
                             f"full forward's Linear/Conv2d multiply-accumulates per evaluation "
                             f"({1 / self.rerun_fraction:.2f}x fewer; counted from layer shapes)")
        if self.baseline:
            b = self.baseline
            line = f"  baseline (nothing quantized) vs recorded outputs: {b['sqnr_db']:.1f} dB"
            if b.get("ssim") is not None:
                line += (f"; images vs reference PNGs: SSIM {b['ssim']:.6f}, max difference "
                         f"{b['max_pixel_diff']:.0f} level(s)")
            lines.append(line)
        lines.append(f"  protect list ({len(self.protect)}): {', '.join(self.protect)} "
                     f"-> {self.outputs.protect}")
        return "\n".join(lines)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _settings(spec: ModelSpec, calib, config: SensitivityConfig, quantized_base, device,
              dtype, names: list[str]) -> dict:
    base = None
    if quantized_base is not None:
        from ..checkpoint import CONFIG_FILE, read_config

        read_config(quantized_base)
        # by content, not by path: a moved or differently spelled folder resumes
        base = {"config_sha256": _digest((Path(quantized_base) / CONFIG_FILE).read_bytes())}
    # a LoRA changes the weights: recorded (only when there is one, so older parts still match)
    lora = {} if spec.lora is None else {"lora": {"path": spec.lora, "scale": spec.lora_scale}}
    return {"format": FORMAT, "version": VERSION, "model": spec.model, **lora,
            "calibration": {"fingerprint": calib.fingerprint()},
            "quantized_base": base, "config": config.to_dict(), "device": device.type,
            "dtype": str(dtype).removeprefix("torch."), "layers": len(names),
            "layers_sha256": _digest("\n".join(names).encode())}


def _check_settings(parts: Path, settings: dict, dist: Distributed) -> None:
    """Every rank reads the same file and so reaches the same verdict; rank 0 writes it."""
    path = parts / "settings.json"
    old = None
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            raise MixDQError(f"{path} is unreadable; delete {parts} to start over") from None
    diff = None if old is None else first_difference(old, settings)
    if diff:
        raise MixDQError(f"{parts} holds a sensitivity run with different settings ({diff}); "
                         f"use another --out or delete {parts} to start over")
    dist.barrier()
    if old is None and dist.main:
        write_json(path, settings)
    dist.barrier()


def run_sensitivity(model: ModelSpec | str, calib_dir: str | Path, out: str | Path,
                    config: SensitivityConfig = SensitivityConfig(), *,
                    quantized_base: str | Path | None = None, device=None, dtype=None,
                    progress: bool = True) -> RunSummary:
    """Measure every layer's sensitivity and write the table, protect list and heatmap.

    Resumable (rerun the same command) and shardable (run it under ``torchrun``).

    Args:
        model: the model (a :class:`ModelSpec`, its LoRA fused; or a plain model name, loaded
            with ``device`` and ``dtype``): the calibration's model.
        calib_dir: the calibration folder (``mixdq calibrate --out``).
        out: the CSV to write; companions are named after it (see :class:`Outputs`).
        config: what to measure.
        quantized_base: a quantized checkpoint folder to measure on top of.
        device, dtype: with a plain model name: ``cpu``/``cuda`` and the compute dtype
            request; under torchrun on CUDA each rank uses its local GPU. Without a dtype (here
            or in the spec) the measurement runs in ``config.dtype`` (float32, the original's,
            unless the ``fp16_sensitivity`` switch).
        progress: a tqdm bar over evaluations (rank 0).

    Returns:
        A :class:`RunSummary` (on rank 0 with the merged results; other ranks get theirs).
    """
    from ..calib import CalibrationData
    from ..structure import quantizable_layers

    spec = model if isinstance(model, ModelSpec) else ModelSpec(model, device, dtype)
    outputs = Outputs(Path(out))
    if outputs.csv.suffix.lower() != ".csv":
        raise MixDQError(f"--out {out}: the sensitivity table must be a .csv file")
    calib = CalibrationData(calib_dir)
    if spec.dtype is None:
        spec = dataclasses.replace(spec, dtype=config.dtype)
    with Distributed(spec.device) as dist:
        pipe = spec.load(device=dist.device)
        calib.check_model(pipe.unet)
        names = config.select(list(quantizable_layers(pipe.unet)))
        unet_dtype = pipe.unet.dtype
        settings = _settings(spec, calib, config, quantized_base, dist.device, unet_dtype, names)
        outputs.parts.mkdir(parents=True, exist_ok=True)
        _check_settings(outputs.parts, settings, dist)
        log = LayerLog(outputs.parts / f"rank-{dist.rank:05d}.jsonl")
        log.repair()
        dist.barrier()
        done = read_logs(outputs.parts)
        dist.barrier()  # everyone has read the logs before anyone appends to them
        mine = dist.shard([n for n in names if n not in done])
        stats = _measure(pipe, calib, config, mine, log, quantized_base, dist, unet_dtype,
                         progress)
        gathered = dist.gather(stats)
        dist.barrier()
        if not dist.main:
            return _summary(outputs, names, gathered, [], dist.world, merged=False)
        return _merge(outputs, names, config, gathered, dist.world)


def _measure(pipe, calib, config, mine, log, quantized_base, dist, dtype, progress) -> dict:
    stats = {"layers": len(mine), "evaluations": 0, "seconds": 0.0, "unet_seconds": 0.0,
             "image_seconds": 0.0, "full_forward_s": None, "baseline": None, "rerun_macs": 0,
             "full_macs": 0}
    if not mine:
        return stats
    from ..utils.progress import progress as show_progress
    from .measure import Measurer

    measurer = Measurer(pipe, calib, config, mine, quantized_base=quantized_base,
                        device=dist.device, dtype=dtype)
    stats["baseline"] = dataclasses.asdict(measurer.baseline)
    stats["full_forward_s"] = measurer.baseline.full_forward_s
    total = sum(measurer.evaluations(n) for n in mine)
    with show_progress(total=total, unit="evaluations", desc=f"sensitivity[{dist.rank}]",
                       enabled=progress and dist.main) as bar:
        for name in mine:
            start = time.perf_counter()
            rows = measurer.measure(name, on_evaluation=lambda: bar.update(1))
            stats["seconds"] += time.perf_counter() - start
            stats["evaluations"] += len(rows)
            log.append(name, rows)
    stats["unet_seconds"] = measurer.unet_seconds
    stats["image_seconds"] = measurer.image_seconds
    stats["rerun_macs"] = measurer.rerun_macs
    stats["full_macs"] = measurer.full_macs * stats["evaluations"]
    return stats


def _summary(outputs, names, gathered, protect, world, merged) -> RunSummary:
    measured = [s for s in gathered if s["layers"]]
    full = [s["full_forward_s"] for s in measured if s["full_forward_s"]]
    return RunSummary(
        outputs=outputs, layers=len(names), measured_layers=sum(s["layers"] for s in gathered),
        evaluations=sum(s["evaluations"] for s in gathered),
        seconds=sum(s["seconds"] for s in gathered),
        unet_seconds=sum(s["unet_seconds"] for s in gathered),
        image_seconds=sum(s["image_seconds"] for s in gathered),
        full_forward_s=sum(full) / len(full) if full else None,
        baseline=measured[0]["baseline"] if measured else None, protect=protect, world=world,
        merged=merged, rerun_macs=sum(s.get("rerun_macs", 0) for s in gathered),
        full_macs=sum(s.get("full_macs", 0) for s in gathered))


def _merge(outputs: Outputs, names, config, gathered, world) -> RunSummary:
    from .heatmap import save_heatmap

    done = read_logs(outputs.parts)
    missing = [n for n in names if n not in done]
    if missing:
        raise MixDQError(f"{len(missing)} layer(s) were not measured (first: {missing[0]}); "
                         f"rerun the same command to finish")
    rows = [r for n in names for r in done[n]]
    write_csv(outputs.csv, rows, names)
    protect = protect_list(rows, config.protect_fraction, rule=config.protect_rule)
    write_text(outputs.protect, format_protect(protect, rows, config.protect_fraction,
                                               rule=config.protect_rule))
    save_heatmap(outputs.heatmap, rows, title=f"{outputs.csv.name}: one layer quantized at a time")
    summary = _summary(outputs, names, gathered, protect, world, merged=True)
    write_json(outputs.summary, {
        "layers": summary.layers, "measured_layers": summary.measured_layers,
        "evaluations": summary.evaluations, "seconds": summary.seconds,
        "unet_seconds": summary.unet_seconds, "image_seconds": summary.image_seconds,
        "seconds_per_evaluation": summary.seconds_per_evaluation,
        "full_forward_s": summary.full_forward_s, "rerun_macs": summary.rerun_macs,
        "full_macs": summary.full_macs, "rerun_fraction": summary.rerun_fraction,
        "baseline": _finite(summary.baseline), "protect": protect, "world": world})
    return summary


def _finite(obj):
    """JSON has no infinity: write it as a string."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj
