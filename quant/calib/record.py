"""Record every UNet call of the full-precision pipeline into a resumable calibration folder.

The stock diffusers pipeline runs unchanged; :class:`UNetRecorder` hooks ``pipe.unet``. Prompts
are processed in fixed batches (batch ``k`` holds prompts ``k*B .. k*B+B-1``), prompt ``i`` is
generated with seed ``seed + i``, and each batch becomes one shard plus its PNGs. A batch is done
when its shard (written after its images) exists, so a killed run redoes only unfinished batches
and ends with the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch

from ..errors import MixDQError
from ..unet import config_fingerprint
from ..utils.io import clean_stale_temps, file_digest, save_image, write_json
from . import store


# UNet arguments handled by name below (``return_dict`` is the pipeline's business).
_KNOWN = ("sample", "timestep", "encoder_hidden_states", "added_cond_kwargs", "timestep_cond",
          "return_dict")


class UNetRecorder:
    """Hooks on a UNet that keep, for every call, its inputs and its output (on the CPU).

    Registered after any input-casting hook (e.g. :class:`quant.precision.PrecisionGuard`), so it
    records what the UNet itself receives. Use as a context manager; the hooks go on exit.
    """

    def __init__(self, unet: torch.nn.Module):
        self.unet = unet
        self.calls: list[dict] = []
        self._signature = inspect.signature(unet.forward)
        self._pending: dict | None = None
        self._handles = []

    def __enter__(self) -> "UNetRecorder":
        self._handles = [
            self.unet.register_forward_pre_hook(self._before, with_kwargs=True),
            self.unet.register_forward_hook(self._after),
        ]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._pending = None

    def take(self) -> list[dict]:
        """Return the calls recorded so far and start a new list."""
        calls, self.calls = self.calls, []
        return calls

    def _before(self, module, args, kwargs):
        bound = self._signature.bind_partial(*args, **kwargs).arguments
        added = bound.get("added_cond_kwargs") or {}
        self._pending = {
            "sample": _cpu(bound["sample"]),
            "timestep": _cpu(torch.as_tensor(bound["timestep"])),
            "encoder_hidden_states": _cpu(bound["encoder_hidden_states"]),
            "added_cond_kwargs": {k: _cpu(v) for k, v in added.items()
                                  if isinstance(v, torch.Tensor)},
            "timestep_cond": _cpu(bound.get("timestep_cond")),
            "extra": {},
        }
        for key, value in bound.items():
            if key in _KNOWN or value is None or (isinstance(value, dict) and not value):
                continue
            if key in store.OPTIONAL_KEYS and isinstance(value, torch.Tensor):
                self._pending["extra"][key] = _cpu(value)
            else:
                raise MixDQError(f"the pipeline passes {key} to its UNet; calibration records "
                                 f"only {', '.join(store.UNET_KEYS)} (a ControlNet, adapter or "
                                 f"runtime LoRA scale is not supported: fuse LoRAs first)")

    def _after(self, module, args, output):
        if isinstance(output, (tuple, list)):
            output = output[0]
        output = getattr(output, "sample", output)
        call, self._pending = self._pending, None
        call["output"] = _cpu(output)
        self.calls.append(call)


def _cpu(tensor):
    return None if tensor is None else tensor.detach().to("cpu", copy=True)


def _rows(calls: list[dict], first_prompt: int, n_prompts: int, steps: int) -> dict:
    """Stack the calls of one prompt batch into per-row tensors (the shard's content)."""
    if len(calls) != steps:
        raise MixDQError(f"the pipeline made {len(calls)} UNet call(s) for {steps} step(s); "
                         f"its scheduler does not take one UNet call per step")
    columns: dict[str, list[torch.Tensor]] = {}
    for step, call in enumerate(calls):
        n_rows = call["sample"].shape[0]
        if n_rows not in (n_prompts, 2 * n_prompts):
            raise MixDQError(f"the UNet saw {n_rows} rows for {n_prompts} prompts")
        # diffusers puts the unconditional half of a guided batch first.
        cond = torch.ones(n_rows, dtype=torch.bool)
        cond[: n_rows - n_prompts] = False
        index = torch.arange(first_prompt, first_prompt + n_prompts, dtype=torch.int64)
        row = {
            "sample": call["sample"],
            "timestep": call["timestep"].reshape(-1).expand(n_rows).clone(),
            "encoder_hidden_states": call["encoder_hidden_states"],
            "output": call["output"],
            "step": torch.full((n_rows,), step, dtype=torch.int64),
            "prompt_index": index.repeat(n_rows // n_prompts),
            "cond": cond,
        }
        for key, value in call["added_cond_kwargs"].items():
            row[store.ADDED_PREFIX + key] = value
        if call["timestep_cond"] is not None:
            row["timestep_cond"] = call["timestep_cond"]
        for key, value in call["extra"].items():
            if value.dim() == 0 or value.shape[0] != n_rows:
                raise MixDQError(f"the pipeline passed {key} of shape {list(value.shape)} to "
                                 f"its UNet; calibration records one row per sample")
            row[key] = value
        for key, value in row.items():
            columns.setdefault(key, []).append(value)
    return {k: torch.cat(v) for k, v in columns.items()}


_unet_fingerprint = config_fingerprint


def _versions() -> dict:
    import diffusers
    import safetensors
    import transformers

    from .. import __version__

    return {"mixdq": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "safetensors": safetensors.__version__}


def _check_args(prompts, steps, guidance, resolution, batch_size) -> None:
    if not prompts:
        raise MixDQError("no prompts to calibrate on")
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str) or not p.strip()]
    if bad:
        raise MixDQError(f"prompt {bad[0]} is empty or not a string")
    if steps < 1 or batch_size < 1:
        raise MixDQError(f"steps and batch size must be positive (got {steps}, {batch_size})")
    if guidance < 0:
        raise MixDQError(f"guidance must be >= 0, got {guidance}")
    if resolution is not None and (resolution <= 0 or resolution % 8):
        raise MixDQError(f"resolution must be a positive multiple of 8, got {resolution}")


