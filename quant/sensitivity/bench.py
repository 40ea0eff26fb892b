"""How much block caching saves on the real SDXL UNet shapes (random weights).

The real SDXL configuration (``quant.configs/sdxl_unet.json``, 794 layers, 2.57 B parameters) is
built on the meta device and given random weights cheaply: every matrix/kernel is a view of one
shared random pool (std 0.02), norm scales are 1 and biases 0, so the model costs a few hundred
MB instead of 10 GB in float32 while every layer computes at its true shape. Sampled layers get
their weight quantized (4 bits) with the quantization core's modules, and each is evaluated
three ways on the same inputs:

- **full**: the stock UNet forward (what re-running the whole model per evaluation costs);
- **blocks**: caching at top-level block boundaries only (the inputs of the layer's block);
- **fine**: the default units (down to resnets, attentions and transformer blocks).

Seconds per evaluation are averaged per top-level block and extrapolated to all layers x the
evaluations per layer of a default run.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import torch
from torch import nn

from ..utils.timing import time_calls
from .groups import block_of, block_order
from .replay import TOP_LEVEL, ReplayEngine, run_unet


def sdxl_unet_random(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                     std: float = 0.02, seed: int = 0) -> nn.Module:
    """The SDXL UNet configuration with shared random weights (see the module docstring)."""
    from ..unet import random_unet, sdxl_unet_config

    unet = random_unet(sdxl_unet_config(), meta=True)
    largest = max(p.numel() for p in unet.parameters() if p.dim() > 1)
    generator = torch.Generator().manual_seed(seed)
    pool = (torch.randn(largest, generator=generator) * std).to(device, dtype)
    for module in unet.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if param.dim() > 1:
                value = pool[:param.numel()].view(param.shape)
            elif name == "weight":
                value = torch.ones(param.shape, device=device, dtype=dtype)
            else:
                value = torch.zeros(param.shape, device=device, dtype=dtype)
            setattr(module, name, nn.Parameter(value, requires_grad=False))
    for module in unet.modules():
        for name, buf in list(module.named_buffers(recurse=False)):
            module.register_buffer(name, torch.zeros(buf.shape, device=device, dtype=buf.dtype))
    return unet.eval()


def random_batch(unet, samples: int = 1, latent: int = 32, device="cpu",
                 dtype=torch.float32, seed: int = 0) -> dict:
    """SDXL-shaped UNet inputs: latents, a timestep, text embeddings and added conditions."""
    g = torch.Generator().manual_seed(seed)
    cfg = unet.config
    text_dim = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(device, dtype)
    size = latent * 8
    return {"sample": rand(samples, cfg.in_channels, latent, latent),
            "timestep": torch.full((samples,), 999.0, device=device),
            "encoder_hidden_states": rand(samples, 77, cfg.cross_attention_dim),
            "added_cond_kwargs": {
                "text_embeds": rand(samples, text_dim),
                "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * samples,
                                         device=device, dtype=dtype)}}


def sample_layers(names: list[str], per_block: int = 2) -> list[str]:
    """``per_block`` evenly spaced layers of every top-level block (first and last included)."""
    blocks = defaultdict(list)
    for name in names:
        blocks[block_of(name)].append(name)
    picked = []
    for block in block_order(list(blocks)):
        members = blocks[block]
        k = min(per_block, len(members))
        idx = sorted({round(i * (len(members) - 1) / max(k - 1, 1)) for i in range(k)})
        picked += [members[i] for i in idx]
    return picked


@dataclasses.dataclass
class BlockTiming:
    """Mean seconds per evaluation over a block's sampled layers, by method."""

    block: str
    layers: int
    sampled: int
    full_s: float
    fine_s: float
    blocks_s: float | None


