"""Whole-UNet benchmark on the real SDXL configuration with random weights (CUDA).

Variants: ``fp16`` (the float UNet), ``fp16-cl`` (the same in channels-last memory format),
``w8a8`` and ``w4a8`` (every Linear/Conv2d quantized by
:mod:`quant.quantize` with min-max scales, calibrated on one random batch, and converted by
:func:`quant.deploy.convert`). For each: latency eager and with CUDA graphs (median of timed
replays), weight memory (the bytes of the UNet's parameters and buffers) and peak memory
(``torch.cuda.max_memory_allocated`` over building the graph and running it, weights included).
Latency does not depend on the weights' values, so random weights measure what real ones would.

:func:`bench_unet_matrix` (used by ``scripts/gpu_verify.sh``) builds each variant once and
measures it at several sizes (512 px batch 1, 1024 px batch 1 and 4), with the per-layer backend
choice (:func:`quant.kernels.backends.tune_backends`, cached) and merged projections; it adds a
``mixed`` variant (weights of 2, 4 and 8 bits, see :func:`mixed_bit_map`), records failures as
rows instead of stopping, and stops starting new measurements after a deadline.
"""

from __future__ import annotations

import dataclasses
import gc
import time

import torch
from torch import nn

from .kernels.shapes import unet_inputs
from .utils.sizes import MB, megabytes, tensor_bytes
from .utils.timing import median_ms

VARIANTS = {"fp16": None, "fp16-cl": None, "w8a8": 8, "w4a8": 4}  # fp16-cl: channels last


@dataclasses.dataclass
class UNetResult:
    """One variant's measurements (milliseconds, MB = 10^6 bytes); ``note`` says why one is
    missing."""

    variant: str
    eager_ms: float | None
    graph_ms: float | None
    weight_mb: float | None
    peak_mb: float | None
    layers: dict
    resolution: int = 512
    batch: int = 1
    backends: dict = dataclasses.field(default_factory=dict)
    note: str = ""


def build_sdxl_unet(seed: int = 0, config: dict | None = None, device: str = "cuda",
                    dtype: torch.dtype = torch.float16) -> nn.Module:
    """The SDXL UNet (or one of ``config``) with random weights, fp16 on the CUDA device."""
    from .kernels.shapes import sdxl_unet_meta

    config = dict(sdxl_unet_meta(config).config)
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    with torch.device(device):  # initialise on the GPU: seconds instead of minutes
        unet = UNet2DConditionModel.from_config(config)
    return unet.to(dtype).eval()


def _time_ms(fn, iters: int) -> float:
    return median_ms(fn, iters, device="cuda")


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
    weight_mb = megabytes(tensor_bytes(unet))
    graphed = CudaGraphUNet(unet)
    timings = []
    for model in (unet, graphed):
        def run(model=model):
            return model(**inputs, return_dict=False)
        for _ in range(3):
            run()
        timings.append(_time_ms(run, iters))
    peak = torch.cuda.max_memory_allocated() / MB
    return UNetResult(variant, timings[0], timings[1], weight_mb, peak, layers)


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
             f"{'weights MB':>13}{'of fp16':>9}{'peak MB':>10}  layers"]
    for r in results:
        speed = f"{base.graph_ms / r.graph_ms:.2f}x" if base else "-"
        ratio = f"{100 * r.weight_mb / base.weight_mb:.0f}%" if base else "-"
        layers = ", ".join(f"{k}: {v}" for k, v in sorted(r.layers.items())) or "-"
        lines.append(f"{r.variant:<8}{r.eager_ms:>10.2f}{r.graph_ms:>10.2f}{speed:>10}"
                     f"{r.weight_mb:>13.0f}{ratio:>9}{r.peak_mb:>10.0f}  {layers}")
    return "\n".join(lines)


MATRIX_VARIANTS = ("fp16", "fp16-cl", "w8a8", "w4a8", "mixed")
SETTINGS = ((512, 1), (1024, 1), (1024, 4))


