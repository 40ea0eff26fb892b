"""Per-shape microbenchmarks of the SDXL UNet's GEMMs: fp16 torch vs torch._int_mm vs mixdq.

For every distinct Linear/Conv2d shape of the real SDXL UNet (read on the meta device) at the
requested resolutions and batches, times on the GPU:

- ``fp16``: ``F.linear`` (cuBLAS) / ``F.conv2d`` on channels-last input (cuDNN);
- ``int_mm+dq``: ``torch._int_mm`` (cuBLASLt int8) and the separate mixdq dequantize kernel
  (linear and pointwise convolutions; its shape limits: M > 16, K and N multiples of 8);
- ``w8a8``: the mixdq GEMM, best of its tile shapes (and the heuristic's choice), int8 input;
- ``w8a8+q``: the same with the activation quantization kernel in front;
- ``w4a8``: the mixdq GEMM with packed int4 weights, best tile shape.

Each time is the mean over a CUDA graph of ``reps`` back-to-back calls (launch gaps excluded),
median of ``trials`` replays.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Callable

import torch
import torch.nn.functional as F

from .layout import pack_int4, tap_sums, weight_sums
from .shapes import GemmShape, distinct_shapes, sdxl_unet_meta

TILE_CONFIGS = (0, 1, 2, 3)


def cuda_time_us(fn: Callable[[], object], reps: int = 20, trials: int = 5) -> float:
    """Microseconds per call of ``fn`` on the GPU, from a captured graph of ``reps`` calls."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(trials):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000.0 / reps)
    del graph
    return statistics.median(times)


@dataclasses.dataclass
class ShapeResult:
    """Timings (µs) of one shape; ``None`` where a path does not apply."""

    resolution: int
    batch: int
    shape: GemmShape
    count: int
    fp16: float
    int_mm: float | None
    w8a8: float
    w8a8_config: int
    w8a8_heuristic: float
    w8a8_quant: float
    w4a8: float


def _operands(shape: GemmShape, device):
    g = torch.Generator(device="cpu").manual_seed(shape.M + shape.N + shape.K)
    n = shape.N
    scale = (torch.rand(n, generator=g) * 1e-3).to(device)
    bias = torch.randn(n, generator=g).to(device)
    if shape.kind == "linear":
        x = torch.randn(shape.M, shape.K, generator=g).half().to(device)
        w = torch.randint(-8, 8, (n, shape.K), generator=g, dtype=torch.int8).to(device)
    else:
        c = shape.C + (-shape.C) % 16
        x = torch.randn(shape.batch, shape.H, shape.W, shape.C, generator=g).half().to(device)
        x = torch.nn.functional.pad(x, (0, c - shape.C))
        w = torch.randint(-8, 8, (n,) + shape.kernel + (c,), generator=g,
                          dtype=torch.int8).to(device)
    return x, w, scale, bias


def bench_shape(shape: GemmShape, count: int, resolution: int, batch: int, reps: int = 20,
                timer: Callable[[Callable[[], object]], float] | None = None,
                device: str = "cuda") -> ShapeResult:
    """Time every path on one shape.

    Args:
        shape, count, resolution, batch: what is measured, for the record.
        reps: calls per timed CUDA graph.
        timer: ``fn -> microseconds per call``; default :func:`cuda_time_us` (tests pass a
            CPU clock to run the same code on the torch references).
        device: where the operands live.
    """
    dev = torch.device(device)
    x, w, scale, bias = _operands(shape, dev)
    ops = torch.ops.mixdq
    xq = ops.quantize_act(x, 0.02, 3, 8, 1)
    wsum = weight_sums(w)
    w4 = pack_int4(w.reshape(w.shape[0], -1))
    time = timer or (lambda fn: cuda_time_us(fn, reps))
    pointwise = shape.kind == "linear" or (shape.kernel == (1, 1) and shape.stride == (1, 1))
    if shape.kind == "linear":
        w16 = (w.half() * scale[:, None].half())
        fp16 = time(lambda: F.linear(x, w16, bias.half()))
        x2, w2 = xq, w
    else:
        w16 = (w.half() * scale[:, None, None, None].half()).permute(0, 3, 1, 2)
        w16 = w16.contiguous(memory_format=torch.channels_last)
        x16 = x.permute(0, 3, 1, 2)  # an NCHW view of NHWC memory: channels last
        fp16 = time(lambda: F.conv2d(x16, w16, bias.half(), shape.stride, shape.padding))
        x2, w2 = xq.reshape(-1, xq.shape[-1]), w.reshape(w.shape[0], -1)
    int_mm = None
    if pointwise and x2.shape[0] > 16 and x2.shape[-1] % 8 == 0 and w.shape[0] % 8 == 0:
        def run_int_mm():
            acc = torch._int_mm(x2, w2.t())
            return ops.dequantize_acc(acc, wsum, scale, 0.02, 3, bias, torch.float16)
        int_mm = time(run_int_mm)

    def gemm(int4: bool, config: int, inp=None):
        inp = xq if inp is None else inp
        wt = w4 if int4 else w
        if pointwise and shape.kind == "linear":
            op = ops.w4a8_linear if int4 else ops.w8a8_linear
            return op(inp, wt, wsum, scale, 0.02, 3, bias, torch.float16, config)
        if pointwise:
            op = ops.w4a8_linear if int4 else ops.w8a8_linear
            return op(inp, wt.reshape(wt.shape[0], -1), wsum, scale, 0.02, 3, bias,
                      torch.float16, config)
        sums = (wsum, tap_sums(w), scale, 0.02, 3, bias)
        geo = (list(shape.stride), list(shape.padding), [1, 1])
        if int4:
            return ops.w4a8_conv2d(inp, wt, *sums, list(shape.kernel), *geo, torch.float16,
                                   config)
        return ops.w8a8_conv2d(inp, wt, *sums, *geo, torch.float16, config)

    w8 = {c: time(lambda c=c: gemm(False, c)) for c in TILE_CONFIGS}
    best = min(w8, key=w8.get)
    heuristic = time(lambda: gemm(False, -1))
    quant = time(lambda: gemm(False, best, ops.quantize_act(x, 0.02, 3, 8, 1)))
    w4t = min(time(lambda c=c: gemm(True, c)) for c in TILE_CONFIGS)
    return ShapeResult(resolution, batch, shape, count, fp16, int_mm, w8[best], best, heuristic,
                       quant, w4t)


