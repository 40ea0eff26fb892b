"""The proxy pipeline: the ``tiny`` SDXL-Turbo-shaped architecture, trained on the shapes dataset.

``tiny``'s classes, layer names and widths (so every structural property of ``tiny`` holds), at
32 px: the 4x VAE gives the UNet an 8x8 latent. Two things make it fail under quantization the
way SDXL-Turbo does:

- **epsilon prediction, one step from t=999** (Euler ancestral, trailing), where the image is
  ``x0 = x - 14.6 * eps``: the UNet must pass its input noise through almost exactly, and any
  error of its output reaches the image multiplied by ``sigma_max`` = 14.6. A UNet this small does
  not learn such a precise pass-through by gradient descent in a CPU budget: the output
  GroupNorm's statistics over 128 values (2 channels x 8x8) fluctuate by ~9% from sample to
  sample, which caps the pass-through near 22 dB. So the proxy uses groups of 4 channels
  (``norm_num_groups=8``; SDXL has 10 channels per group over 128x128 positions) and starts
  training from :func:`init_noise_path`, an exact pass-through; everything is then trained.
- **a BOS outlier in the text embedding** (:func:`install_bos_outlier`): CLIP's first-token row
  in SDXL's penultimate hidden states is huge and the same for every prompt. Here the BOS token's
  input embedding is a fixed vector with one large entry (``bos_peak``), held fixed in training;
  the pre-LayerNorm residual stream carries it to the penultimate layer, and the causal mask keeps
  the row independent of the prompt.

The trained pipeline ships with the package as a diffusers folder whose weights are stored in
float16 (they load as float32 on CPU).
"""

from __future__ import annotations

import torch

from ..errors import MixDQError
from ..models.proxy_files import (TRAIN_HINT, classifier_file, pipeline_dir,  # noqa: F401
                                  require_pipeline_dir, weights_root)
from ..models.tiny import TinyConfig, build_tiny_pipeline

RESOLUTION = 32  # image side in pixels


NORM_GROUPS = 8  # 4 channels per GroupNorm group at the first level (tiny: 2); see above
BOS_PEAK = 48.0  # the BOS token's input-embedding entry (channel 0 of both encoders)


def proxy_config(seed: int = 0) -> TinyConfig:
    """The untrained proxy's sizes: ``tiny``'s, for 32 px images (8x8 latents), with
    :data:`NORM_GROUPS` GroupNorm groups."""
    return TinyConfig(seed=seed, sample_size=RESOLUTION // 4, norm_num_groups=NORM_GROUPS)


def build_untrained(seed: int = 0, bos_peak: float = BOS_PEAK, noise_path: bool = True):
    """The proxy pipeline before training (deterministic from ``seed``): random weights, the BOS
    outlier installed and (``noise_path``) the UNet's exact one-step noise pass-through."""
    pipe = build_tiny_pipeline(proxy_config(seed))
    install_bos_outlier(pipe, bos_peak)
    if noise_path:
        init_noise_path(pipe.unet, first_step_gain(pipe.scheduler))
    return pipe


def first_step_gain(scheduler) -> float:
    """``sqrt(sigma_max^2 + 1) / sigma_max``: the UNet sees ``x / sqrt(sigma^2 + 1)`` at t=999
    while epsilon is ``x / sigma`` minus the image's share, so this gain turns its input back
    into the noise."""
    ac = float(scheduler.alphas_cumprod[-1])
    sigma = ((1 - ac) / ac) ** 0.5
    return (sigma ** 2 + 1) ** 0.5 / sigma


def bos_rows(pipe, peak: float) -> list[torch.Tensor]:
    """The fixed BOS input embedding of each text encoder: ``peak`` in channel 0, zeros else."""
    rows = []
    for encoder in (pipe.text_encoder, pipe.text_encoder_2):
        row = torch.zeros(encoder.get_input_embeddings().weight.shape[1])
        row[0] = peak
        rows.append(row)
    return rows


@torch.no_grad()
def install_bos_outlier(pipe, peak: float) -> None:
    """Set the BOS token's input embedding of both encoders to :func:`bos_rows` (in place)."""
    bos = pipe.tokenizer.bos_token_id
    for encoder, row in zip((pipe.text_encoder, pipe.text_encoder_2), bos_rows(pipe, peak)):
        weight = encoder.get_input_embeddings().weight
        weight[bos] = row.to(weight)


def bos_outlier_ratio(prompt_embeds: torch.Tensor) -> float:
    """How far the BOS row stands out in a text embedding ``[B, 77, D]``: its largest magnitude
    over the median of the other tokens' largest magnitudes (per-tensor activation quantization
    of a key/value input spends its range on the former)."""
    peaks = prompt_embeds.detach().float().abs().amax(dim=-1)  # [B, 77]
    return float(peaks[:, 0].max() / peaks[:, 1:].median())


NOISE_B = 20.0  # constant of the stabiliser channels of the pass-through's output-norm groups


@torch.no_grad()
def init_noise_path(unet, gain: float) -> None:
    """Make ``unet`` output ``gain`` times its input through an exact linear path (in place).

    For latent channel ``c``: ``conv_in`` channels ``24+2c``/``25+2c`` carry ``+x_c``/``-x_c``;
    the skip connection brings them to the last up-block resnet, whose shortcut writes them to
    channels ``16+4c``/``17+4c`` beside two constant channels ``+-NOISE_B`` (one GroupNorm group
    of four). That group's mean is exactly zero and its variance is dominated by the constants,
    so ``conv_norm_out`` scales the pair by a nearly sample-independent factor (undone by its
    weight); ``silu(z) - silu(-z) = z`` exactly, so ``conv_out`` recovers ``x_c`` from the pair.
    Every other weight keeps its random initialisation (the residual branch of that resnet
    starts at zero on these channels), and training may change all of them.
    """
    if unet.config.norm_num_groups != NORM_GROUPS or unet.config.in_channels != 4:
        raise MixDQError("init_noise_path expects the proxy UNet (4 latent channels, "
                         f"{NORM_GROUPS} norm groups)")
    width = unet.config.block_out_channels[0]
    resnet = unet.up_blocks[-1].resnets[-1]
    scale = ((1.0 + NOISE_B ** 2) / 2) ** 0.5  # the group's standard deviation for unit input
    for c in range(4):
        plus, minus = width - 8 + 2 * c, width - 7 + 2 * c  # conv_in / skip channels
        out = 16 + 4 * c  # the GroupNorm group of four at the output
        for ch, sign in ((plus, 1.0), (minus, -1.0)):
            unet.conv_in.weight[ch] = 0
            unet.conv_in.weight[ch, c, 1, 1] = sign
            unet.conv_in.bias[ch] = 0
        resnet.conv_shortcut.weight[out:out + 4] = 0
        resnet.conv_shortcut.bias[out:out + 4] = 0
        resnet.conv_shortcut.weight[out, width + plus] = 1
        resnet.conv_shortcut.weight[out + 1, width + minus] = 1
        resnet.conv_shortcut.bias[out + 2] = NOISE_B
        resnet.conv_shortcut.bias[out + 3] = -NOISE_B
        resnet.conv2.weight[out:out + 4] = 0
        resnet.conv2.bias[out:out + 4] = 0
        unet.conv_norm_out.weight[out:out + 2] = scale
        unet.conv_norm_out.bias[out:out + 4] = 0
        unet.conv_norm_out.weight[out + 2:out + 4] = 0
        unet.conv_out.weight[:, out:out + 4] = 0
        unet.conv_out.weight[c, out, 1, 1] = gain
        unet.conv_out.weight[c, out + 1, 1, 1] = -gain


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
