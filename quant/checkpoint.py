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
from .utils.io import atomic_path, write_json, write_text

FORMAT = "mixdq-quantized-unet"
VERSION = 1
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


def save_quantized(unet: nn.Module, out_dir: str | Path, *, base_model: str,
                   metadata: dict | None = None) -> Path:
    """Write the quantized checkpoint of a prepared, calibrated ``unet`` (atomically).

    Args:
        unet: a UNet from :func:`quant.quantize.quantize_unet` (or :func:`load_quantized`).
        out_dir: the checkpoint folder; an existing checkpoint there is replaced.
        base_model: what the float model was loaded from (Hub id or folder), for the record.
        metadata: extra JSON-serializable entries for ``quant_config.json``.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        MixDQError: no quantized layers, or ``out_dir`` is a non-empty folder that is not a
            checkpoint (never overwritten).
    """
    from safetensors.torch import save_file

    from . import __version__

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir())
                                                       and not (out_dir / CONFIG_FILE).exists())):
        raise MixDQError(f"{out_dir}: exists and is not a mixdq checkpoint; refusing to overwrite")
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
            tensors[f"{name}.act_scale"] = form.act_scale.contiguous()
            tensors[f"{name}.act_zero_point"] = form.act_zero_point.contiguous()
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
              **(metadata or {})}
    clock = getattr(unet, "mixdq_step_clock", None)
    if clock is not None and any(m.step_ranges is not None for m in layers.values()):
        config["step_timesteps"] = list(clock.timesteps)
    bit_map = BitMap({n: LayerBits(e["w"], e["a"]) for n, e in entries.items()})
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        save_file(tensors, str(tmp / WEIGHTS_FILE),
                  metadata={"format": FORMAT, "version": str(VERSION),
                            "base_model": str(base_model), "unet_hash": str(base_hash)})
        write_json(tmp / CONFIG_FILE, config)
        bit_map.save(tmp / BITMAP_FILE)
        write_text(tmp / REPORT_FILE, quantization_report(unet).format() + "\n")
    return out_dir


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
    return config


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