def mixed_bit_map(names):
    """A fixed mixed-precision map standing in for a MixDQ allocation (latency only): weights
    cycle 8, 4, 4, 2 bits (4.5 on average; 2..4 bits run as packed int4), activations 8 bits."""
    from .bitmap import BitMap, LayerBits

    cycle = (8, 4, 4, 2)
    return BitMap({n: LayerBits(cycle[i % 4], 8) for i, n in enumerate(sorted(names))})


def _build(variant: str, backend: str, merge: bool, seed: int, config, device, dtype):
    from .bitmap import BitMap
    from .deploy import DeployConfig, convert
    from .quantize import quantize_unet
    from .structure import quantizable_layers
    from .kernels.shapes import sdxl_unet_meta

    unet = build_sdxl_unet(seed, config, device, dtype)
    if variant.startswith("fp16"):
        if variant == "fp16-cl":
            unet = unet.to(memory_format=torch.channels_last)
        return unet, {}
    names = quantizable_layers(unet)
    bit_map = mixed_bit_map(names) if variant == "mixed" else BitMap.uniform(
        names, {"w8a8": 8, "w4a8": 4}[variant], 8)
    calib = unet_inputs(sdxl_unet_meta(config), 512, 1, torch.device(device), dtype)
    quantize_unet(unet, bit_map, [calib], weight_scale="minmax", progress=False)
    unet, report = convert(unet, DeployConfig(backend=backend, merge=merge))
    return unet, report.counts()


@torch.no_grad()
def bench_unet_matrix(variants=MATRIX_VARIANTS, settings=SETTINGS, iters: int = 10,
                      backend: str = "auto", merge: bool = True, tune: bool = True,
                      deadline: float | None = None, seed: int = 0, log=print,
                      config: dict | None = None, device: str = "cuda",
                      tune_cache=True, on_size=None) -> list[UNetResult]:
    """Every variant built once (all stay on the device), then measured size by size, in the
    order of ``settings`` (so a deadline cuts the last sizes, not the last variants).

    Args:
        backend: the converter's backend (``auto``: the device default, then tuned per layer
            when ``tune``).
        deadline: ``time.time()`` after which no new measurement starts (rows say "skipped").
        log: progress lines (the GPU script's log).
        config, device: another UNet configuration and device (a CPU dry run of the whole flow
            on a tiny UNet: float32, no CUDA graphs or memory figures, CPU clock).
        tune_cache: the backend table's cache (see :func:`tune_backends`).
        on_size: called with the results so far after each size (the script writes its table).

    Peak memory is this variant's alone: its weights plus the peak above what was allocated
    before its measurement (the other variants' weights).
    """
    from .deploy import CudaGraphUNet
    from .kernels.backends import tune_backends
    from .kernels.shapes import sdxl_unet_meta

    meta = sdxl_unet_meta(config)
    dtype = torch.float16 if torch.device(device).type == "cuda" else torch.float32
    built: dict[str, tuple] = {}
    failed: dict[str, str] = {}
    for variant in variants:
        if deadline is not None and time.time() > deadline:
            failed[variant] = "skipped: time budget"
            continue
        start = time.time()
        try:
            unet, layers = _build(variant, backend, merge, seed, config, device, dtype)
        except Exception as e:  # noqa: BLE001 - recorded in the table, the others still run
            failed[variant] = f"build failed: {type(e).__name__}: {e}"[:200]
            log(f"{variant}: build failed: {e}")
            _free(device)
            continue
        built[variant] = (unet, layers, megabytes(tensor_bytes(unet)))
        log(f"{variant}: built in {time.time() - start:.0f} s, weights "
            f"{built[variant][2]:.0f} MB")
    results = []
    for res, batch in settings:
        for variant in variants:
            if variant in failed:
                results.append(UNetResult(variant, None, None, None, None, {}, res, batch,
                                          note=failed[variant]))
                continue
            unet, layers, weight_mb = built[variant]
            if deadline is not None and time.time() > deadline:
                results.append(UNetResult(variant, None, None, weight_mb, None, layers, res,
                                          batch, note="skipped: time budget"))
                continue
            try:
                results.append(_measure_setting(unet, variant, layers, weight_mb, meta, res,
                                                batch, iters, tune and bool(layers),
                                                tune_backends, CudaGraphUNet, log, device,
                                                dtype, tune_cache))
            except Exception as e:  # noqa: BLE001
                results.append(UNetResult(variant, None, None, weight_mb, None, layers, res,
                                          batch, note=f"failed: {type(e).__name__}: {e}"[:200]))
                log(f"{variant} {res}px b{batch}: failed: {e}")
            _free(device)
        if on_size is not None:
            on_size(list(results))
    built.clear()
    _free(device)
    return results


