"""Tiny offline builds of the other pipeline families, from the real diffusers/transformers classes.

Like the built-in ``tiny`` (:mod:`quant.models.tiny`): random weights from a fixed seed, widths
small enough for a CPU, built once and cached as a diffusers folder.

- ``tiny-sd15``: SD 1.5's structure - one ``CLIPTextModel`` (quick-GELU), conv ``proj_in``/
  ``proj_out`` (no linear projection), no added conditions, cross-attention in the first two of
  three levels, ``LCMScheduler`` (SD 1.5 + LCM-LoRA at 4 steps).
- ``tiny-sd21``: SD 2.1 / SD-Turbo's structure - one OpenCLIP-H-style text encoder (GELU, ``!``
  padding), linear projection, per-level head counts, no pooled or added conditions,
  Euler-ancestral "trailing" scheduler.
- ``tiny-sdxl``: the ``tiny`` SDXL weights with SDXL-Lightning's scheduler (Euler, trailing) and
  SDXL base's ``force_zeros_for_empty_prompt``: the multi-step (2-8 steps) and guided SDXL case.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from ..errors import MixDQError
from ..utils.io import atomic_path
from ..utils.quiet import quiet_libraries
from .tiny import TinyConfig, _vae, build_tiny_pipeline, cache_root

TINY_FAMILIES = ("tiny-sd15", "tiny-sd21", "tiny-sdxl")
_SEED = 0
_BLOCKS = (32, 64, 64)
_VERSION = 1  # bump when a build below changes


def _sd_unet(text_dim: int, heads, linear: bool):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        block_out_channels=_BLOCKS, layers_per_block=2, attention_head_dim=heads,
        norm_num_groups=16, cross_attention_dim=text_dim, use_linear_projection=linear)


def _text_encoder(tokenizer, hidden: int, heads: int, act: str):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), max_position_embeddings=77, num_hidden_layers=2,
        hidden_size=hidden, intermediate_size=4 * hidden, num_attention_heads=heads,
        hidden_act=act, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))


def _scheduler(name: str):
    import diffusers

    common = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
              "beta_schedule": "scaled_linear", "prediction_type": "epsilon"}
    if name == "LCMScheduler":
        return diffusers.LCMScheduler(**common, timestep_spacing="leading", steps_offset=1,
                                      original_inference_steps=50, set_alpha_to_one=True)
    return getattr(diffusers, name)(**common, timestep_spacing="trailing", steps_offset=1)


def _sd_pipeline(text_hidden: int, text_heads: int, act: str, pad: str, unet_heads, linear: bool,
                 scheduler: str, scaling_factor: float):
    from diffusers import StableDiffusionPipeline

    from .tokenizer import build_clip_tokenizer

    tokenizer = build_clip_tokenizer(pad_token=pad) if pad else build_clip_tokenizer()
    torch.manual_seed(_SEED)
    unet = _sd_unet(text_hidden, unet_heads, linear)
    torch.manual_seed(_SEED + 1)
    encoder = _text_encoder(tokenizer, text_hidden, text_heads, act)
    torch.manual_seed(_SEED + 2)
    vae = _vae(TinyConfig())
    vae.register_to_config(scaling_factor=scaling_factor, force_upcast=False)
    return StableDiffusionPipeline(vae=vae, text_encoder=encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=_scheduler(scheduler), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def build_tiny_family(name: str):
    """Build one tiny family pipeline in memory (float32, CPU), deterministically.

    Raises:
        MixDQError: an unknown name.
    """
    if name == "tiny-sd15":
        return _sd_pipeline(32, 4, "quick_gelu", None, 4, False, "LCMScheduler", 0.18215)
    if name == "tiny-sd21":
        return _sd_pipeline(64, 4, "gelu", "!", (2, 4, 4), True,
                            "EulerAncestralDiscreteScheduler", 0.18215)
    if name == "tiny-sdxl":
        pipe = build_tiny_pipeline(TinyConfig())
        pipe.scheduler = _scheduler("EulerDiscreteScheduler")
        pipe.register_to_config(force_zeros_for_empty_prompt=True)
        return pipe
    raise MixDQError(f"unknown tiny model {name}; known: tiny, {', '.join(TINY_FAMILIES)}")


def _fingerprint(name: str) -> str:
    import diffusers
    import transformers

    blob = json.dumps([name, _SEED, _VERSION, TinyConfig().fingerprint(), diffusers.__version__,
                       transformers.__version__])
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def tiny_family_path(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The diffusers folder of a tiny family pipeline, built and saved on first use."""
    if name not in TINY_FAMILIES:
        raise MixDQError(f"unknown tiny model {name}; known: tiny, {', '.join(TINY_FAMILIES)}")
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    path = root / f"{name}-{_fingerprint(name)}"
    if not (path / "model_index.json").exists():
        with quiet_libraries():
            pipe = build_tiny_family(name)
            with atomic_path(path) as tmp:
                pipe.save_pretrained(tmp)
    return path
