"""Synthetic sensitivity tables with real layer sizes: for testing and benchmarking the solver.

The numbers follow the shape of real measurements - about 6 dB of SQNR per bit, a spread of
sensitivities over orders of magnitude between layers, SSIM falling as the noise grows - but they
are random. They exercise the allocator at real scale before (or without) a sensitivity run; they
are not a substitute for one.
"""

from __future__ import annotations

import math
import random
from typing import Mapping

from torch import nn

from ..sensitivity.groups import GroupRule
from .table import Measurement, SensitivityTable


def default_group(name: str) -> str:
    """The method's grouping (:class:`quant.sensitivity.groups.GroupRule`'s default):
    ``content`` for cross-attention (``attn2``) and feed-forward (``ff``) layers, else quality."""
    return GroupRule().group(name)


def synthetic_table(weight_sizes: Mapping[str, int], act_sizes: Mapping[str, int],
                    seed: int = 0, weight_bits: tuple[int, ...] = (2, 4, 8),
                    act_bits: tuple[int, ...] = (4, 8), ssim: str = "content") -> SensitivityTable:
    """A random table, monotone in bits, for the given layers and sizes.

    Args:
        weight_sizes: layer -> parameter count (also fixes the layer order).
        act_sizes: layer -> input activation elements per sample.
        seed: random seed.
        weight_bits, act_bits: widths to "measure".
        ssim: ``content`` (SSIM on content layers only), ``all`` or ``none``.

    Returns:
        A :class:`SensitivityTable` with groups from :func:`default_group`.
    """
    rng = random.Random(seed)
    entries = {}
    for name in weight_sizes:
        group = default_group(name)
        for target, sizes, widths in (("weight", weight_sizes, weight_bits),
                                      ("act", act_sizes, act_bits)):
            m = Measurement(name, group, target, int(sizes[name]))
            # log10 of the relative noise at 8 bits: layers differ by orders of magnitude.
            base = rng.uniform(-9.0, -5.5)
            ssim_gain = rng.uniform(0.5, 10.0)
            for b in widths:
                # ~6 dB per bit, with a random extra loss below 4 bits (outliers clip).
                noise = 10 ** (base + 0.602 * (8 - b) + (rng.uniform(0, 1.0) if b < 4 else 0))
                m.sqnr_db[b] = -10 * math.log10(noise)
                if ssim == "all" or (ssim == "content" and group == "content"):
                    m.ssim[b] = max(-1.0, 1.0 - ssim_gain * noise)
            _make_monotone(m)
            entries[name, target] = m
    return SensitivityTable(list(weight_sizes), entries)


def _make_monotone(m: Measurement) -> None:
    for metric in (m.sqnr_db, m.ssim):
        widths = sorted(metric)
        for lower, upper in zip(widths, widths[1:]):
            metric[upper] = max(metric[upper], metric[lower])


def sdxl_sizes() -> tuple[dict[str, int], dict[str, int]]:
    """SDXL's 794 quantizable layers with their real sizes, from the UNet built on the meta device.

    Returns:
        ``(weight_sizes, act_sizes)``: layer -> weight parameter count, and layer -> input
        activation elements for one 512x512 sample (SDXL-Turbo's size: latent 64x64, 77 text
        tokens).
    """
    return layer_sizes(_sdxl_meta(), latent=64, tokens=77)


def layer_sizes(unet: nn.Module, latent: int, tokens: int = 77) -> tuple[dict[str, int],
                                                                          dict[str, int]]:
    """Weight parameter counts and per-sample input activation elements of every layer.

    Runs one forward pass (the meta device works) with hooks recording the input shapes.

    Args:
        unet: an SDXL-style ``UNet2DConditionModel``.
        latent: latent side (image side / 8).
        tokens: text tokens.
    """
    import torch

    from ..structure import quantizable_layers

    layers = quantizable_layers(unet)
    acts: dict[str, int] = {}
    handles = [m.register_forward_pre_hook(
        lambda mod, args, name=name: acts.__setitem__(name, args[0][0].numel()))
        for name, m in layers.items()]
    param = next(unet.parameters())
    cfg = unet.config
    text_dim = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
    try:
        with torch.device(param.device), torch.no_grad():
            unet(torch.zeros(1, cfg.in_channels, latent, latent, dtype=param.dtype),
                 torch.tensor([999]),
                 encoder_hidden_states=torch.zeros(1, tokens, cfg.cross_attention_dim,
                                                   dtype=param.dtype),
                 added_cond_kwargs={"text_embeds": torch.zeros(1, text_dim, dtype=param.dtype),
                                    "time_ids": torch.zeros(1, 6, dtype=param.dtype)})
    finally:
        for h in handles:
            h.remove()
    weights = {name: m.weight.numel() for name, m in layers.items()}
    return weights, {name: acts[name] for name in layers}


def _sdxl_meta():
    from ..unet import random_unet, sdxl_unet_config

    return random_unet(sdxl_unet_config(), meta=True)



def sdxl_benchmark(seed: int = 0, weight_bits: str = "4", act_bits: str = "6",
                   configs: dict | None = None) -> list[tuple[str, object]]:
    """Allocate a synthetic table with SDXL's 794 real layer sizes, for timing the solver.

    Args:
        seed: seed of the random sensitivities.
        weight_bits, act_bits: average-bit budgets.
        configs: name -> settings to run; default: the original's candidates (joint and split)
            and three candidates for every layer and target (weights 2/4/8, activations 4/6/8).

    Returns:
        ``(config name, ProgramResult)`` for both targets of each config, in order.
    """
    from .allocate import Budget, allocate
    from .config import AllocConfig

    weight_sizes, act_sizes = sdxl_sizes()
    table = synthetic_table(weight_sizes, act_sizes, seed, (2, 4, 8), (4, 6, 8))
    three = {"weight_candidates": {"content": (2, 4, 8), "quality": (2, 4, 8)},
             "act_candidates": {"content": (4, 6, 8), "quality": (4, 6, 8)}}
    configs = configs or {"original candidates, joint": AllocConfig(),
                          "original candidates, split": AllocConfig(mode="split"),
                          "3 candidates everywhere, joint": AllocConfig(**three)}
    results = []
    for name, config in configs.items():
        alloc = allocate(table, Budget.bits(weight_bits), Budget.bits(act_bits), config)
        results += [(name, alloc.weight), (name, alloc.act)]
    return results