def _settings_diff(old: dict, new: dict) -> str | None:
    for key in ("model", "settings", "unet"):
        if old.get(key) != new.get(key):
            a, b = old.get(key), new.get(key)
            if isinstance(a, dict) and isinstance(b, dict):
                key = next(k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
                a, b = a.get(key), b.get(key)
            return f"{key}: {a!r} there, {b!r} now"
    old_p, new_p = old.get("prompts") or [], new["prompts"]
    if old_p != new_p:
        if len(old_p) != len(new_p):
            return f"{len(old_p)} prompts there, {len(new_p)} now"
        i = next(i for i, (a, b) in enumerate(zip(old_p, new_p)) if a != b)
        return f"prompt {i} differs"
    return None


def _prepare_folder(out: Path, intent: dict) -> dict:
    """Create ``out`` with its settings, or check that an existing run has the same settings.

    Returns:
        The settings as stored (those of the first run, library versions included).
    """
    if out.exists() and not out.is_dir():
        raise MixDQError(f"--out {out} exists and is not a folder")
    settings = out / store.SETTINGS
    if settings.is_file():
        try:
            old = json.loads(settings.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            raise MixDQError(f"{settings} is unreadable; delete the folder or use another --out"
                             ) from None
        diff = _settings_diff(old, intent)
        if diff:
            raise MixDQError(f"--out {out} holds a calibration made with different settings "
                             f"({diff}); use another --out or delete it")
        # A killed run can leave the temporaries of atomic writes behind; they are ours.
        for folder in (out, out / store.SHARD_DIR, out / store.IMAGE_DIR):
            clean_stale_temps(folder)
        return old
    if out.is_dir() and any(out.iterdir()):
        raise MixDQError(f"--out {out} is a non-empty folder that is not a calibration run; "
                         f"use a new folder")
    write_json(settings, intent)
    return json.loads(settings.read_text(encoding="utf-8"))


def _recorded_files(out: Path) -> dict:
    """The sizes and hashes a previous complete run recorded in its manifest (else empty)."""
    try:
        files = json.loads((out / store.MANIFEST).read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        return {}
    return files if isinstance(files, dict) else {}


def _file_ok(out: Path, name: str, recorded: dict) -> bool:
    """Whether a file that a batch wrote can be reused: readable, and equal to what the manifest
    recorded if a complete run recorded it."""
    path = out / name
    if not path.is_file():
        return False
    rec = recorded.get(name)
    if isinstance(rec, dict):
        return path.stat().st_size == rec.get("bytes") and file_digest(path) == rec.get("sha256")
    try:
        if name.startswith(store.SHARD_DIR):
            store.read_shard(path)
        else:
            store.read_image(path)
    except MixDQError:
        return False
    return True


def _batch_done(out: Path, index: int, start: int, stop: int, recorded: dict) -> bool:
    return _file_ok(out, store.shard_name(index), recorded) and all(
        _file_ok(out, store.image_name(i), recorded) for i in range(start, stop))


def _manifest(out: Path, intent: dict, batches: list[tuple[int, int, int]]) -> dict:
    shards, timesteps, tensors = [], None, None
    for index, start, stop in batches:
        header = store.shard_header(out / store.shard_name(index))
        shards.append({"file": store.shard_name(index), "prompts": [start, stop],
                       "samples": header["step"]["shape"][0]})
        if tensors is None:
            tensors = {k: {"shape": v["shape"][1:], "dtype": v["dtype"]}
                       for k, v in sorted(header.items())}
    from safetensors.torch import load_file

    first = load_file(str(out / store.shard_name(0)))
    steps = intent["settings"]["steps"]
    timesteps = [float(first["timestep"][first["step"] == s][0]) for s in range(steps)]
    n_samples = sum(s["samples"] for s in shards)
    return {
        **intent,
        "counts": {"prompts": len(intent["prompts"]), "steps": steps, "samples": n_samples,
                   "samples_per_prompt_step": n_samples // (len(intent["prompts"]) * steps),
                   "shards": len(shards)},
        "timesteps": timesteps,
        "tensors": tensors,
        "shards": shards,
        "images": [store.image_name(i) for i in range(len(intent["prompts"]))],
        "files": {name: {"bytes": (out / name).stat().st_size, "sha256": file_digest(out / name)}
                  for name in [s["file"] for s in shards]
                  + [store.image_name(i) for i in range(len(intent["prompts"]))]},
    }


def _intent(pipe, prompts, steps, guidance, resolution, batch_size, seed, model_name,
            source, negative_prompt="") -> dict:
    # Same condition as diffusers' SDXL pipeline for doubling the batch.
    cfg = guidance > 1 and pipe.unet.config.time_cond_proj_dim is None
    intent = {
        "format": store.FORMAT, "version": store.VERSION, "model": model_name,
        "settings": {"steps": steps, "guidance": float(guidance), "resolution": resolution,
                     "batch_size": batch_size, "seed": seed, "cfg": cfg,
                     "unet_dtype": str(pipe.unet.dtype).removeprefix("torch.")},
        "unet": {"class": type(pipe.unet).__name__, "config_sha256": _unet_fingerprint(pipe.unet),
                 "weights_sha256": store.model_fingerprint(pipe.unet)},
        "prompts": list(prompts),
        "versions": _versions(),
    }
    if negative_prompt:  # stored only when set: calibrations without one keep their settings
        intent["settings"]["negative_prompt"] = negative_prompt
    if source is not None:
        intent["source"] = source
    return intent


def record_calibration(pipe, prompts: list[str], out_dir: str | Path, *, steps: int = 1,
                       guidance: float = 0.0, resolution: int | None = None,
                       batch_size: int = 8, seed: int = 42, model_name: str = "unknown",
                       progress: bool = True, source: dict | None = None,
                       negative_prompt: str = "") -> Path:
    """Run the full-precision pipeline on ``prompts`` and record every UNet call.

    Resumable: rerunning with the same arguments finishes an interrupted run (producing the same
    files as an uninterrupted one) and does nothing to a finished one.

    Args:
        pipe: a text-to-image diffusers pipeline of any family in :mod:`quant.models.families`
            (e.g. from :func:`quant.models.load_fp_pipeline`); the UNet inputs it passes are
            recorded as they are (no added conditions unless the model has them).
        prompts: the prompts, one image each.
        out_dir: the calibration folder to create or resume.
        steps: denoising steps; every step's UNet call is recorded.
        guidance: classifier-free guidance scale; above 1 the UNet sees two rows per prompt.
        resolution: image side in pixels; default the model's native size.
        batch_size: prompts per pipeline call and per shard.
        seed: prompt ``i`` uses the generator seed ``seed + i``.
        model_name: how the model was named (recorded in the manifest).
        progress: show a progress bar (prompts/s and ETA).
        source: optional description of where the prompts came from, for the manifest.
        negative_prompt: the unconditional prompt of classifier-free guidance (see
            :func:`quant.generate.generate`).

    Returns:
        The calibration folder, readable with :class:`quant.calib.CalibrationData`.

    Raises:
        MixDQError: bad arguments, or ``out_dir`` holds a different run or something else.
    """
    from ..utils.progress import progress as show_progress

    from ..generate import default_resolution, generate

    _check_args(prompts, steps, guidance, resolution, batch_size)
    resolution = resolution or default_resolution(pipe)
    out = Path(out_dir)
    intent = _intent(pipe, prompts, steps, guidance, resolution, batch_size, seed, model_name,
                     source, negative_prompt)
    intent = _prepare_folder(out, intent)
    batches = [(k, start, min(start + batch_size, len(prompts)))
               for k, start in enumerate(range(0, len(prompts), batch_size))]
    recorded = _recorded_files(out)
    todo = [b for b in batches if not _batch_done(out, *b, recorded)]
    done = len(prompts) - sum(stop - start for _, start, stop in todo)
    with show_progress(total=len(prompts), initial=done, unit="prompts", desc="calibrate",
                       enabled=progress) as bar, UNetRecorder(pipe.unet) as rec:
        for index, start, stop in todo:
            rec.take()
            images = generate(pipe, prompts[start:stop], steps=steps, guidance=guidance,
                              resolution=resolution, seed=seed + start,
                              negative_prompt=negative_prompt)
            rows = _rows(rec.take(), start, stop - start, steps)
            for i, image in enumerate(images):
                save_image(image, out / store.image_name(start + i))
            # The shard is written last: it marks the batch as finished.
            store.write_shard(out / store.shard_name(index), rows)
            bar.update(stop - start)
    manifest = _manifest(out, intent, batches)
    path = out / store.MANIFEST
    if todo or not path.is_file() or json.loads(path.read_text(encoding="utf-8")) != manifest:
        write_json(path, manifest)
    return out


def finished_run(out_dir: str | Path, prompts: list[str], *, steps: int, guidance: float,
                 resolution: int | None, batch_size: int, seed: int, model_name: str,
                 negative_prompt: str = "") -> bool:
    """Whether ``out_dir`` already holds a complete run of exactly these settings.

    Lets the CLI skip loading the model for a no-op rerun. ``resolution=None`` matches the
    recorded native size; the UNet's dtype and configuration are not checked here.
    """
    out = Path(out_dir)
    try:
        data = store.CalibrationData(out)
    except MixDQError:
        return False
    s = data.manifest["settings"]
    return (data.model == model_name and data.prompts == list(prompts) and s["steps"] == steps
            and s["guidance"] == float(guidance) and s["batch_size"] == batch_size
            and s["seed"] == seed and resolution in (None, s["resolution"])
            and s.get("negative_prompt", "") == negative_prompt)
