"""Per-shape microbenchmarks of the SDXL UNet's GEMMs: fp16 torch vs torch._int_mm vs mixdq.

For every distinct Linear/Conv2d shape of the real SDXL UNet (read on the meta device) at the
requested resolutions and batches, times on the GPU:

- ``fp16``: ``F.linear`` (cuBLAS) / ``F.conv2d`` on channels-last input (cuDNN);
- ``int_mm+dq``: ``torch._int_mm`` (cuBLASLt int8) and the separate mixdq dequantize kernel
  (linear and pointwise convolutions; its shape limits: M > 16, K and N multiples of 8);
- ``w8a8``: the mixdq GEMM, best of its tile shapes (and the heuristic's choice), int8 input;
- ``w8a8+q``: the same with the activation quantization kernel in front;
- ``w4a8``: the mixdq GEMM with packed int4 weights, best tile shape;
- ``tri``: Triton quantize kernel + Triton int8 GEMM; ``tri-f``: one Triton GEMM quantizing its
  float input in the prologue; ``tri-w4``: the same with packed int4 weights (when Triton runs).

The CUDA C++ columns are empty when the extension is not built (the Triton and ``_int_mm``
columns still run). Every integer path's fp16 output is compared bit for bit with the torch
reference (:mod:`quant.kernels.reference`) on the same operands: ``exact`` lists the paths that
differ (``ok`` when none).

Each time is the mean over a CUDA graph of ``reps`` back-to-back calls (launch gaps excluded),
median of ``trials`` replays.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
import torch.nn.functional as F

from ..utils.timing import median_ms
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
    per_replay_ms = median_ms(graph.replay, trials, warmup=1, device="cuda")
    del graph
    return per_replay_ms * 1000.0 / reps


@dataclasses.dataclass
class ShapeResult:
    """Timings (µs) of one shape; ``None`` where a path does not apply or cannot run."""

    resolution: int
    batch: int
    shape: GemmShape
    count: int
    fp16: float
    int_mm: float | None
    w8a8: float | None
    w8a8_config: int
    w8a8_heuristic: float | None
    w8a8_quant: float | None
    w4a8: float | None
    triton: float | None = None
    triton_fused: float | None = None
    triton_w4: float | None = None
    mismatches: list[str] = dataclasses.field(default_factory=list)

    def best_int(self) -> tuple[str, float] | None:
        """The fastest integer path that includes the activation quantization (int8 weights)."""
        paths = {"int_mm+dq": self.int_mm, "w8a8+q": self.w8a8_quant, "tri": self.triton,
                 "tri-f": self.triton_fused}
        paths = {k: v for k, v in paths.items() if v is not None}
        return min(paths.items(), key=lambda kv: kv[1]) if paths else None


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


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.is_floating_point:
        view = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        a, b = a.contiguous().view(view), b.contiguous().view(view)
    return torch.equal(a, b)


def bench_shape(shape: GemmShape, count: int, resolution: int, batch: int, reps: int = 20,
                timer: Callable[[Callable[[], object]], float] | None = None,
                device: str = "cuda", configs=TILE_CONFIGS,
                triton: bool | None = None) -> ShapeResult:
    """Time every path on one shape, and check each integer path's output bits.

    Args:
        shape, count, resolution, batch: what is measured, for the record.
        reps: calls per timed CUDA graph.
        timer: ``fn -> microseconds per call``; default :func:`cuda_time_us` (tests pass a
            CPU clock to run the same code on the torch references).
        device: where the operands live.
        configs: the CUDA kernels' tile shapes to try (the best is reported).
        triton: time the Triton paths (default: where Triton runs on ``device``).
    """
    from . import reference as ref
    from .backends import triton_available
    from .modules import cuda_kernels_registered

    dev = torch.device(device)
    cuda_cpp = dev.type != "cuda" or cuda_kernels_registered()
    if triton is None:
        triton = triton_available(dev)
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

    # the references on the same operands (fp16 output), for the bit-exactness check
    xq_ref = ref.quantize_act(x, 0.02, 3, 8, 1)
    if shape.kind == "linear" or pointwise:
        xr = xq_ref.reshape(-1, xq_ref.shape[-1])
        w2d = w.reshape(w.shape[0], -1)
        want8 = ref.w8a8_linear(xr, w2d, wsum, scale, 0.02, 3, bias, torch.float16)
        want4 = ref.w4a8_linear(xr, w4, wsum, scale, 0.02, 3, bias, torch.float16)
    else:
        sums = (wsum, tap_sums(w), scale, 0.02, 3, bias)
        geo = (list(shape.stride), list(shape.padding), [1, 1])
        want8 = ref.w8a8_conv2d(xq_ref, w, *sums, *geo, torch.float16)
        want4 = ref.w4a8_conv2d(xq_ref, w4, *sums, list(shape.kernel), *geo, torch.float16)
    mismatches = []

    def check(name, got, want):
        if not _bits_equal(got.reshape(want.shape), want):
            mismatches.append(name)

    if int_mm is not None:
        check("int_mm+dq", run_int_mm(), want8)
    w8 = w8best = heuristic = quant = w4t = None
    best = -1
    if cuda_cpp:
        check("w8a8", gemm(False, -1), want8)
        check("w4a8", gemm(True, -1), want4)
        w8 = {c: time(lambda c=c: gemm(False, c)) for c in configs}
        best = min(w8, key=w8.get)
        w8best = w8[best]
        heuristic = w8[-1] if -1 in w8 else time(lambda: gemm(False, -1))
        quant = time(lambda: gemm(False, best, ops.quantize_act(x, 0.02, 3, 8, 1)))
        w4t = min(time(lambda c=c: gemm(True, c)) for c in configs)
    tri = tri_f = tri_w4 = None
    if triton:
        tri, tri_f, tri_w4 = _triton_paths(shape, pointwise, x, w, w4, wsum, scale, bias, check,
                                           want8, want4, time)
    return ShapeResult(resolution, batch, shape, count, fp16, int_mm, w8best, best, heuristic,
                       quant, w4t, tri, tri_f, tri_w4, mismatches)


def _triton_paths(shape, pointwise, x, w, w4, wsum, scale, bias, check, want8, want4, time):
    """Time (and check) the three Triton paths: quantize + int8 GEMM, fused, fused int4."""
    ops = torch.ops.mixdq
    f16 = torch.float16
    if shape.kind == "linear" or pointwise:
        x2 = x.reshape(-1, x.shape[-1])
        w2d = w.reshape(w.shape[0], -1)

        def run(inp, wt, int4):
            return ops.triton_linear(inp, wt, wsum, scale, 0.02, 3, bias, f16, int4, 8)
        w8t = w2d
    else:
        x2 = x
        taps = tap_sums(w)
        geo = (list(shape.kernel), list(shape.stride), list(shape.padding), [1, 1])

        def run(inp, wt, int4):
            return ops.triton_conv2d(inp, wt, wsum, taps, scale, 0.02, 3, bias, *geo, f16, int4,
                                     8)
        w8t = w.reshape(w.shape[0], -1)

    def separate():
        xq = ops.triton_quantize_act(x2, 0.02, 3, 8, 1)
        return run(xq, w8t, False)

    check("tri", separate(), want8)
    check("tri-f", run(x2, w8t, False), want8)
    check("tri-w4", run(x2, w4, True), want4)
    return (time(separate), time(lambda: run(x2, w8t, False)), time(lambda: run(x2, w4, True)))


def bench_kernels(resolutions=(512, 1024), batches=(1, 4), reps: int = 20,
                  progress: bool = True, configs=TILE_CONFIGS, deadline: float | None = None,
                  sizes=None) -> list[ShapeResult]:
    """Benchmark every distinct SDXL GEMM shape at each resolution and batch (CUDA).

    ``sizes`` (``[(resolution, batch), ...]``) overrides the product of ``resolutions`` and
    ``batches``; after ``deadline`` (``time.time()``) no new shape starts.
    """
    import time

    from tqdm.auto import tqdm

    unet = sdxl_unet_meta()
    sizes = sizes or [(r, b) for r in resolutions for b in batches]
    work = [(r, b, s, c) for r, b in sizes for s, c in distinct_shapes(unet, r, b)]
    out = []
    for r, b, s, c in tqdm(work, desc="shapes", disable=not progress):
        if deadline is not None and time.time() > deadline:
            print(f"bench_kernels: time budget reached; {len(work) - len(out)} shapes skipped")
            break
        out.append(bench_shape(s, c, r, b, reps, configs=configs))
    return out


def _cell(v, width=9, digits=1):
    return f"{v:>{width}.{digits}f}" if v is not None else f"{'-':>{width}}"


def format_results(results: list[ShapeResult]) -> str:
    """Tables per (resolution, batch): µs per call, the fastest integer path (quantization
    included) and its speed-up over fp16, the bit-exactness check, and count-weighted totals."""
    lines = []
    groups: dict[tuple[int, int], list[ShapeResult]] = {}
    for r in results:
        groups.setdefault((r.resolution, r.batch), []).append(r)
    cols = ("fp16", "int_mm+dq", "w8a8", "w8a8+q", "w4a8", "tri", "tri-f", "tri-w4")
    for (res, batch), rows in groups.items():
        lines.append(f"\n## {res}x{res}, batch {batch}  (microseconds per call; w8a8/w4a8: CUDA "
                     f"C++ GEMM alone, best tile (cfg); +q: with the quantize kernel; tri: Triton "
                     f"quantize + GEMM, tri-f: fused quantize, tri-w4: fused, int4 weights; "
                     f"best: fastest int8 path with quantization; exact: paths whose fp16 "
                     f"output differs from the reference)")
        lines.append(f"{'shape':<36}{'n':>4}" + "".join(f"{c:>10}" for c in cols)
                     + f"{'cfg':>4}{'best':>10}{'x fp16':>8}{'w4/w8':>7}  exact")
        tot = dict.fromkeys(cols + ("best",), 0.0)
        have = dict.fromkeys(cols + ("best",), True)
        for r in rows:
            vals = (r.fp16, r.int_mm, r.w8a8, r.w8a8_quant, r.w4a8, r.triton, r.triton_fused,
                    r.triton_w4)
            best = r.best_int()
            w8 = min((v for v in (r.w8a8_quant, r.triton_fused, r.triton) if v is not None),
                     default=None)
            w4 = min((v for v in (r.w4a8, r.triton_w4) if v is not None), default=None)
            ratio = f"{w4 / w8:>7.2f}" if w4 is not None and w8 else f"{'-':>7}"
            lines.append(f"{r.shape.label:<36}{r.count:>4}" + "".join(_cell(v, 10) for v in vals)
                         + f"{r.w8a8_config:>4}"
                         + (f"{best[0]:>10}{r.fp16 / best[1]:>8.2f}" if best else
                            f"{'-':>10}{'-':>8}")
                         + ratio + "  " + (",".join(r.mismatches) or "ok"))
            for c, v in zip(cols, vals):
                if v is None:
                    have[c] = False
                else:
                    tot[c] += r.count * v
            if best:
                tot["best"] += r.count * best[1]
            else:
                have["best"] = False
        total = "".join(_cell(tot[c] / 1e3, 10, 2) if have[c] else f"{'-':>10}" for c in cols)
        speed = (f"{tot['fp16'] / tot['best']:>8.2f}" if have["best"] and tot["best"] else
                 f"{'-':>8}")
        lines.append(f"{'all layers (count-weighted, ms)':<40}" + total + f"{'':>4}"
                     + (_cell(tot['best'] / 1e3, 10, 2) if have["best"] else f"{'-':>10}")
                     + speed)
        bad = [f"{r.shape.label}: {','.join(r.mismatches)}" for r in rows if r.mismatches]
        lines.append("bit-exact: " + ("all paths, all shapes" if not bad else
                                      "MISMATCH " + "; ".join(bad)))
    return "\n".join(lines)
