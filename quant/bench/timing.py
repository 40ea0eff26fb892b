"""UNet latency, peak memory and weight bytes of a pipeline.

The UNet is timed on the exact inputs the pipeline gives it (captured from one real generation),
by calling its ``forward`` directly, so the pipeline's own hooks (input casting, NaN checks that
synchronise the GPU) stay out of the measurement while any hooks inside the UNet stay in.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

import torch
from torch import nn


def _detach_tree(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _detach_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_detach_tree(v) for v in obj)
    return obj


class UNetInputCapture:
    """Records the arguments of the first UNet call while active; removes its hook on exit.

    Registered after the pipeline's own pre-hooks, so it sees the inputs after their casting.
    """

    def __init__(self, unet: nn.Module):
        self.args: tuple | None = None
        self.kwargs: dict | None = None
        self._handle = unet.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        if self.args is None:
            self.args, self.kwargs = _detach_tree(args), _detach_tree(kwargs)

    def __enter__(self) -> "UNetInputCapture":
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()


def capture_unet_inputs(pipe, prompt: str, *, resolution: int | None = None,
                        guidance: float = 0.0, seed: int = 0) -> tuple[tuple, dict]:
    """The UNet's ``(args, kwargs)`` for one step of generating ``prompt`` (batch of one)."""
    from ..generate import generate

    with UNetInputCapture(pipe.unet) as capture:
        generate(pipe, [prompt], steps=1, guidance=guidance, resolution=resolution, seed=seed,
                 output_type="latent")
    return capture.args, capture.kwargs


def _integer_form_nbytes(module: nn.Module) -> int:
    """Bytes of a quantized layer as a checkpoint stores it: packed integer weight (or the float
    weight where it stays float), float32 per-channel scales, bias in the layer's dtype, the
    activation scales and zero points, and the precomputed BOS row."""
    from ..packing import values_per_byte

    form = module.integer_form()
    item = module.weight.element_size()
    if form.w_bits is not None:
        out, k = form.qweight.shape
        total = out * -(-k // values_per_byte(form.w_bits)) + 4 * form.wscale.numel()
    else:
        total = form.weight.numel() * item
    if form.bias is not None:
        total += form.bias.numel() * item
    for extra in (form.act_scale, form.act_zero_point, form.bos_row):
        if extra is not None:
            total += extra.numel() * 4
    return total


def _module_nbytes(module: nn.Module) -> int | None:
    """A module's deployable size if it knows it (``quantized_nbytes()``, or a quantized layer
    with an integer form), else ``None``."""
    hook = getattr(module, "quantized_nbytes", None)
    if callable(hook):
        return int(hook())
    if getattr(module, "is_quantized_module", False) and callable(
            getattr(module, "integer_form", None)):
        return _integer_form_nbytes(module)
    return None


def weight_bytes(unet: nn.Module) -> int:
    """Bytes of the UNet's weights as deployed.

    Quantized layers count their packed integer weights plus scales (a module may say its own
    size through a ``quantized_nbytes()`` method); everything else counts its parameters and
    buffers as they are. Tensors shared between modules are counted once.
    """
    seen: set[int] = set()
    total = 0

    def visit(module: nn.Module) -> None:
        nonlocal total
        size = _module_nbytes(module)
        if size is not None:
            total += size
            for t in list(module.parameters()) + list(module.buffers()):
                seen.add(id(t))
            return
        for t in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
        for child in module.children():
            visit(child)

    visit(unet)
    return total


@dataclasses.dataclass
class UNetPerf:
    """One variant's UNet performance.

    Attributes:
        latency_ms: median time of one UNet call (batch of one), milliseconds.
        latency_ms_all: every timed call.
        timer: how it was timed (``cuda-events``, ``cuda-graph``, ``wall-clock``).
        peak_memory_bytes: CUDA ``max_memory_allocated`` over the timed calls (the whole
            pipeline resident), or ``None`` on CPU.
        memory_note: what ``peak_memory_bytes`` means, or why it is missing.
        weight_bytes: :func:`weight_bytes` of the UNet.
        device: where it ran.
    """

    latency_ms: float
    latency_ms_all: list[float]
    timer: str
    peak_memory_bytes: int | None
    memory_note: str
    weight_bytes: int
    device: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _cuda_graph(unet: nn.Module, args: tuple, kwargs: dict):
    """Capture one UNet call in a CUDA graph; returns the graph (inputs stay static)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            unet.forward(*args, **kwargs)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        unet.forward(*args, **kwargs)
    return graph


@torch.no_grad()
def measure_unet(pipe, args: tuple, kwargs: dict, *, repeats: int = 10, warmup: int = 3,
                 cuda_graphs: bool = False) -> UNetPerf:
    """Time the UNet on captured inputs: median of ``repeats`` calls after ``warmup`` calls.

    Args:
        pipe: the pipeline (its UNet is timed).
        args, kwargs: from :func:`capture_unet_inputs`.
        repeats: timed calls.
        warmup: untimed calls first (kernel selection, caches, lazy initialisation).
        cuda_graphs: on CUDA, replay a captured CUDA graph instead of eager calls; if capture
            fails (an op that cannot be captured), eager timing is used and ``timer`` says why.

    Returns:
        A :class:`UNetPerf`.
    """
    unet = pipe.unet
    device = next(unet.parameters()).device
    times: list[float] = []
    if device.type == "cuda":
        timer = "cuda-events"
        call = lambda: unet.forward(*args, **kwargs)  # noqa: E731
        for _ in range(warmup):
            call()
        if cuda_graphs:
            try:
                graph = _cuda_graph(unet, args, kwargs)
                call, timer = graph.replay, "cuda-graph"
            except Exception as e:  # capture is best effort; eager timing still means something
                timer = f"cuda-events (graph capture failed: {type(e).__name__})"
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            call()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        peak = int(torch.cuda.max_memory_allocated(device))
        note = "CUDA max_memory_allocated during the timed UNet calls (whole pipeline resident)"
    else:
        timer = "wall-clock"
        for _ in range(warmup):
            unet.forward(*args, **kwargs)
        for _ in range(repeats):
            start = time.perf_counter()
            unet.forward(*args, **kwargs)
            times.append((time.perf_counter() - start) * 1000.0)
        peak, note = None, "n/a on CPU (no allocator statistics)"
    return UNetPerf(latency_ms=statistics.median(times), latency_ms_all=times, timer=timer,
                    peak_memory_bytes=peak, memory_note=note, weight_bytes=weight_bytes(unet),
                    device=str(device))