def bench_kernels(resolutions=(512, 1024), batches=(1, 4), reps: int = 20,
                  progress: bool = True) -> list[ShapeResult]:
    """Benchmark every distinct SDXL GEMM shape at each resolution and batch (CUDA)."""
    from tqdm.auto import tqdm

    unet = sdxl_unet_meta()
    work = [(r, b, s, c) for r in resolutions for b in batches
            for s, c in distinct_shapes(unet, r, b)]
    return [bench_shape(s, c, r, b, reps)
            for r, b, s, c in tqdm(work, desc="shapes", disable=not progress)]


def format_results(results: list[ShapeResult]) -> str:
    """Tables per (resolution, batch): µs per call, and layer-count-weighted totals."""
    lines = []
    groups: dict[tuple[int, int], list[ShapeResult]] = {}
    for r in results:
        groups.setdefault((r.resolution, r.batch), []).append(r)
    for (res, batch), rows in groups.items():
        lines.append(f"\n## {res}x{res}, batch {batch}  (microseconds per call; x = speed-up "
                     f"of w8a8 over fp16 and over int_mm+dq)")
        lines.append(f"{'shape':<36}{'n':>4}{'fp16':>9}{'int_mm+dq':>11}{'w8a8':>9}{'cfg':>4}"
                     f"{'heur':>9}{'w8a8+q':>9}{'w4a8':>9}{'x fp16':>8}{'x int_mm':>9}")
        tot = dict(fp16=0.0, int_mm=0.0, w8a8=0.0, quant=0.0, w4a8=0.0)
        for r in rows:
            mm = f"{r.int_mm:.1f}" if r.int_mm is not None else "-"
            vs_mm = f"{r.int_mm / r.w8a8:.2f}" if r.int_mm is not None else "-"
            lines.append(f"{r.shape.label:<36}{r.count:>4}{r.fp16:>9.1f}{mm:>11}{r.w8a8:>9.1f}"
                         f"{r.w8a8_config:>4}{r.w8a8_heuristic:>9.1f}{r.w8a8_quant:>9.1f}"
                         f"{r.w4a8:>9.1f}{r.fp16 / r.w8a8:>8.2f}{vs_mm:>9}")
            tot["fp16"] += r.count * r.fp16
            tot["int_mm"] += r.count * (r.int_mm if r.int_mm is not None else r.w8a8)
            tot["w8a8"] += r.count * r.w8a8
            tot["quant"] += r.count * r.w8a8_quant
            tot["w4a8"] += r.count * r.w4a8
        lines.append(f"{'all layers (count-weighted, ms)':<40}{tot['fp16'] / 1e3:>9.2f}"
                     f"{tot['int_mm'] / 1e3:>11.2f}{tot['w8a8'] / 1e3:>9.2f}{'':>13}"
                     f"{tot['quant'] / 1e3:>9.2f}{tot['w4a8'] / 1e3:>9.2f}"
                     f"{tot['fp16'] / tot['w8a8']:>8.2f}")
    return "\n".join(lines)