@dataclasses.dataclass
class BenchResult:
    """Seconds per evaluation by block, and the extrapolation to a whole run."""

    rows: list[BlockTiming]
    evaluations_per_layer: int
    latent: int
    samples: int
    device: str

    def totals(self) -> dict:
        n = self.evaluations_per_layer
        out = {"evaluations": sum(r.layers for r in self.rows) * n}
        for kind in ("full", "fine", "blocks"):
            values = [getattr(r, f"{kind}_s") for r in self.rows]
            if None not in values:
                out[f"{kind}_s"] = sum(v * r.layers for v, r in zip(values, self.rows)) * n
        for kind in ("fine", "blocks"):
            if f"{kind}_s" in out:
                out[f"speedup_{kind}"] = out["full_s"] / out[f"{kind}_s"]
        return out

    def format(self) -> str:
        head = (f"SDXL UNet (random weights), {self.samples} sample(s) of {self.latent}x"
                f"{self.latent} latents ({self.latent * 8} px) on {self.device}; seconds per "
                f"evaluation of one layer quantized (W4), timed back to back per layer")
        lines = [head, f"{'block':<16}{'layers':>7}{'sampled':>8}{'full':>9}{'blocks':>9}"
                       f"{'fine':>9}{'speedup':>9}"]
        for r in self.rows:
            blocks = f"{r.blocks_s:9.3f}" if r.blocks_s is not None else f"{'-':>9}"
            lines.append(f"{r.block:<16}{r.layers:>7}{r.sampled:>8}{r.full_s:>9.3f}{blocks}"
                         f"{r.fine_s:>9.3f}{r.full_s / r.fine_s:>8.2f}x")
        t = self.totals()
        blocks = (f", top-level block inputs only {t['blocks_s'] / 3600:.2f} h "
                  f"({t['speedup_blocks']:.2f}x)" if "blocks_s" in t else "")
        lines.append(f"extrapolated to all {sum(r.layers for r in self.rows)} layers x "
                     f"{self.evaluations_per_layer} evaluations = {t['evaluations']}: full "
                     f"re-evaluation {t['full_s'] / 3600:.2f} h, block-cached (fine) "
                     f"{t['fine_s'] / 3600:.2f} h ({t['speedup_fine']:.2f}x){blocks}")
        return "\n".join(lines)


def _timed(fn, device) -> float:
    """Seconds of one call of ``fn`` (the shared timer: CUDA events on a GPU)."""
    return time_calls(fn, 1, device=device)[0] / 1e3


@torch.no_grad()
def benchmark(unet: nn.Module, batch: dict, *, per_block: int = 2, compare_blocks: bool = True,
              evaluations_per_layer: int = 5, progress: bool = True) -> BenchResult:
    """Time block-cached against full evaluations of sampled layers of ``unet``.

    Each sampled layer is evaluated by a full forward, then block-cached (fine units, then
    top-level blocks only), back to back, so that a shared machine's load affects all alike.

    Args:
        unet: the UNet (e.g. :func:`sdxl_unet_random`).
        batch: one batch of inputs (e.g. :func:`random_batch`).
        per_block: layers sampled per top-level block.
        compare_blocks: also time caching at top-level block boundaries only.
        evaluations_per_layer: evaluations of a run per layer (5: W2/4/8, A4/8).
        progress: a tqdm bar.

    Returns:
        A :class:`BenchResult`.
    """
    from tqdm.auto import tqdm

    from ..qmodules import qmodule_class
    from ..quantize import set_submodule
    from ..structure import quantizable_layers

    names = list(quantizable_layers(unet))
    picked = sample_layers(names, per_block)
    for name in picked:  # the layers measured get the real quantized modules, at 4 bits
        module = unet.get_submodule(name)
        layer = qmodule_class(module).from_module(module, None, None, name=name,
                                                  weight_scale="minmax")
        set_submodule(unet, name, layer)
    device = batch["sample"].device
    engines = {"fine": ReplayEngine(unet, [batch], picked)}
    if compare_blocks:
        engines["blocks"] = ReplayEngine(unet, [batch], picked, containers=TOP_LEVEL)
    for engine in engines.values():
        engine.record()
    seconds: dict[str, dict[str, float]] = {kind: {} for kind in ("full", *engines)}
    for name in tqdm(picked, desc="bench", unit="layer", disable=not progress):
        layer = unet.get_submodule(name)
        layer.set_bits(w=4)
        layer.effective_weight()  # quantize once, outside the timing: every method shares it
        seconds["full"][name] = _timed(lambda: run_unet(unet, batch), device)
        for kind, engine in engines.items():
            with engine.replaying(name):
                seconds[kind][name] = _timed(lambda: engine.run(0), device)
        layer.set_bits(w=None)
        layer.clear_cache()
    counts = defaultdict(int)
    for name in names:
        counts[block_of(name)] += 1
    rows = []
    for block in block_order(list(counts)):
        members = [n for n in picked if block_of(n) == block]

        def mean(kind):
            return sum(seconds[kind][n] for n in members) / len(members)
        rows.append(BlockTiming(block, counts[block], len(members), mean("full"), mean("fine"),
                                mean("blocks") if compare_blocks else None))
    return BenchResult(rows, evaluations_per_layer, batch["sample"].shape[-1],
                       batch["sample"].shape[0], str(device))
