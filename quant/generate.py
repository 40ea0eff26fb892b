"""Image generation with fixed seeds, shared by ``mixdq generate`` and the benchmark."""

from __future__ import annotations

import inspect

import torch


def default_resolution(pipe) -> int:
    """The pipeline's native side length in pixels (512 for SDXL-Turbo)."""
    return pipe.unet.config.sample_size * pipe.vae_scale_factor


@torch.no_grad()
def generate(pipe, prompts: list[str], *, steps: int = 1, guidance: float = 0.0,
             resolution: int | None = None, seed: int = 42, output_type: str = "pil",
             negative_prompt: str = ""):
    """Generate one image per prompt; prompt ``i`` uses the generator seed ``seed + i``.

    Per-prompt seeds make an image independent of batching, so variants of a model compared on
    the same prompts see the same initial noise.

    Args:
        pipe: a text-to-image diffusers pipeline (SDXL, SD 1.5/2.1, or another family of
            :mod:`quant.models.families`); its own prompt encoding and decoding run.
        prompts: the prompts, one image each.
        steps: denoising steps (1 for SDXL-Turbo).
        guidance: classifier-free guidance scale (0 for SDXL-Turbo).
        resolution: image side in pixels; default :func:`default_resolution`.
        seed: seed of the first prompt.
        output_type: ``"pil"``, ``"pt"`` or ``"np"``, as in diffusers.
        negative_prompt: the unconditional prompt of classifier-free guidance (used when
            ``guidance > 1``), the same for every image. It is always encoded, empty included:
            SDXL's ``force_zeros_for_empty_prompt`` would otherwise zero the unconditional
            embedding, whose first (BOS) row then differs from every prompt's and breaks
            BOS-aware quantization. Pipelines without negative prompts (guidance-embedded
            LCM models) do not get one.

    Returns:
        The pipeline's ``images`` for all prompts, in order.
    """
    resolution = resolution or default_resolution(pipe)
    generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(len(prompts))]
    kwargs = {}
    if "negative_prompt" in inspect.signature(pipe.__call__).parameters:
        kwargs["negative_prompt"] = [negative_prompt] * len(prompts)
    out = pipe(prompt=list(prompts), num_inference_steps=steps, guidance_scale=guidance,
               height=resolution, width=resolution, generator=generators,
               output_type=output_type, **kwargs)
    return out.images
