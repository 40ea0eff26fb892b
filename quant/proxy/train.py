"""Training of the proxy pipeline: first the VAE, then the UNet with both text encoders.

Deterministic given the seed and the thread count: sample ``i`` of training step ``s`` is
dataset item ``s * batch + i`` and the noise of step ``s`` comes from a generator seeded with
``(seed, s)``, so a run resumed from a checkpoint continues exactly as if it had never stopped.

The UNet is trained for SDXL-Turbo's few-step sampling: timesteps are those of the
Euler-ancestral "trailing" schedule for 1 to 4 steps, and the loss is on the clean latent ``x0``
that the scheduler derives from the UNet output (:func:`predicted_x0`), with
``x = x0 + sigma * noise``. At the first timestep (999) the input is pure noise times
``sigma_max``, exactly what the pipeline starts from, so one step must draw the whole image from
the caption alone.

The shipped proxy predicts epsilon, as SDXL-Turbo does: at t=999 ``x0 = x - 14.6 * eps``, so the
UNet must reproduce its input noise to ~35 dB before the image appears, and its errors reach the
image multiplied by ``sigma_max``. Training starts from an exact noise pass-through
(:func:`quant.proxy.model.init_noise_path`) and learns the rest; the BOS row of the token
embeddings is the fixed outlier of :func:`quant.proxy.model.install_bos_outlier`, put back after
every optimizer step. Checkpoints are safetensors (:mod:`quant.proxy.state`), never pickles.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..errors import MixDQError
from .model import BOS_PEAK, add_time_ids, encode_text, install_bos_outlier
from .scenes import ShapesDataset
from .state import load_state, save_state


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one proxy training run (the defaults made the shipped weights)."""

    seed: int = 0
    batch: int = 32
    vae_steps: int = 1200
    vae_lr: float = 2e-3
    kl_weight: float = 1e-6
    scale_images: int = 512  # images that set the VAE's latent scaling factor
    unet_steps: int = 1800
    unet_lr: float = 1e-3
    text_lr: float = 5e-4
    warmup: int = 100
    first_step_prob: float = 0.8  # share of samples at t=999, the 1-step case
    ema_decay: float = 0.995
    checkpoint_every: int = 100
    prediction_type: str = "epsilon"  # see the module docstring
    bos_peak: float = BOS_PEAK  # the BOS token's input-embedding outlier (install_bos_outlier)

    def __post_init__(self):
        if self.batch < 1 or self.vae_steps < 0 or self.unet_steps < 1:
            raise MixDQError("batch and unet_steps must be positive, vae_steps >= 0")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise MixDQError(f"prediction_type {self.prediction_type!r}: use epsilon or "
                             f"v_prediction")
        if not 0 <= self.first_step_prob <= 1 or not 0 <= self.ema_decay < 1:
            raise MixDQError("first_step_prob must be in [0, 1] and ema_decay in [0, 1)")
        if not self.bos_peak >= 0:
            raise MixDQError(f"bos_peak must be >= 0, got {self.bos_peak}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        return cls(**data)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup, then cosine decay to 5% of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _step_generator(seed: int, stage: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + stage) * 1_000_033 + step)


def train_vae(pipe, cfg: TrainConfig, work_dir: Path) -> None:
    """Train ``pipe.vae`` to reconstruct dataset images, then set its latent scaling factor.

    Resumes from ``work_dir/vae.safetensors`` if present.
    """
    vae = pipe.vae
    data = ShapesDataset(seed=cfg.seed, split="all")
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    ckpt_path = work_dir / "vae.safetensors"
    start = 0
    state = load_state(ckpt_path)
    if state is not None:
        vae.load_state_dict(state["vae"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
    vae.train()
    bar = tqdm(range(start, cfg.vae_steps), desc="vae", initial=start, total=cfg.vae_steps,
               mininterval=5)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = cfg.vae_lr * _lr_factor(step, cfg.vae_steps, cfg.warmup)
        images, _ = data.batch(step * cfg.batch, cfg.batch)
        x = images * 2 - 1
        posterior = vae.encode(x).latent_dist
        z = posterior.sample(generator=_step_generator(cfg.seed, 0, step))
        recon = vae.decode(z).sample
        loss = F.mse_loss(recon, x) + cfg.kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.5f}", refresh=False)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.vae_steps:
            save_state(ckpt_path, {"step": step + 1, "vae": vae.state_dict(),
                                   "opt": opt.state_dict()})
    vae.eval()
    with torch.no_grad():
        images, _ = ShapesDataset(seed=cfg.seed + 1, split="all").batch(0, cfg.scale_images)
        std = vae.encode(images * 2 - 1).latent_dist.mean.std().item()
    vae.register_to_config(scaling_factor=round(1.0 / std, 5))


def few_step_timesteps(scheduler, max_steps: int = 4) -> list[int]:
    """Every timestep the trailing schedule visits with 1 to ``max_steps`` steps, descending."""
    seen = set()
    for n in range(1, max_steps + 1):
        scheduler.set_timesteps(n)
        seen.update(int(t) for t in scheduler.timesteps)
    return sorted(seen, reverse=True)


def sigma_table(scheduler) -> torch.Tensor:
    """``sigma(t) = sqrt((1 - alpha_bar_t) / alpha_bar_t)`` for every training timestep."""
    ac = scheduler.alphas_cumprod.to(torch.float64)
    return ((1 - ac) / ac).sqrt().float()


def _latents(pipe, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return pipe.vae.encode(images * 2 - 1).latent_dist.mean * pipe.vae.config.scaling_factor


def predicted_x0(output: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor,
                 prediction_type: str) -> torch.Tensor:
    """The clean latent the Euler-ancestral scheduler derives from a UNet output, where ``x``
    is the unscaled sample (before ``scale_model_input``)."""
    if prediction_type == "epsilon":
        return x - sigma * output
    return output * (-sigma / (sigma ** 2 + 1).sqrt()) + x / (sigma ** 2 + 1)


def few_step_loss(pipe, latents: torch.Tensor, captions: list[str], timesteps: torch.Tensor,
                  noise: torch.Tensor, sigmas: torch.Tensor, t_first: int) -> torch.Tensor:
    """Mean squared error of the clean latent implied by the UNet's output, under the
    prediction type the pipeline's scheduler declares.

    Args:
        pipe: the pipeline being trained (UNet and text encoders get gradients).
        latents: clean scaled latents ``x0``.
        captions: one per latent.
        timesteps: integer timestep per sample.
        noise: standard normal, shaped like ``latents``.
        sigmas: :func:`sigma_table` of the scheduler.
        t_first: the schedule's first timestep, where the input is pure noise.
    """
    sigma = sigmas[timesteps].view(-1, 1, 1, 1)
    first = (timesteps == t_first).view(-1, 1, 1, 1)
    x = torch.where(first, sigma * noise, latents + sigma * noise)
    model_in = x / (sigma ** 2 + 1).sqrt()
    prompt_embeds, pooled = encode_text(pipe, captions)
    cond = {"text_embeds": pooled, "time_ids": add_time_ids(len(captions))}
    out = pipe.unet(model_in, timesteps.float(), prompt_embeds, added_cond_kwargs=cond).sample
    x0 = predicted_x0(out, x, sigma, pipe.scheduler.config.prediction_type)
    return F.mse_loss(x0, latents)


class _Ema:
    """Exponential moving average of a list of parameters."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float):
        self.params = params
        self.decay = decay
        self.shadow = [p.detach().clone() for p in params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for s, p in zip(self.shadow, self.params):
            s.lerp_(p.detach(), 1 - d)

    @torch.no_grad()
    def copy_to_params(self) -> None:
        for s, p in zip(self.shadow, self.params):
            p.copy_(s)


def train_unet(pipe, cfg: TrainConfig, work_dir: Path) -> None:
    """Train the UNet and both text encoders for 1-4 step generation; the EMA weights are left
    in ``pipe``. Resumes from ``work_dir/unet.safetensors`` if present.

    ``pipe`` comes from :func:`quant.proxy.model.build_untrained` (BOS outlier installed, noise
    pass-through initialised); the BOS embedding rows are restored after every step."""
    pipe.scheduler.register_to_config(prediction_type=cfg.prediction_type)
    modules = [pipe.unet, pipe.text_encoder, pipe.text_encoder_2]
    pipe.vae.requires_grad_(False)
    text_params = [p for m in modules[1:] for p in m.parameters()]
    params = list(pipe.unet.parameters()) + text_params
    opt = torch.optim.AdamW([{"params": list(pipe.unet.parameters()), "lr": cfg.unet_lr},
                             {"params": text_params, "lr": cfg.text_lr}],
                            betas=(0.9, 0.99), weight_decay=0.0)
    peaks = [cfg.unet_lr, cfg.text_lr]
    ema = _Ema(params, cfg.ema_decay)
    ckpt_path = work_dir / "unet.safetensors"
    start = 0
    state = load_state(ckpt_path)
    if state is not None:
        for m, sd in zip(modules, state["modules"]):
            m.load_state_dict(sd)
        opt.load_state_dict(state["opt"])
        ema.shadow = state["ema"]
        start = state["step"]
    for m in modules:
        m.train()
    data = ShapesDataset(seed=cfg.seed, split="train")
    steps = torch.tensor(few_step_timesteps(pipe.scheduler))
    sigmas = sigma_table(pipe.scheduler)
    bar = tqdm(range(start, cfg.unet_steps), desc="unet", initial=start, total=cfg.unet_steps,
               mininterval=5)
    for step in bar:
        for group, peak in zip(opt.param_groups, peaks):
            group["lr"] = peak * _lr_factor(step, cfg.unet_steps, cfg.warmup)
        gen = _step_generator(cfg.seed, 1, step)
        images, captions = data.batch(step * cfg.batch, cfg.batch)
        latents = _latents(pipe, images)
        pick_first = torch.rand(cfg.batch, generator=gen) < cfg.first_step_prob
        others = steps[1:][torch.randint(len(steps) - 1, (cfg.batch,), generator=gen)]
        timesteps = torch.where(pick_first, steps[0], others)
        noise = torch.randn(latents.shape, generator=gen)
        loss = few_step_loss(pipe, latents, captions, timesteps, noise, sigmas, int(steps[0]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        install_bos_outlier(pipe, cfg.bos_peak)  # the outlier is fixed, not learned
        ema.update(step)
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.unet_steps:
            save_state(ckpt_path, {"step": step + 1, "opt": opt.state_dict(),
                                   "modules": [m.state_dict() for m in modules],
                                   "ema": ema.shadow})
    ema.copy_to_params()
    for m in modules:
        m.eval()
