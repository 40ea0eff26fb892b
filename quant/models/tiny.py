"""The built-in ``tiny`` model: an SDXL-Turbo-shaped pipeline made offline from the real classes.

Same component classes and block types as SDXL-Turbo (cross-attention transformer blocks of
depth 1 and 2, ``text_time`` added conditions, GEGLU feed-forward, shortcut convs, up/down
samplers, two CLIP text encoders with the second projecting, Euler-ancestral "trailing"
scheduler), with random weights from a fixed seed and widths small enough that a 64x64 image takes
a fraction of a second on one CPU core. Built once and cached on disk as a diffusers folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from pathlib import Path

import torch

from ..utils.io import atomic_path, clean_stale_temps
from ..utils.quiet import quiet_libraries


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    """Sizes of the tiny pipeline. The defaults are the built-in ``tiny`` model."""

    seed: int = 0
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    transformer_layers_per_block: tuple[int, ...] = (1, 1, 2)
    attention_head_dim: tuple[int, ...] = (2, 4, 4)  # diffusers' name for the number of heads
    norm_num_groups: int = 16
    text_hidden: tuple[int, int] = (32, 64)
    text_layers: int = 2
    projection_dim: int = 32
    time_embed_dim: int = 8
    vae_channels: tuple[int, ...] = (16, 32, 32)
    sample_size: int = 16  # latent side: 64 px images with the 4x VAE

    def __post_init__(self):
        if len(self.block_out_channels) != 3 or len(self.transformer_layers_per_block) != 3:
            raise ValueError("TinyConfig mirrors SDXL's three resolution levels")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError("block_out_channels must be multiples of norm_num_groups")

    def fingerprint(self) -> str:
        import diffusers
        import transformers
        blob = json.dumps([dataclasses.asdict(self), diffusers.__version__,
                           transformers.__version__, 1], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _unet(cfg: TinyConfig):
    from diffusers import UNet2DConditionModel

    text_dim = sum(cfg.text_hidden)
    return UNet2DConditionModel(
        sample_size=cfg.sample_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        block_out_channels=cfg.block_out_channels,
        layers_per_block=2,
        transformer_layers_per_block=cfg.transformer_layers_per_block,
        attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=cfg.norm_num_groups,
        cross_attention_dim=text_dim,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=cfg.time_embed_dim,
        projection_class_embeddings_input_dim=6 * cfg.time_embed_dim + cfg.projection_dim,
    )


def _text_encoders(cfg: TinyConfig, tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    common = dict(vocab_size=len(tokenizer), max_position_embeddings=77,
                  num_hidden_layers=cfg.text_layers, bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    h1, h2 = cfg.text_hidden
    enc1 = CLIPTextModel(CLIPTextConfig(hidden_size=h1, intermediate_size=4 * h1,
                                        num_attention_heads=2, hidden_act="quick_gelu", **common))
    enc2 = CLIPTextModelWithProjection(CLIPTextConfig(
        hidden_size=h2, intermediate_size=4 * h2, num_attention_heads=4, hidden_act="gelu",
        projection_dim=cfg.projection_dim, **common))
    return enc1, enc2


def _vae(cfg: TinyConfig):
    from diffusers import AutoencoderKL

    n = len(cfg.vae_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n,
                         block_out_channels=cfg.vae_channels, layers_per_block=1,
                         norm_num_groups=8, sample_size=cfg.sample_size * 2 ** (n - 1),
                         scaling_factor=0.13025, force_upcast=True)


def turbo_scheduler():
    """SDXL-Turbo's scheduler: Euler ancestral with trailing timestep spacing."""
    from diffusers import EulerAncestralDiscreteScheduler

    return EulerAncestralDiscreteScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
        beta_schedule="scaled_linear", timestep_spacing="trailing", steps_offset=1,
        prediction_type="epsilon")


def build_tiny_pipeline(cfg: TinyConfig = TinyConfig()):
    """Build the tiny pipeline in memory, deterministically from ``cfg.seed``.

    Returns:
        A float32 ``StableDiffusionXLPipeline`` on the CPU.
    """
    from diffusers import StableDiffusionXLPipeline

    from .tokenizer import build_clip_tokenizer

    tok1 = build_clip_tokenizer()
    tok2 = build_clip_tokenizer(pad_token="!")
    torch.manual_seed(cfg.seed)
    unet = _unet(cfg)
    torch.manual_seed(cfg.seed + 1)
    enc1, enc2 = _text_encoders(cfg, tok1)
    torch.manual_seed(cfg.seed + 2)
    vae = _vae(cfg)
    return StableDiffusionXLPipeline(vae=vae, text_encoder=enc1, text_encoder_2=enc2,
                                     tokenizer=tok1, tokenizer_2=tok2, unet=unet,
                                     scheduler=turbo_scheduler(),
                                     force_zeros_for_empty_prompt=True, add_watermarker=False)


def cache_root() -> Path:
    """Where mixdq caches what it builds: ``$XDG_CACHE_HOME/mixdq`` or ``~/.cache/mixdq``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mixdq"


def tiny_path(cfg: TinyConfig = TinyConfig(), cache_dir: str | os.PathLike | None = None) -> Path:
    """The diffusers folder of the tiny pipeline, built and saved on first use.

    Args:
        cfg: sizes and seed.
        cache_dir: parent folder of the cache; default :func:`cache_root`.
    """
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    path = root / f"tiny-{cfg.fingerprint()}"
    if not (path / "model_index.json").exists():
        root.mkdir(parents=True, exist_ok=True)
        # One build at a time (two runs at once build it once); under the lock every temporary
        # left in the cache comes from a build that was killed half-way, so it goes.
        with _locked(root / ".tiny.lock"):
            clean_stale_temps(root, ".tiny-*.tmp")
            if not (path / "model_index.json").exists():
                with quiet_libraries():
                    pipe = build_tiny_pipeline(cfg)
                    with atomic_path(path) as tmp:
                        pipe.save_pretrained(tmp)
    return path


@contextlib.contextmanager
def _locked(lock: Path):
    """An exclusive advisory lock on ``lock`` (no-op where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
