"""Images for the content metric, made with the pipeline's own conventions.

One-step calibration without guidance (SDXL-Turbo): the image depends only on the UNet output and
the recorded latents, so :class:`OneStepDecoder` finishes the pipeline's work - undo
``scale_model_input`` on the recorded sample, one scheduler step, the VAE's scaling, decode,
watermark - without re-running the text encoders or the UNet. Any other calibration
(several steps, or guidance) re-runs the stock pipeline with the same prompts and seeds
(:func:`regenerate`), since a perturbed UNet changes what later steps see.

What stays cached in a multi-step regeneration: the first step's UNet input is the recorded one
(same prompts, seeds and text encoding), so the perturbed UNet's first-step output is the one the
sensitivity pass already computed on the recorded samples, block-cached; :func:`regenerate`
takes those outputs (``first_step``) and the pipeline skips that UNet call. Every later step's
input depends on the perturbed earlier steps, so those calls run in full.
"""

from __future__ import annotations

import contextlib

import torch

from ..errors import MixDQError


def can_decode_directly(calib) -> bool:
    """Whether UNet outputs of ``calib`` decode to its images without re-running the pipeline."""
    return calib.steps == 1 and not calib.cfg


class OneStepDecoder:
    """Decode one-step UNet outputs into images in ``[0, 1]``, as the SDXL pipeline does.

    The VAE is upcast to float32 once if its config forces that (the pipeline does the same for
    every decode). The final step of a one-step sampler adds no noise (Euler ancestral's
    ``sigma_up`` is 0 at the last step), so the per-prompt generators do not matter; they are
    seeded like the pipeline's anyway.

    Args:
        pipe: the SDXL-style pipeline the calibration was recorded with.
        calib: the :class:`quant.calib.CalibrationData` (one step, no guidance).
    """

    def __init__(self, pipe, calib):
        if not can_decode_directly(calib):
            raise MixDQError("direct decoding needs a one-step calibration without guidance")
        self.pipe = pipe
        self.seed = calib.seed
        vae = pipe.vae
        if vae.dtype == torch.float16 and vae.config.force_upcast:
            vae.to(torch.float32)
        self.vae_dtype = vae.dtype
        scheduler = self._scheduler()
        self.timestep = scheduler.timesteps[0]
        if abs(float(self.timestep) - calib.timesteps[0]) > 1e-3:
            raise MixDQError(f"the pipeline's scheduler starts at timestep "
                             f"{float(self.timestep)}, the calibration at {calib.timesteps[0]}")
        # scale_model_input multiplies by a per-step constant; read it off the scheduler.
        self.input_scale = scheduler.scale_model_input(torch.ones(()), self.timestep)

    def _scheduler(self):
        scheduler = type(self.pipe.scheduler).from_config(self.pipe.scheduler.config)
        scheduler.set_timesteps(1)
        return scheduler

    @torch.no_grad()
    def __call__(self, sample: torch.Tensor, output: torch.Tensor,
                 prompt_index: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` in ``[0, 1]`` (float, before PNG rounding).

        Args:
            sample: the recorded UNet input (latents after ``scale_model_input``).
            output: the (perturbed) UNet output for it.
            prompt_index: prompt of each row (seeds ``seed + i``).
        """
        latents = (sample.float() / self.input_scale.to(sample.device)).to(sample.dtype)
        generators = [torch.Generator("cpu").manual_seed(self.seed + int(i))
                      for i in prompt_index.tolist()]
        scheduler = self._scheduler()
        scheduler.scale_model_input(torch.ones(()), self.timestep)  # the step checks it was called
        latents = scheduler.step(output, self.timestep, latents, generator=generators,
                                 return_dict=False)[0]
        vae = self.pipe.vae
        latents = latents.to(self.vae_dtype)
        mean = getattr(vae.config, "latents_mean", None)
        std = getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            mean = torch.tensor(mean).view(1, -1, 1, 1).to(latents.device, latents.dtype)
            std = torch.tensor(std).view(1, -1, 1, 1).to(latents.device, latents.dtype)
            latents = latents * std / vae.config.scaling_factor + mean
        else:
            latents = latents / vae.config.scaling_factor
        image = vae.decode(latents, return_dict=False)[0]
        if getattr(self.pipe, "watermark", None) is not None:
            image = self.pipe.watermark.apply_watermark(image)
        return self.pipe.image_processor.postprocess(image, output_type="pt")


class FirstStepOutputs:
    """The UNet's first-step outputs per calibration row, gathered from block-cached batches.

    ``add(batch, output)`` keeps the rows of ``batch`` whose ``step`` is 0, by
    ``(prompt_index, cond)``; :func:`regenerate` then answers each pipeline call's first UNet
    call from them, in the pipeline's row order (unconditional rows first, as recorded).
    """

    def __init__(self):
        self.rows: dict[tuple[int, bool], torch.Tensor] = {}

    def add(self, batch: dict, output: torch.Tensor) -> None:
        first = batch["step"] == 0
        if not bool(first.any()):
            return
        keys = zip(batch["prompt_index"][first].tolist(), batch["cond"][first].tolist())
        for key, row in zip(keys, output[first]):
            self.rows[(int(key[0]), bool(key[1]))] = row

    def for_call(self, start: int, stop: int, n_rows: int) -> torch.Tensor | None:
        """The first-step output of prompts ``start..stop-1`` (``n_rows`` rows), if all present."""
        n = stop - start
        conds = [False] * (n_rows - n) + [True] * n  # guided: the unconditional half first
        keys = [(start + i % n, c) for i, c in enumerate(conds)]
        if any(k not in self.rows for k in keys):
            return None
        return torch.stack([self.rows[k] for k in keys])


def regenerate(pipe, calib, batch_size: int,
               first_step: FirstStepOutputs | None = None) -> torch.Tensor:
    """Re-run the pipeline on the calibration prompts and seeds; images ``[N, 3, H, W]`` in [0, 1].

    Used for multi-step or guided calibrations: the pipeline's own UNet (perturbed by the caller)
    runs every step, except the first when ``first_step`` holds its outputs.
    """
    from ..generate import generate

    kwargs = calib.generate_kwargs()
    seed = kwargs.pop("seed")
    images = []
    for start in range(0, len(calib.prompts), batch_size):
        chunk = calib.prompts[start:start + batch_size]
        with _first_call_from(pipe.unet, first_step, start, start + len(chunk)):
            images.append(generate(pipe, chunk, seed=seed + start, output_type="pt", **kwargs))
    return torch.cat(images).float()


@contextlib.contextmanager
def _first_call_from(unet, first_step: FirstStepOutputs | None, start: int, stop: int):
    """While open, the UNet's first call returns ``first_step``'s outputs without computing."""
    if first_step is None:
        yield
        return
    forward = unet.forward
    calls = [0]

    def first_cached(sample, *args, return_dict: bool = True, **kwargs):
        calls[0] += 1
        out = first_step.for_call(start, stop, sample.shape[0]) if calls[0] == 1 else None
        if out is None:
            return forward(sample, *args, return_dict=return_dict, **kwargs)
        out = out.to(sample.device, sample.dtype)
        if return_dict:
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            return UNet2DConditionOutput(sample=out)
        return (out,)

    unet.forward = first_cached  # an instance attribute: nn.Module.__call__ calls it
    try:
        yield
    finally:
        del unet.forward
