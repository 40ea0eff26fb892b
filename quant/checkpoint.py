"""Quantized checkpoints: packed integer weights and quantizer parameters, safetensors only.

A checkpoint folder holds

- ``unet_quant.safetensors``: per quantized layer ``NAME.qweight`` (int8, or uint8 with two
  4-bit / four 2-bit values per byte, see :mod:`quant.packing`), ``NAME.wscale`` (float32
  ``[out]``), ``NAME.act_scale`` / ``NAME.act_zero_point`` (one per input slice),
  ``NAME.act_range`` (calibrated ``[slices, 2]``), ``NAME.bos_row`` (cross-attention k/v) and,
  with timestep-dependent ranges (:mod:`quant.steps`), ``NAME.act_range_steps``
  (``[steps, slices, 2]``, the steps' timesteps in the config's ``step_timesteps``);
- ``quant_config.json``: format, versions, base model, a fingerprint of the base UNet's
  weights, and per layer its kind, weight shape, bits, split and BOS flag;
- ``bitmap.json``: the bit map it was made with; ``report.txt``: what was quantized.

Everything else (norms, biases, float layers) comes from the base model the checkpoint is
loaded onto; the fingerprint makes loading onto a different model fail clearly.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from .bitmap import BitMap, LayerBits, check_bits
from .errors import MixDQError
from .packing import pack, unpack
from .qmodules import qmodule_class
from .report import quantization_report
from .structure import quantizable_layers
from .steps import StepClock, install_clock
from .unet import set_submodule
from .utils.records import first_difference
from .utils.io import (atomic_path, clean_stale_temps, safetensors_bytes, write_bytes,
                       write_error)

FORMAT = "mixdq-quantized-unet"
VERSION = 2  # 2: per-tensor dtype/shape/sha256 in quant_config.json
WEIGHTS_FILE = "unet_quant.safetensors"
CONFIG_FILE = "quant_config.json"
BITMAP_FILE = "bitmap.json"
REPORT_FILE = "report.txt"
_HASH_SAMPLES = 4096


def unet_hash(unet: nn.Module) -> str | None:
    """A fingerprint of ``unet``'s float weights (``None`` on the meta device).

    Covers every parameter's name and shape and up to 4096 evenly spaced values of each, rounded
    to fp16 so that the same model loaded in fp16 or fp32 gives the same fingerprint.
    """
    digest = hashlib.sha256()
    samples = []
    for name, param in unet.named_parameters():
        if param.is_meta:
            return None
        flat = param.detach().reshape(-1)
        if flat.numel() > _HASH_SAMPLES:
            idx = torch.linspace(0, flat.numel() - 1, _HASH_SAMPLES, dtype=torch.float64)
            flat = flat[idx.round().long().to(flat.device)]
        samples.append(flat.to(torch.float16))
        digest.update(f"{name}:{tuple(param.shape)};".encode())
    if samples:
        digest.update(torch.cat(samples).cpu().view(torch.int16).numpy().tobytes())
    return digest.hexdigest()


def _quantized_layers(unet: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in unet.named_modules() if getattr(m, "is_quantized_module", False)}


def _tensor_sha256(t: torch.Tensor) -> str:
    t = t.detach().to("cpu").contiguous()
    data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
    return hashlib.sha256(data).hexdigest()


def _tensor_record(t: torch.Tensor) -> dict:
    from safetensors.torch import _TYPES

    names = {v: k for k, v in _TYPES.items()}
    return {"dtype": names[t.dtype], "shape": list(t.shape), "sha256": _tensor_sha256(t)}


def checkpoint_contents(unet: nn.Module, *, base_model: str,
                        metadata: dict | None = None) -> tuple[dict, dict]:
    """``(tensors, config)`` that :func:`save_quantized` writes for ``unet`` (nothing written)."""
    from . import __version__

    layers = _quantized_layers(unet)
    if not layers:
        raise MixDQError("the UNet has no quantized layers; run quant.quantize first")
    tensors, entries = {}, {}
    for name, layer in layers.items():
        form = layer.integer_form()
        entries[name] = {"kind": form.kind, "shape": list(form.weight_shape), "w": form.w_bits,
                         "a": form.a_bits, "split": form.split,
                         "bos": bool(layer.bos), "weight_scale": layer.weight_scale}
        if form.w_bits is not None:
            tensors[f"{name}.qweight"] = pack(form.qweight, form.w_bits).cpu().contiguous()
            tensors[f"{name}.wscale"] = form.wscale.float().cpu().contiguous()
        if form.a_bits is not None:
            tensors[f"{name}.act_scale"] = form.act_scale.float().contiguous()
            tensors[f"{name}.act_zero_point"] = form.act_zero_point.to(torch.int32).contiguous()
        if layer.act_range is not None:
            tensors[f"{name}.act_range"] = torch.tensor(layer.act_range, dtype=torch.float32)
        if layer.step_ranges is not None:  # timestep-dependent ranges: [steps, slices, 2]
            tensors[f"{name}.act_range_steps"] = torch.tensor(layer.step_ranges,
                                                              dtype=torch.float32)
        if form.bos_row is not None:
            tensors[f"{name}.bos_row"] = form.bos_row.float().cpu().contiguous()
    base_hash = getattr(unet, "mixdq_base_hash", None) or unet_hash(unet)
    config = {"format": FORMAT, "version": VERSION, "toolkit_version": __version__,
              "base_model": str(base_model), "unet_hash": base_hash, "layers": entries,
              **(metadata or {}),
              "tensors": {k: _tensor_record(v) for k, v in sorted(tensors.items())}}
    clock = getattr(unet, "mixdq_step_clock", None)
    if clock is not None and any(m.step_ranges is not None for m in layers.values()):
        config["step_timesteps"] = list(clock.timesteps)
    return tensors, config


# Entries of quant_config.json that do not make two checkpoints different.
_NOT_SETTINGS = ("toolkit_version",)


def settings_difference(old: dict, new: dict) -> str | None:
    """The first setting in which two checkpoint configs differ, as ``"key: A there, B now"``.

    Compares everything ``quant_config.json`` records (base model and its fingerprint, every
    layer's bits and options, the extra metadata, every tensor's hash) but the toolkit version.
    """
    for key in sorted((set(old) | set(new)) - set(_NOT_SETTINGS)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            sub = next(k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
            if key == "tensors":
                return f"tensor {sub} holds other values"
            return f"{key} {sub}: {a.get(sub)!r} there, {b.get(sub)!r} now"
        return f"{key}: {a!r} there, {b!r} now"
    return None


def save_quantized(unet: nn.Module, out_dir: str | Path, *, base_model: str,
                   metadata: dict | None = None) -> Path:
    """Write the quantized checkpoint of a prepared, calibrated ``unet`` (atomically).

    The bytes depend only on the checkpoint's content (two identical runs write identical
    files), every file is created with the usual permissions (0644 under the common umask), and
    ``quant_config.json`` records each tensor's dtype, shape and sha256, checked on loading.

    Saving onto an existing checkpoint: the same settings (``quant_config.json`` equal but for
    the toolkit version) leave it as it is when its files verify, and rewrite only the files of
    the checkpoint when they do not; other settings are refused. Files in ``out_dir`` that are
    not part of a checkpoint are never touched.

    Args:
        unet: a UNet from :func:`quant.quantize.quantize_unet` (or :func:`load_quantized`).
        out_dir: the checkpoint folder.
        base_model: what the float model was loaded from (Hub id or folder), for the record.
        metadata: extra JSON-serializable entries for ``quant_config.json``.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        MixDQError: no quantized layers; ``out_dir`` is a non-empty folder that is not a
            checkpoint, or a checkpoint made with other settings (the message names the first
            difference); a write failed (the message names the file).
    """
    out_dir = Path(out_dir)
    tensors, config = checkpoint_contents(unet, base_model=base_model, metadata=metadata)
    bit_map = BitMap({n: LayerBits(e["w"], e["a"]) for n, e in config["layers"].items()})
    files = {
        WEIGHTS_FILE: safetensors_bytes(tensors, {"format": FORMAT, "version": str(VERSION),
                                                  "base_model": str(base_model),
                                                  "unet_hash": str(config["unet_hash"])}),
        BITMAP_FILE: bit_map.dumps(BITMAP_FILE).encode("utf-8"),
        REPORT_FILE: (quantization_report(unet).format() + "\n").encode("utf-8"),
        # Written last: its presence marks a complete checkpoint.
        CONFIG_FILE: (json.dumps(config, indent=2, sort_keys=True) + "\n").encode("utf-8"),
    }
    if out_dir.exists() and not out_dir.is_dir():
        raise MixDQError(f"{out_dir}: exists and is not a folder; refusing to overwrite")
    if out_dir.is_dir():
        clean_stale_temps(out_dir)
        clean_stale_temps(out_dir.parent, f".{out_dir.name}.*.tmp")
    if out_dir.is_dir() and (out_dir / CONFIG_FILE).exists():
        try:
            old = json.loads((out_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            old = None
        if not isinstance(old, dict) or old.get("format") != FORMAT:
            raise MixDQError(f"{out_dir}: its {CONFIG_FILE} is unreadable or not a {FORMAT}; "
                             f"use another --out or delete it")
        diff = settings_difference(old, config)
        if diff:
            raise MixDQError(f"{out_dir}: holds a checkpoint made with other settings ({diff}); "
                             f"use another --out or delete it")
        stale = [f for f, data in files.items()
                 if not (out_dir / f).is_file() or (out_dir / f).read_bytes() != data]
        for name in stale:  # only the checkpoint's own files, the config last
            write_bytes(out_dir / name, files[name])
        return out_dir
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise MixDQError(f"{out_dir}: exists and is not a mixdq checkpoint; refusing to overwrite")
    clean_stale_temps(out_dir.parent, f".{out_dir.name}.*.tmp")
    try:
        with atomic_path(out_dir) as tmp:
            tmp.mkdir()
            for name, data in files.items():
                with open(tmp / name, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            if out_dir.is_dir():  # the empty folder given as --out
                out_dir.rmdir()
    except OSError as e:
        raise write_error(out_dir, e) from None
    return out_dir


def finished_checkpoint(out_dir: str | Path, settings: dict) -> bool:
    """Whether ``out_dir`` holds a complete checkpoint made with ``settings`` (the ``settings``
    entry its ``quant_config.json`` records) whose files verify: then there is nothing to do.

    Returns ``False`` for no checkpoint, or one with these settings whose files are missing or
    damaged (redoing it rewrites them).

    Raises:
        MixDQError: a checkpoint made with other settings (naming the first difference), or a
            ``quant_config.json`` that is unreadable: refused before any work is done.
    """
    out_dir = Path(out_dir)
    if not (out_dir / CONFIG_FILE).is_file():
        return False
    try:
        old = json.loads((out_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        old = None
    if not isinstance(old, dict) or old.get("format") != FORMAT:
        raise MixDQError(f"{out_dir}: its {CONFIG_FILE} is unreadable or not a {FORMAT}; "
                         f"use another --out or delete it")
    if "settings" not in old:
        raise MixDQError(f"{out_dir}: holds a checkpoint without recorded settings (made by an "
                         f"older mixdq or by the library); use another --out or delete it")
    diff = first_difference(old["settings"], settings, "settings")
    if diff:
        raise MixDQError(f"{out_dir}: holds a checkpoint made with other settings ({diff}); "
                         f"use another --out or delete it")
    try:
        config = read_config(out_dir)
        verify_tensors(out_dir, config, _read_tensors(out_dir / WEIGHTS_FILE))
    except MixDQError:
        return False
    return all((out_dir / name).is_file() for name in (BITMAP_FILE, REPORT_FILE))


def read_config(quant_dir: str | Path) -> dict:
    """Read and check ``quant_config.json`` of a checkpoint folder.

    Raises:
        MixDQError: missing folder or files, malformed JSON, wrong format or version.
    """
    quant_dir = Path(quant_dir)
    if not quant_dir.is_dir():
        raise MixDQError(f"quantized checkpoint {quant_dir}: no such folder")
    for file in (CONFIG_FILE, WEIGHTS_FILE):
        if not (quant_dir / file).is_file():
            raise MixDQError(f"quantized checkpoint {quant_dir}: missing {file}")
    try:
        config = json.loads((quant_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MixDQError(f"quantized checkpoint {quant_dir}: malformed {CONFIG_FILE} "
                         f"({str(e).splitlines()[0]})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise MixDQError(f"quantized checkpoint {quant_dir}: {CONFIG_FILE} is not a {FORMAT}")
    if config.get("version") != VERSION:
        raise MixDQError(f"quantized checkpoint {quant_dir}: format version "
                         f"{config.get('version')!r} is not supported (expected {VERSION})")
    if not isinstance(config.get("layers"), dict) or not config.get("unet_hash"):
        raise MixDQError(f"quantized checkpoint {quant_dir}: {CONFIG_FILE} lacks layers or "
                         f"the base UNet fingerprint")
    if not isinstance(config.get("tensors"), dict):
        raise MixDQError(f"quantized checkpoint {quant_dir}: {CONFIG_FILE} lacks the tensor "
                         f"hashes")
    return config


# What each tensor of a layer must be: dtype names as safetensors writes them.
def _expected_dtype(key: str, entry: dict) -> str | None:
    from .packing import values_per_byte

    kind = key.rsplit(".", 1)[1]
    if kind == "qweight":
        w = entry.get("w")
        return None if w is None else ("I8" if values_per_byte(w) == 1 else "U8")
    return {"wscale": "F32", "act_scale": "F32", "act_zero_point": "I32", "act_range": "F32",
            "act_range_steps": "F32", "bos_row": "F32"}.get(kind)


def verify_tensors(quant_dir: str | Path, config: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Check every tensor against ``quant_config.json``: the set of names, each dtype (from the
    layer's bits and the tensor's role), shape and sha256, and the range of integer values.

    Raises:
        MixDQError: one line naming the first tensor that does not match.
    """
    where = f"quantized checkpoint {quant_dir}"
    records = config["tensors"]
    for key in sorted(set(records) | set(tensors)):
        if key not in tensors:
            raise MixDQError(f"{where}: tensor {key} listed in {CONFIG_FILE} is missing from "
                             f"{WEIGHTS_FILE}")
        if key not in records:
            raise MixDQError(f"{where}: tensor {key} of {WEIGHTS_FILE} is not listed in "
                             f"{CONFIG_FILE}")
        t, rec = tensors[key], records[key]
        layer = key.rsplit(".", 1)[0]
        entry = config["layers"].get(layer)
        if not isinstance(entry, dict) or not isinstance(rec, dict):
            raise MixDQError(f"{where}: tensor {key} belongs to no layer of {CONFIG_FILE}")
        actual = _tensor_record(t)
        want = _expected_dtype(key, entry)
        if want is None or actual["dtype"] != want or rec.get("dtype") != want:
            raise MixDQError(f"{where}: tensor {key} is stored as {actual['dtype']}, expected "
                             f"{want or 'no such tensor'} for a layer with w={entry.get('w')} "
                             f"a={entry.get('a')}")
        if actual["shape"] != rec.get("shape"):
            raise MixDQError(f"{where}: tensor {key} has shape {actual['shape']}, "
                             f"{CONFIG_FILE} records {rec.get('shape')}")
        if actual["sha256"] != rec.get("sha256"):
            raise MixDQError(f"{where}: tensor {key} does not match its recorded sha256 "
                             f"(the file was modified or corrupted); re-quantize")
        bits = {"qweight": entry.get("w"), "act_zero_point": entry.get("a")}.get(
            key.rsplit(".", 1)[1])
        if bits is not None and t.numel():
            lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1  # signed codes, zero points too
            vmin, vmax = int(t.min()), int(t.max())
            signed = t.dtype == torch.int8 or key.endswith(".act_zero_point")
            if signed and (vmin < lo or vmax > hi):
                raise MixDQError(f"{where}: tensor {key} holds values in [{vmin}, {vmax}], "
                                 f"outside the {bits}-bit range [{lo}, {hi}] that "
                                 f"{CONFIG_FILE} gives layer {layer}")


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error type for corrupt files
        raise MixDQError(f"{path}: not a readable safetensors file "
                         f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def load_quantized(fp_unet: nn.Module, quant_dir: str | Path) -> nn.Module:
    """Apply a quantized checkpoint to a fresh float UNet, in place.

    The result computes exactly what the quantized UNet that was saved computed.

    Args:
        fp_unet: the float base UNet the checkpoint was made from (any device and dtype).
        quant_dir: the checkpoint folder.

    Returns:
        ``fp_unet``, with its layers swapped for quantized ones.

    Raises:
        MixDQError: missing or malformed files, a UNet that was already quantized, a different
            base UNet (fingerprint mismatch), layers that do not match.
    """
    quant_dir = Path(quant_dir)
    config = read_config(quant_dir)
    if _quantized_layers(fp_unet):
        raise MixDQError("load_quantized needs a fresh float UNet; this one is already quantized")
    actual = unet_hash(fp_unet)
    if actual != config["unet_hash"]:
        raise MixDQError(f"quantized checkpoint {quant_dir} was made from a different UNet "
                         f"(base model {config.get('base_model')!r}, fingerprint "
                         f"{config['unet_hash'][:12]}; this UNet's is {str(actual)[:12]}); "
                         f"load it onto the model it was quantized from")
    tensors = _read_tensors(quant_dir / WEIGHTS_FILE)
    layers = quantizable_layers(fp_unet)
    clock = None
    if config.get("step_timesteps"):  # timestep-dependent activation ranges (quant.steps)
        clock = StepClock(config["step_timesteps"])
    for name in layers:
        if name not in config["layers"]:
            raise MixDQError(f"quantized checkpoint {quant_dir}: layer {name} of the UNet is "
                             f"missing from the checkpoint")
    for name, entry in config["layers"].items():
        if name not in layers:
            raise MixDQError(f"quantized checkpoint {quant_dir}: layer {name} is not a "
                             f"Linear/Conv2d of this UNet")
    verify_tensors(quant_dir, config, tensors)
    for name, entry in config["layers"].items():
        layer = _load_layer(layers[name], name, entry, tensors, quant_dir)
        if clock is not None and f"{name}.act_range_steps" in tensors:
            ranges = tensors[f"{name}.act_range_steps"]
            if ranges.dim() != 3 or ranges.shape[0] != len(clock.timesteps):
                raise MixDQError(f"quantized checkpoint {quant_dir}: {name}.act_range_steps has "
                                 f"shape {list(ranges.shape)}, expected "
                                 f"[{len(clock.timesteps)}, slices, 2]")
            layer.set_step_ranges(ranges.tolist(), clock)
        set_submodule(fp_unet, name, layer)
    if clock is not None:
        install_clock(fp_unet, clock)
    fp_unet.mixdq_base_hash = actual
    return fp_unet


def _load_layer(module: nn.Module, name: str, entry: dict, tensors: dict, quant_dir: Path):
    def tensor(key: str) -> torch.Tensor:
        try:
            return tensors[f"{name}.{key}"]
        except KeyError:
            raise MixDQError(f"quantized checkpoint {quant_dir}: missing tensor {name}.{key}") \
                from None

    cls = qmodule_class(module)
    try:
        kind, shape, w, a = entry["kind"], tuple(entry["shape"]), entry["w"], entry["a"]
        split, bos, method = entry["split"], bool(entry["bos"]), entry["weight_scale"]
    except (KeyError, TypeError):
        raise MixDQError(f"quantized checkpoint {quant_dir}: malformed entry for layer {name}") \
            from None
    if cls is None or cls.kind != kind or tuple(module.weight.shape) != shape:
        raise MixDQError(f"quantized checkpoint {quant_dir}: layer {name} is a {kind} of weight "
                         f"shape {shape} in the checkpoint, but {type(module).__name__} "
                         f"{tuple(module.weight.shape)} in this UNet")
    layer = cls.from_module(module, None, None, name=name, weight_scale=method, split=split,
                            bos=bos)
    check_bits(w, "weight", name)
    check_bits(a, "activation", name)
    if w is not None:
        k = module.weight[0].numel()
        layer.pin_weight(w, unpack(tensor("qweight"), w, k), tensor("wscale"))
    if f"{name}.act_range" in tensors:
        layer.set_act_range(tensor("act_range").tolist())
    layer.set_bits(a=a)
    if a is not None:
        params = layer.act_params(a)
        saved_scale, saved_zp = tensor("act_scale"), tensor("act_zero_point")
        if (saved_zp.tolist() != [zp for _, zp in params]
                or not torch.equal(saved_scale, torch.stack([s.cpu() for s, _ in params]))):
            raise MixDQError(f"quantized checkpoint {quant_dir}: layer {name}: activation "
                             f"scale/zero point disagree with its calibrated range")
    if f"{name}.bos_row" in tensors:
        layer.bos_row = tensor("bos_row").to(module.weight.device)
    return layer
