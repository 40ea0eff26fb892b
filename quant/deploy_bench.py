"""Whole-UNet benchmark on the real SDXL configuration with random weights (CUDA).

Variants: ``fp16`` (the float UNet), ``fp16-cl`` (the same in channels-last memory format),
``w8a8`` and ``w4a8`` (every Linear/Conv2d quantized by
:mod:`quant.quantize` with min-max scales, calibrated on one random batch, and converted by
:func:`quant.deploy.convert`). For each: latency eager and with CUDA graphs (median of timed
replays), weight memory (the bytes of the UNet's parameters and buffers) and peak memory
(``torch.cuda.max_memory_allocated`` over building the graph and running it, weights included).
Latency does not depend on the weights' values, so random weights measure what real ones would.
"""

from __future__ import annotations

import dataclasses
import gc
import statistics

import torch
from torch import nn

from .kernels.shapes import unet_inputs

VARIANTS = {"fp16": None, "fp16-cl": None, "w8a8": 8, "w4a8": 4}  # fp16-cl: channels last


@dataclasses.dataclass
class UNetResult:
    """One variant's measurements (milliseconds, MiB)."""

    variant: str
    eager_ms: float
    graph_ms: float
    weight_mib: float
    peak_mib: float
    layers: dict


def build_sdxl_unet(seed: int = 0) -> nn.Module:
    """The SDXL UNet with random weights, fp16 on the current CUDA device."""
    from .kernels.shapes import sdxl_unet_meta

    config = dict(sdxl_unet_meta().config)
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    with torch.device("cuda"):  # initialise on the GPU: seconds instead of minutes
        unet = UNet2DConditionModel.from_config(config)
    return unet.half().eval()


def _state_bytes(module: nn.Module) -> int:
    tensors = {t.data_ptr(): t for t in list(module.parameters()) + list(module.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _time_ms(fn, iters: int) -> float:
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _quantized(w_bits: int, inputs: dict, backend: str, seed: int):
    from .bitmap import BitMap
    from .deploy import DeployConfig, convert
    from .quantize import quantize_unet
    from .structure import quantizable_layers

    unet = build_sdxl_unet(seed)
    bit_map = BitMap.uniform(quantizable_layers(unet), w_bits, 8)
    quantize_unet(unet, bit_map, [inputs], weight_scale="minmax", progress=False)
    unet, report = convert(unet, DeployConfig(backend=backend))
    return unet, report.counts()


@torch.no_grad()
def bench_variant(variant: str, resolution: int = 512, batch: int = 1, iters: int = 20,
                  backend: str = "kernels", seed: int = 0) -> UNetResult:
    """Build, (quantize, convert,) and time one variant; frees it before returning."""
    from .deploy import CudaGraphUNet
    from .kernels.shapes import sdxl_unet_meta

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; use {', '.join(VARIANTS)}")
    torch.manual_seed(seed)
    inputs = unet_inputs(sdxl_unet_meta(), resolution, batch, torch.device("cuda"),
                         torch.float16)
    w_bits = VARIANTS[variant]
    if w_bits is None:
        unet, layers = build_sdxl_unet(seed), {}
        if variant == "fp16-cl":
            unet = unet.to(memory_format=torch.channels_last)
    else:
        unet, layers = _quantized(w_bits, inputs, backend, seed)
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    weight_mib = _state_bytes(unet) / 2**20
    graphed = CudaGraphUNet(unet)
    timings = []
    for model in (unet, graphed):
        def run(model=model):
            return model(**inputs, return_dict=False)
        for _ in range(3):
            run()
        timings.append(_time_ms(run, iters))
    peak = torch.cuda.max_memory_allocated() / 2**20
    return UNetResult(variant, timings[0], timings[1], weight_mib, peak, layers)


def bench_unet(variants=("fp16", "fp16-cl", "w8a8", "w4a8"), resolution: int = 512, batch: int = 1,
               iters: int = 20, backend: str = "kernels") -> list[UNetResult]:
    """Benchmark each variant in turn (one UNet on the GPU at a time)."""
    results = []
    for variant in variants:
        results.append(bench_variant(variant, resolution, batch, iters, backend))
        gc.collect()  # the variant's UNet and graph are unreachable now: release their memory
        torch.cuda.empty_cache()
    return results


def format_unet_results(results: list[UNetResult], resolution: int, batch: int) -> str:
    """A table with speed-ups over fp16 (graph vs graph) and memory ratios."""
    fp16 = [r for r in results if r.variant.startswith("fp16")]
    base = min(fp16, key=lambda r: r.graph_ms) if fp16 else None  # the faster fp16 layout
    lines = [f"SDXL UNet, {resolution}x{resolution}, batch {batch}, random weights; speed-up "
             f"and weight ratio against {base.variant if base else '-'} with CUDA graphs",
             f"{'variant':<8}{'eager ms':>10}{'graph ms':>10}{'speed-up':>10}"
             f"{'weights MiB':>13}{'of fp16':>9}{'peak MiB':>10}  layers"]
    for r in results:
        speed = f"{base.graph_ms / r.graph_ms:.2f}x" if base else "-"
        ratio = f"{100 * r.weight_mib / base.weight_mib:.0f}%" if base else "-"
        layers = ", ".join(f"{k}: {v}" for k, v in sorted(r.layers.items())) or "-"
        lines.append(f"{r.variant:<8}{r.eager_ms:>10.2f}{r.graph_ms:>10.2f}{speed:>10}"
                     f"{r.weight_mib:>13.0f}{ratio:>9}{r.peak_mib:>10.0f}  {layers}")
    return "\n".join(lines)
