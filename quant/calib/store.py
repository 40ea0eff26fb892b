"""The calibration folder: its layout, shard files, and the reader the later stages use.

Layout of ``CALIB_DIR`` (written by :func:`quant.calib.record.record_calibration`)::

    settings.json            what was asked for (written first; a resumed run must match it)
    shards/00000.safetensors the recorded UNet calls of prompt batch 0, 1, ...
    images/00000.png         the full-precision image of prompt 0, 1, ...
    manifest.json            written last: its presence means the run is complete

**A sample is one row of a batch the UNet saw**: one prompt at one denoising step. With
classifier-free guidance the UNet sees each prompt twice per step (the unconditional row, then
the conditional one), so a prompt contributes ``2 * steps`` samples; ``cond`` tells them apart.
Inside a shard the rows are in the order the UNet saw them, step by step; shards follow prompt
order. Tensors are stored in the dtype the UNet saw (fp16 on CUDA, float32 on CPU).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from ..errors import MixDQError
from ..unet import OPTIONAL_INPUTS, UNET_INPUTS, config_fingerprint
from ..utils.io import write_bytes
from ..utils.records import json_digest

FORMAT = "mixdq-calib"
VERSION = 1
SETTINGS = "settings.json"
MANIFEST = "manifest.json"
SHARD_DIR = "shards"
IMAGE_DIR = "images"
ADDED_PREFIX = "added_cond_kwargs."
# Keys of a batch besides the added conditions. Optional UNet inputs are recorded when the
# pipeline passes them: `timestep_cond` for guidance-embedded models, `class_labels` and the
# attention masks for pipelines that use them.
ROW_KEYS = ("sample", "timestep", "encoder_hidden_states", "output", "step", "prompt_index",
            "cond")
OPTIONAL_KEYS = OPTIONAL_INPUTS
UNET_KEYS = UNET_INPUTS


def shard_name(index: int) -> str:
    """Relative path of shard ``index`` inside a calibration folder."""
    return f"{SHARD_DIR}/{index:05d}.safetensors"


def image_name(prompt_index: int) -> str:
    """Relative path of the reference image of prompt ``prompt_index``."""
    return f"{IMAGE_DIR}/{prompt_index:05d}.png"


def write_shard(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write ``tensors`` as one safetensors file, atomically (bytes depend only on the tensors)."""
    from safetensors.torch import save

    data = {k: v.detach().to("cpu").contiguous() for k, v in sorted(tensors.items())}
    write_bytes(path, save(data))


def shard_header(path: str | Path) -> dict[str, dict]:
    """Shapes and dtypes of the tensors in a shard, read without loading them.

    Returns:
        ``{key: {"shape": [...], "dtype": "F32"...}}``.
    """
    from safetensors import safe_open

    out = {}
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            piece = f.get_slice(key)
            out[key] = {"shape": list(piece.get_shape()), "dtype": piece.get_dtype()}
    return out


def model_fingerprint(unet) -> str | None:
    """The fingerprint of a UNet's float weights (:func:`quant.checkpoint.unet_hash`); for a
    quantized UNet, that of the float UNet it was made from."""
    from ..checkpoint import unet_hash

    return getattr(unet, "mixdq_base_hash", None) or unet_hash(unet)


def read_shard(path: str | Path, data: bytes | None = None) -> dict[str, torch.Tensor]:
    """Load a whole shard, checking that it is a complete safetensors file.

    Raises:
        MixDQError: a truncated, empty or otherwise unreadable shard (naming it).
    """
    from safetensors.torch import load

    try:
        return load(Path(path).read_bytes() if data is None else data)
    except Exception as e:  # safetensors raises its own error types for corrupt files
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MixDQError(f"{path}: unreadable calibration shard ({first}); rerun `mixdq "
                         f"calibrate` with the same arguments to restore it") from None


