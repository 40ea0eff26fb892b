"""The split mode's final pick, measured: images of each candidate against full precision.

The original picked its budget share by the pixel MSE of **one** image, computed on uint8 values
(which wraps modulo 256). :class:`ImageScore` measures each candidate allocation on at least four
calibration prompts, in float: the pipeline's images with the candidate's bits against the
full-precision images of the same prompts and seeds, by

    score = MSE / Var(reference) + (1 - SSIM)

(both terms are 0 for identical images and about 1 for unrelated ones; SSIM is
:func:`quant.sensitivity.metrics.uniform_ssim` with the original's near-global window). Lower is
better. Weights are rated first with every activation in float; :meth:`ImageScore.with_weights`
gives the score for the activation program with the chosen weights in place, whose activation
ranges are calibrated on the calibration batches (as ``quant.quantize.quantize_unet`` does).

    score = ImageScore(pipe, prompts[:4], batches)
    allocation = allocate(table, Budget.bits("4"), Budget.bits("8"), config, protected, score)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import torch

from ..bitmap import BitMap, LayerBits
from ..errors import MixDQError

#: The fewest prompts a measured pick may use (the original used one image).
MIN_PROMPTS = 4


@dataclasses.dataclass
class Measured:
    """One rated candidate: its target, score, MSE and SSIM (means over the prompts)."""

    target: str
    score: float
    mse: float
    ssim: float


class ImageScore:
    """A split-mode score: images made with the candidate's bits against full precision.

    Args:
        pipe: the full-precision pipeline (its UNet is quantized in place while rating and left
            with every layer in float afterwards).
        prompts: at least :data:`MIN_PROMPTS` prompts (calibration prompts: the pick is part of
            calibration).
        calibration: UNet call batches for the activation ranges (needed to rate activations).
        seed: prompt ``i`` uses seed ``seed + i``.
        generate_kwargs: further :func:`quant.generate.generate` arguments (steps, guidance,
            resolution).
        bos, weight_scale, conv1_split, momentum: how candidates are quantized (as for
            :func:`quant.quantize.quantize_unet`).
        weight_bits: the chosen weights, for rating activations (see :meth:`with_weights`).
    """

    def __init__(self, pipe, prompts: list[str], calibration: Iterable[Mapping] = (), *,
                 seed: int = 42, generate_kwargs: dict | None = None, bos: bool = True,
                 weight_scale: str = "minmax", conv1_split: bool = False,
                 momentum: float = 0.95, weight_bits: Mapping[str, int | None] | None = None,
                 _reference: torch.Tensor | None = None):
        if len(prompts) < MIN_PROMPTS:
            raise MixDQError(f"a measured pick needs at least {MIN_PROMPTS} prompts, got "
                             f"{len(prompts)}")
        self.pipe = pipe
        self.prompts = list(prompts)
        self.calibration = list(calibration)
        self.seed = seed
        self.generate_kwargs = dict(generate_kwargs or {})
        self.quant = {"bos": bos, "weight_scale": weight_scale, "conv1_split": conv1_split}
        self.momentum = momentum
        self.weight_bits = None if weight_bits is None else dict(weight_bits)
        self.history: list[Measured] = []
        self.reference = self._images() if _reference is None else _reference

    def with_weights(self, weight_bits: Mapping[str, int | None]) -> ImageScore:
        """The score for the activation program, with ``weight_bits`` in place."""
        other = ImageScore(self.pipe, self.prompts, self.calibration, seed=self.seed,
                           generate_kwargs=self.generate_kwargs, momentum=self.momentum,
                           weight_bits=weight_bits, _reference=self.reference, **self.quant)
        other.history = self.history
        return other

    def _images(self) -> torch.Tensor:
        from ..generate import generate

        images = generate(self.pipe, self.prompts, seed=self.seed, output_type="pt",
                          **self.generate_kwargs)
        return images.float().clamp(0, 1)

    @torch.no_grad()
    def __call__(self, target: str, bits: Mapping[str, int | None]) -> float:
        from ..quantize import prepare, quantize_unet
        from ..sensitivity.metrics import uniform_ssim

        unet = self.pipe.unet
        if target == "weight":
            bit_map = BitMap({n: LayerBits(b, None) for n, b in bits.items()})
            prepare(unet, bit_map, **self.quant)
        elif target == "act":
            weights = self.weight_bits or {}
            bit_map = BitMap({n: LayerBits(weights.get(n), b) for n, b in bits.items()})
            if not self.calibration:
                raise MixDQError("rating activation candidates needs calibration batches")
            quantize_unet(unet, bit_map, self.calibration, momentum=self.momentum,
                          progress=False, **self.quant)
        else:
            raise MixDQError(f"target must be weight or act, got {target!r}")
        try:
            images = self._images()
        finally:
            prepare(unet, BitMap({n: LayerBits(None, None) for n in bits}), **self.quant)
        ref = self.reference
        mse = (images - ref).square().mean((1, 2, 3))
        var = ref.var(dim=(1, 2, 3)).clamp(min=1e-12)
        side = min(ref.shape[-2:])
        window = side - 1 if side % 2 == 0 else side - 2
        ssim = uniform_ssim(images, ref, max(window, 3))
        score = float((mse / var).mean() + (1 - ssim).mean())
        self.history.append(Measured(target, score, float(mse.mean()), float(ssim.mean())))
        return score
