"""The UNet call, shared by every stage: its input keys, one call on a batch, module surgery.

A leaf module (imports only torch and :mod:`quant.errors`).
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from .errors import MixDQError

# keyword inputs of a diffusers UNet call, as recorded by the calibrate stage; the optional ones
# are recorded when the pipeline passes them (`timestep_cond` for guidance-embedded models,
# `class_labels` and the attention masks for pipelines that use them)
OPTIONAL_INPUTS = ("timestep_cond", "class_labels", "attention_mask", "encoder_attention_mask")
UNET_INPUTS = ("sample", "timestep", "encoder_hidden_states", "added_cond_kwargs",
               *OPTIONAL_INPUTS)
REQUIRED_INPUTS = ("sample", "timestep", "encoder_hidden_states")


def set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule called ``name`` (a dotted path) of ``root`` by ``module``."""
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def to_device(obj, device, dtype):
    """Tensors (also inside mappings) moved to ``device``; floating ones cast to ``dtype``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, dtype if obj.is_floating_point() else None)
    if isinstance(obj, Mapping):
        return {k: to_device(v, device, dtype) for k, v in obj.items()}
    return obj


def run_unet(unet: nn.Module, batch: Mapping) -> torch.Tensor:
    """Call ``unet`` on one calibration batch (moved to its device and dtype); return its output.

    Raises:
        MixDQError: a batch without ``sample``, ``timestep`` or ``encoder_hidden_states``.
    """
    missing = [k for k in REQUIRED_INPUTS if batch.get(k) is None]
    if missing:
        raise MixDQError(f"calibration batch lacks {', '.join(missing)} "
                         f"(has {', '.join(sorted(batch))})")
    param = next(unet.parameters())
    kwargs = {k: to_device(batch[k], param.device, param.dtype) for k in UNET_INPUTS
              if batch.get(k) is not None}
    return unet(**kwargs, return_dict=False)[0]


def config_fingerprint(unet: nn.Module) -> str:
    """A short hash of the UNet's configuration (its architecture, not its weights)."""
    config = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """``10 log10(sum ref^2 / sum (approx - ref)^2)`` in dB (inf when equal), in float64."""
    ref = reference.double()
    noise = (approx.double() - ref).square().sum()
    if noise == 0:
        return float("inf")
    return float(10 * torch.log10(ref.square().sum() / noise))


def sdxl_unet_config() -> dict:
    """The real SDXL UNet's diffusers configuration (``quant/configs/sdxl_unet.json``)."""
    return json.loads(resources.files("quant.configs").joinpath("sdxl_unet.json").read_text())


def random_unet(config: str | Path | Mapping, *, dtype=None, seed: int = 0, meta: bool = False):
    """A diffusers UNet built from ``config`` (a dict or a ``config.json``) with random weights.

    Built on the meta device and filled in place (normal, std 0.02) in ``dtype`` (default fp16),
    so a full SDXL UNet needs only its fp16 bytes (~5 GB) of memory. ``meta=True`` returns the
    meta-device model (shapes only).
    """
    from diffusers import UNet2DConditionModel

    if not isinstance(config, Mapping):
        config = json.loads(Path(config).read_text(encoding="utf-8"))
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(dict(config))
    if meta:
        return unet
    unet = unet.to(dtype=dtype or torch.float16).to_empty(device="cpu")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in list(unet.parameters()) + list(unet.buffers()):
            tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.02)
    return unet.eval()