def read_image(path: str | Path):
    """Open an image file completely (a truncated or empty PNG fails); returns it as RGB.

    Raises:
        MixDQError: naming the file.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError) as e:  # PIL's errors for broken files
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MixDQError(f"{path}: unreadable image ({first})") from None


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MixDQError(f"{path}: unreadable calibration file ({type(e).__name__})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise MixDQError(f"{path}: not a mixdq calibration file (format is not {FORMAT!r})")
    if obj.get("version") != VERSION:
        raise MixDQError(f"{path}: calibration format version {obj.get('version')} is not "
                         f"supported (this mixdq reads version {VERSION})")
    return obj


def _steps_arg(steps: int | Iterable[int] | None, total: int) -> list[int]:
    if steps is None:
        return list(range(total))
    wanted = [steps] if isinstance(steps, int) else sorted(set(int(s) for s in steps))
    bad = [s for s in wanted if not 0 <= s < total]
    if bad or not wanted:
        raise MixDQError(f"steps {bad or '[]'} out of range: this calibration has {total} "
                         f"step(s), numbered 0..{total - 1}")
    return wanted


class CalibrationData:
    """A finished calibration folder, read lazily shard by shard.

    Args:
        path: the folder given to ``mixdq calibrate --out``.

    Raises:
        MixDQError: the folder is missing, malformed, or not finished (then rerun
            ``mixdq calibrate`` with the same arguments to resume it).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise MixDQError(f"calibration folder {self.path} does not exist")
        manifest = self.path / MANIFEST
        if not manifest.is_file():
            if (self.path / SETTINGS).is_file():
                raise MixDQError(f"calibration folder {self.path} is incomplete (no {MANIFEST}); "
                                 f"rerun `mixdq calibrate` with the same arguments to resume it")
            raise MixDQError(f"{self.path} is not a calibration folder (no {MANIFEST})")
        self.manifest = _read_json(manifest)
        try:
            self.prompts = list(self.manifest["prompts"])
            self._shards = [(self.path / s["file"], int(s["samples"]))
                            for s in self.manifest["shards"]]
            self.image_paths = [self.path / p for p in self.manifest["images"]]
            self._settings = dict(self.manifest["settings"])
            self._tensors = dict(self.manifest["tensors"])
            self._length = int(self.manifest["counts"]["samples"])
        except (KeyError, TypeError, ValueError) as e:
            raise MixDQError(f"{manifest}: malformed calibration manifest ({e!r})") from None
        missing = [p for p, _ in self._shards if not p.is_file()]
        missing += [p for p in self.image_paths if not p.is_file()]
        if missing:
            raise MixDQError(f"calibration folder {self.path} lacks "
                             f"{missing[0].relative_to(self.path)}"
                             f"; rerun `mixdq calibrate` with the same arguments to restore it")
        if sum(n for _, n in self._shards) != self._length:
            raise MixDQError(f"{manifest}: shard sample counts do not add up to "
                             f"{self._length}")
        # Sizes and sha256 recorded when the files were written (absent in older folders): the
        # sizes are checked here, the hashes whenever a file is read.
        self._files = self.manifest.get("files") or {}
        for name, rec in sorted(self._files.items()):
            size = (self.path / name).stat().st_size
            if size != rec.get("bytes"):
                raise MixDQError(f"calibration folder {self.path}: {name} has {size} bytes, "
                                 f"{rec.get('bytes')} were written; rerun `mixdq calibrate` with "
                                 f"the same arguments to restore it")

    def fingerprint(self) -> str:
        """What this calibration is, wherever its folder lies and however its path is spelled:
        the sha256 of its recorded model, settings, UNet fingerprints, prompts and per-file
        hashes (not where the prompts were read from, nor the library versions)."""
        keys = ("format", "version", "model", "settings", "unet", "prompts", "shards", "files")
        return json_digest({k: self.manifest.get(k) for k in keys})

    def check_model(self, unet) -> None:
        """Refuse a UNet other than the one this calibration was recorded with.

        Compares the UNet's class, configuration and weight fingerprint with those recorded
        (for a quantized UNet: those of the float UNet it was made from). Folders recorded
        before the weight fingerprint existed are checked on class and configuration only.

        Raises:
            MixDQError: one line naming what differs.
        """
        rec = self.manifest.get("unet") or {}
        checks = [("class", type(unet).__name__), ("config_sha256", config_fingerprint(unet))]
        if rec.get("weights_sha256"):
            checks.append(("weights_sha256", model_fingerprint(unet)))
        for key, mine in checks:
            if rec.get(key) != mine:
                what = {"class": "UNet class", "config_sha256": "UNet configuration",
                        "weights_sha256": "UNet weights"}[key]
                raise MixDQError(f"calibration folder {self.path} was recorded with another "
                                 f"model ({self.model!r}; its {what} differ from this one's: "
                                 f"{str(rec.get(key))[:16]} there, {str(mine)[:16]} here); "
                                 f"calibrate with this model")

    def _verify(self, path: Path, data: bytes) -> None:
        rec = self._files.get(path.relative_to(self.path).as_posix())
        if rec is not None:
            import hashlib

            if len(data) != rec.get("bytes") or hashlib.sha256(data).hexdigest() != rec.get(
                    "sha256"):
                raise MixDQError(f"calibration folder {self.path}: "
                                 f"{path.relative_to(self.path)} does not match the sha256 "
                                 f"recorded when it was written; rerun `mixdq calibrate` with "
                                 f"the same arguments to restore it")

    # Settings of the run that made the folder.
    @property
    def model(self) -> str:
        return self.manifest["model"]

    @property
    def steps(self) -> int:
        return int(self._settings["steps"])

    @property
    def guidance(self) -> float:
        return float(self._settings["guidance"])

    @property
    def resolution(self) -> int:
        return int(self._settings["resolution"])

    @property
    def seed(self) -> int:
        """Seed of prompt 0; prompt ``i`` used ``seed + i``."""
        return int(self._settings["seed"])

    @property
    def cfg(self) -> bool:
        """Whether the UNet saw classifier-free-guidance batches (two rows per prompt and step)."""
        return bool(self._settings["cfg"])

    @property
    def timesteps(self) -> list[float]:
        """The timestep of each denoising step."""
        return [float(t) for t in self.manifest["timesteps"]]

    def generate_kwargs(self) -> dict:
        """Keyword arguments of :func:`quant.generate.generate` that reproduce the references."""
        kwargs = {"steps": self.steps, "guidance": self.guidance,
                  "resolution": self.resolution, "seed": self.seed}
        if self.manifest["settings"].get("negative_prompt"):  # recorded only when set
            kwargs["negative_prompt"] = self.manifest["settings"]["negative_prompt"]
        return kwargs

    def __len__(self) -> int:
        """Number of samples: recorded UNet rows (prompts x steps, x2 with guidance)."""
        return self._length

    def count(self, steps: int | Iterable[int] | None = None) -> int:
        """Number of samples at the given steps (all steps by default)."""
        wanted = _steps_arg(steps, self.steps)
        return self._length * len(wanted) // self.steps

    def shapes(self) -> dict[str, list[int]]:
        """Per-sample shape of each recorded tensor (without the leading sample dimension)."""
        return {k: list(v["shape"]) for k, v in self._tensors.items()}

    def reference_images(self) -> list:
        """The full-precision images as PIL images, in prompt order."""
        import io

        images = []
        for path in self.image_paths:
            data = path.read_bytes()
            self._verify(path, data)
            images.append(read_image(io.BytesIO(data)))
        return images

    def batches(self, batch_size: int, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32,
                steps: int | Iterable[int] | None = None) -> "CalibrationBatches":
        """Yield the recorded samples in batches, always in the same order (see
        :meth:`iter_batches`); the result also carries this folder as ``.calibration``, so that
        :func:`quant.quantize.quantize_unet` and :func:`quant.quantize.output_sqnr` check the
        UNet against the recorded model (:meth:`check_model`) before using them."""
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise MixDQError(f"batch size must be a positive integer, got {batch_size!r}")
        _steps_arg(steps, self.steps)
        return CalibrationBatches(self, batch_size, device, dtype, steps)

    def iter_batches(self, batch_size: int, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32,
                     steps: int | Iterable[int] | None = None) -> Iterator[dict]:
        """Yield the recorded samples in batches, always in the same order.

        Only one shard and one batch are in memory at a time.

        Args:
            batch_size: samples per batch (the last batch may be smaller).
            device: where the tensors go.
            dtype: floating dtype of ``sample``, ``encoder_hidden_states``, the added
                conditions and ``output``; ``timestep`` stays float32.
            steps: a step index or indices to keep (default: every step).

        Returns:
            An iterator of dicts with ``sample``, ``timestep`` (shape ``[B]``),
            ``encoder_hidden_states``, ``added_cond_kwargs`` (``text_embeds``, ``time_ids``),
            ``output``, ``step``, ``prompt_index`` (int64) and ``cond`` (bool: False for the
            unconditional row of a guided batch), plus ``timestep_cond`` where recorded.
        """
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise MixDQError(f"batch size must be a positive integer, got {batch_size!r}")
        wanted = torch.tensor(_steps_arg(steps, self.steps))
        pending: list[dict[str, torch.Tensor]] = []
        have = 0
        for path, _ in self._shards:
            rows = self._load_shard(path)
            keep = torch.isin(rows["step"], wanted)
            if not bool(keep.all()):
                rows = {k: v[keep] for k, v in rows.items()}
            pending.append(rows)
            have += len(rows["step"])
            while have >= batch_size:
                merged = _cat(pending)
                yield _to_batch({k: v[:batch_size] for k, v in merged.items()}, device, dtype)
                pending = [{k: v[batch_size:] for k, v in merged.items()}]
                have -= batch_size
        if have:
            yield _to_batch(_cat(pending), device, dtype)

    @staticmethod
    def unet_kwargs(batch: dict) -> dict:
        """The part of a batch that a diffusers UNet takes.

        ``unet(**CalibrationData.unet_kwargs(b))``.
        """
        return {k: batch[k] for k in UNET_KEYS if k in batch}

    def _load_shard(self, path: Path) -> dict[str, torch.Tensor]:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise MixDQError(f"{path}: unreadable calibration shard ({e.strerror})") from None
        self._verify(path, data)
        rows = read_shard(path, data)
        absent = [k for k in ROW_KEYS if k not in rows]
        if absent:
            raise MixDQError(f"{path}: calibration shard lacks {absent[0]!r}")
        return rows

    def __repr__(self) -> str:
        return (f"CalibrationData({str(self.path)!r}: {len(self.prompts)} prompts, "
                f"{self.steps} step(s), {len(self)} samples)")


