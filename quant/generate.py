"""Image generation with fixed seeds, shared by ``mixdq generate`` and the benchmark."""

from __future__ import annotations

import inspect
import math
import warnings

import torch

from .errors import MixDQError

# Largest image side accepted: 4x SDXL's native 1024 px already needs ~100 GB of activations in
# the VAE decoder; larger requests are mistakes that would end in an out-of-memory kill.
MAX_RESOLUTION = 4096


def check_generation_args(*, guidance: float | None = None, resolution: int | None = None) -> None:
    """Refuse a guidance scale that is negative, NaN or infinite, and a resolution that is not a
    multiple of 8 between 8 and :data:`MAX_RESOLUTION` (``None`` = the model's default)."""
    if guidance is not None:
        if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) \
                or not math.isfinite(guidance) or guidance < 0:
            raise MixDQError(f"guidance must be a finite number >= 0, got {guidance!r}")
    if resolution is not None:
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 8 \
                or resolution % 8 or resolution > MAX_RESOLUTION:
            raise MixDQError(f"resolution must be a multiple of 8 from 8 to {MAX_RESOLUTION} "
                             f"pixels, got {resolution!r}")


def warn_long_prompts(pipe, prompts: list[str]) -> list[int]:
    """Warn about prompts longer than the text encoder reads (77 CLIP tokens): the rest is cut.

    Returns:
        The indices (within ``prompts``) of the truncated prompts.
    """
    tokenizer = getattr(pipe, "tokenizer", None)
    limit = getattr(tokenizer, "model_max_length", None)
    if tokenizer is None or not isinstance(limit, int) or limit > 10**6:
        return []
    long = []
    for i, prompt in enumerate(prompts):
        n = len(tokenizer(prompt, truncation=False).input_ids)
        if n > limit:
            long.append(i)
            warnings.warn(f"mixdq: prompt {i} ({prompt[:40]!r}...) is {n} tokens; the text "
                          f"encoder reads only the first {limit}, the rest is ignored",
                          stacklevel=3)
    return long


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

    Raises:
        MixDQError: a guidance scale that is negative or not finite, a resolution that is not a
            multiple of 8 in ``8..MAX_RESOLUTION``.
    """
    check_generation_args(guidance=guidance, resolution=resolution)
    resolution = resolution or default_resolution(pipe)
    warn_long_prompts(pipe, prompts)
    generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(len(prompts))]
    kwargs = {}
    if "negative_prompt" in inspect.signature(pipe.__call__).parameters:
        kwargs["negative_prompt"] = [negative_prompt] * len(prompts)
    out = pipe(prompt=list(prompts), num_inference_steps=steps, guidance_scale=guidance,
               height=resolution, width=resolution, generator=generators,
               output_type=output_type, **kwargs)
    return out.images
