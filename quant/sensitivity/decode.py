"""Images for the content metric, made with the pipeline's own conventions.

One-step calibration without guidance (SDXL-Turbo): the image depends only on the UNet output and
the recorded latents, so :class:`OneStepDecoder` finishes the pipeline's work - undo
``scale_model_input`` on the recorded sample, one scheduler step, the VAE's scaling, decode,
watermark - without re-running the text encoders or the UNet. Any other calibration
(several steps, or guidance) re-runs the stock pipeline with the same prompts and seeds
(:func:`regenerate`), since a perturbed UNet changes what later steps see.
"""

from __future__ import annotations

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


def regenerate(pipe, calib, batch_size: int) -> torch.Tensor:
    """Re-run the pipeline on the calibration prompts and seeds; images ``[N, 3, H, W]`` in [0, 1].

    Used for multi-step or guided calibrations: the pipeline's own UNet (perturbed by the caller)
    runs every step.
    """
    from ..generate import generate

    kwargs = calib.generate_kwargs()
    seed = kwargs.pop("seed")
    images = []
    for start in range(0, len(calib.prompts), batch_size):
        chunk = calib.prompts[start:start + batch_size]
        images.append(generate(pipe, chunk, seed=seed + start, output_type="pt", **kwargs))
    return torch.cat(images).float()
