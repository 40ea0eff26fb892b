"""Image generation with fixed seeds, shared by ``mixdq generate`` and the benchmark."""

from __future__ import annotations

import torch


def default_resolution(pipe) -> int:
    """The pipeline's native side length in pixels (512 for SDXL-Turbo)."""
    return pipe.unet.config.sample_size * pipe.vae_scale_factor


@torch.no_grad()
def generate(pipe, prompts: list[str], *, steps: int = 1, guidance: float = 0.0,
             resolution: int | None = None, seed: int = 42, output_type: str = "pil"):
    """Generate one image per prompt; prompt ``i`` uses the generator seed ``seed + i``.

    Per-prompt seeds make an image independent of batching, so variants of a model compared on
    the same prompts see the same initial noise.

    Args:
        pipe: an SDXL-style diffusers pipeline.
        prompts: the prompts, one image each.
        steps: denoising steps (1 for SDXL-Turbo).
        guidance: classifier-free guidance scale (0 for SDXL-Turbo).
        resolution: image side in pixels; default :func:`default_resolution`.
        seed: seed of the first prompt.
        output_type: ``"pil"``, ``"pt"`` or ``"np"``, as in diffusers.

    Returns:
        The pipeline's ``images`` for all prompts, in order.
    """
    resolution = resolution or default_resolution(pipe)
    generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(len(prompts))]
    out = pipe(prompt=list(prompts), num_inference_steps=steps, guidance_scale=guidance,
               height=resolution, width=resolution, generator=generators,
               output_type=output_type)
    return out.images
