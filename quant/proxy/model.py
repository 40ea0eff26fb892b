"""The proxy pipeline: the ``tiny`` SDXL-Turbo-shaped architecture, trained on the shapes dataset.

Exactly ``tiny``'s classes and sizes (so every structural property of ``tiny`` holds, and the
two share layer names), at 32 px: the 4x VAE gives the UNet an 8x8 latent. Its scheduler predicts
``v`` rather than epsilon (see :mod:`quant.proxy.train`). The trained pipeline ships with the
package as a diffusers folder whose weights are stored in float16 (they load as float32 on CPU).
"""

from __future__ import annotations


import torch

from ..errors import MixDQError
from ..models.proxy_files import (TRAIN_HINT, classifier_file, pipeline_dir,  # noqa: F401
                                  require_pipeline_dir, weights_root)
from ..models.tiny import TinyConfig, build_tiny_pipeline

RESOLUTION = 32  # image side in pixels


def proxy_config(seed: int = 0) -> TinyConfig:
    """The untrained proxy's sizes: exactly ``tiny``'s, for 32 px images (8x8 latents)."""
    return TinyConfig(seed=seed, sample_size=RESOLUTION // 4)


def build_untrained(seed: int = 0):
    """The proxy pipeline with freshly initialised weights (deterministic from ``seed``)."""
    return build_tiny_pipeline(proxy_config(seed))


def encode_text(pipe, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Text conditioning exactly as ``StableDiffusionXLPipeline.encode_prompt`` builds it, but
    differentiable (training needs gradients through the text encoders).

    Returns:
        ``(prompt_embeds [B, 77, D1 + D2], pooled_prompt_embeds [B, P])``: the penultimate hidden
        states of both encoders concatenated, and the second encoder's projected pooled output.
    """
    hidden = []
    pooled = None
    device = pipe.unet.device
    for tokenizer, encoder in ((pipe.tokenizer, pipe.text_encoder),
                               (pipe.tokenizer_2, pipe.text_encoder_2)):
        ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids.to(device)
        out = encoder(ids, output_hidden_states=True)
        hidden.append(out.hidden_states[-2])
        if out[0].ndim == 2:
            pooled = out[0]
    return torch.cat(hidden, dim=-1), pooled


def add_time_ids(batch: int, resolution: int = RESOLUTION) -> torch.Tensor:
    """SDXL's micro-conditioning (original size, crop offset, target size) for a full image."""
    ids = torch.tensor([resolution, resolution, 0, 0, resolution, resolution], dtype=torch.float32)
    return ids.expand(batch, 6)


def check_resolution(pipe) -> None:
    """Raise :class:`MixDQError` if ``pipe`` is not a proxy-sized pipeline."""
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    if side != RESOLUTION:
        raise MixDQError(f"the proxy metrics need a {RESOLUTION} px pipeline; this one makes "
                         f"{side} px images")