def _free(device):
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def _measure_setting(unet, variant, layers, weight_mb, meta, res, batch, iters, tune,
                     tune_backends, graph_cls, log, device, dtype, tune_cache):
    torch.manual_seed(res + batch)
    inputs = unet_inputs(meta, res, batch, torch.device(device), dtype)
    cuda = torch.device(device).type == "cuda"
    backends = {}
    if tune:
        t = time.time()
        choice = tune_backends(unet, inputs, cache=tune_cache)
        backends = choice.counts()
        log(f"{variant} {res}px b{batch}: backends {backends} ({choice.measured} signatures "
            f"measured, {time.time() - t:.0f} s)")
        if choice.mismatches:
            log("  MISMATCH: " + "; ".join(f"{b} on {s}" for s, b in choice.mismatches))
            backends["MISMATCH"] = len(choice.mismatches)
    _free(device)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    graphed = graph_cls(unet) if cuda else unet  # CPU dry run: "graph" = eager
    timer = _time_ms if cuda else _cpu_time_ms
    timings = []
    for model in (unet, graphed):
        def run(model=model):
            return model(**inputs, return_dict=False)
        for _ in range(2):
            run()
        timings.append(timer(run, iters))
    peak = ((torch.cuda.max_memory_allocated() - before) / MB + weight_mb) if cuda else None
    del graphed
    log(f"{variant} {res}px b{batch}: eager {timings[0]:.2f} ms, graph {timings[1]:.2f} ms, "
        f"peak {_num(peak, 0)} MB")
    return UNetResult(variant, timings[0], timings[1], weight_mb, peak, layers, res, batch,
                      backends)


def format_unet_matrix(results: list[UNetResult]) -> str:
    """One table per size: latency (CUDA graphs), speed-up over the faster fp16 layout, weight
    share of fp16, peak memory, and which backends ran the layers."""
    lines = []
    sizes = []
    for r in results:
        if (r.resolution, r.batch) not in sizes:
            sizes.append((r.resolution, r.batch))
    for res, batch in sizes:
        rows = [r for r in results if (r.resolution, r.batch) == (res, batch)]
        fp16 = [r for r in rows if r.variant.startswith("fp16") and r.graph_ms is not None]
        base = min(fp16, key=lambda r: r.graph_ms) if fp16 else None
        wbase = next((r.weight_mb for r in rows if r.variant == "fp16" and r.weight_mb), None)
        lines.append(f"\n## SDXL UNet {res}x{res}, batch {batch} (random weights; speed-up vs "
                     f"{base.variant if base else '-'} with CUDA graphs on both sides)")
        lines.append(f"{'variant':<9}{'eager ms':>10}{'graph ms':>10}{'speed-up':>10}"
                     f"{'weights MB':>13}{'of fp16':>9}{'peak MB':>10}  backends / note")
        for r in rows:
            speed = (f"{base.graph_ms / r.graph_ms:.2f}x" if base and r.graph_ms else "-")
            share = (f"{100 * r.weight_mb / wbase:.1f}%" if wbase and r.weight_mb else "-")
            info = ", ".join(f"{k}: {v}" for k, v in sorted(r.backends.items()))
            info = "; ".join(x for x in (info, r.note) if x) or "-"
            lines.append(f"{r.variant:<9}{_num(r.eager_ms):>10}{_num(r.graph_ms):>10}"
                         f"{speed:>10}{_num(r.weight_mb, 0):>13}{share:>9}"
                         f"{_num(r.peak_mb, 0):>10}  {info}")
    return "\n".join(lines)


def _cpu_time_ms(fn, iters: int) -> float:
    return median_ms(fn, iters, device="cpu")


def _num(v, digits=2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"