class CalibrationBatches:
    """The iterable :meth:`CalibrationData.batches` returns: re-iterable, and it knows its folder
    (``.calibration``) so that consumers can check the model (see
    :meth:`CalibrationData.check_model`)."""

    def __init__(self, calibration: CalibrationData, batch_size, device, dtype, steps):
        self.calibration = calibration
        self._args = (batch_size, device, dtype, steps)
        self._running: Iterator[dict] | None = None

    def __iter__(self) -> Iterator[dict]:
        """A fresh pass over every batch."""
        return self.calibration.iter_batches(*self._args)

    def __next__(self) -> dict:
        """The next batch of one running pass (like the generator this used to be)."""
        if self._running is None:
            self._running = iter(self)
        return next(self._running)


def check_calibration_model(calibration, unet) -> None:
    """If ``calibration`` (batches, or a folder) comes from a calibration folder, refuse a
    ``unet`` other than the one it was recorded with; other iterables pass unchecked."""
    data = calibration if isinstance(calibration, CalibrationData) else getattr(
        calibration, "calibration", None)
    if isinstance(data, CalibrationData):
        data.check_model(unet)


def _cat(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    if len(parts) == 1:
        return parts[0]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _to_batch(rows: dict[str, torch.Tensor], device, dtype: torch.dtype) -> dict:
    batch: dict = {"added_cond_kwargs": {}}
    for key, value in rows.items():
        if key == "timestep":
            value = value.to(device=device, dtype=torch.float32)
        elif value.is_floating_point():
            value = value.to(device=device, dtype=dtype)
        else:
            value = value.to(device=device)
        if key.startswith(ADDED_PREFIX):
            batch["added_cond_kwargs"][key[len(ADDED_PREFIX):]] = value
        else:
            batch[key] = value
    return batch
