"""UNet latency, peak memory and weight bytes of a pipeline.

The UNet is timed on the exact inputs the pipeline gives it (captured from one real generation),
by calling its ``forward`` directly, so the pipeline's own hooks (input casting, NaN checks that
synchronise the GPU) stay out of the measurement while any hooks inside the UNet stay in.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any

import torch
from torch import nn

from ..utils.sizes import fp16_bytes, weight_bytes
from ..utils.timing import time_calls

__all__ = ["UNetInputCapture", "capture_unet_inputs", "UNetPerf", "measure_unet", "weight_bytes"]


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
        weight_bytes: :func:`quant.utils.sizes.weight_bytes` of the UNet (as deployed).
        device: where it ran.
        fp16_weight_bytes: the baseline sizes are compared with: the UNet's parameters as fp16.
    """

    latency_ms: float
    latency_ms_all: list[float]
    timer: str
    peak_memory_bytes: int | None
    memory_note: str
    weight_bytes: int
    device: str
    fp16_weight_bytes: int | None = None

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
    call = lambda: unet.forward(*args, **kwargs)  # noqa: E731
    if device.type == "cuda":
        timer = "cuda-events"
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
        times = time_calls(call, repeats, device=device)
        peak = int(torch.cuda.max_memory_allocated(device))
        note = "CUDA max_memory_allocated during the timed UNet calls (whole pipeline resident)"
    else:
        timer = "wall-clock"
        times = time_calls(call, repeats, warmup=warmup, device=device)
        peak, note = None, "n/a on CPU (no allocator statistics)"
    return UNetPerf(latency_ms=statistics.median(times), latency_ms_all=times, timer=timer,
                    peak_memory_bytes=peak, memory_note=note, weight_bytes=weight_bytes(unet),
                    device=str(device), fp16_weight_bytes=fp16_bytes(unet))
