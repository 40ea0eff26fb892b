"""Which backend runs each integer layer: a default per device, refined by a measured table.

Backends (:data:`quant.kernels.modules.BACKENDS`) share every weight buffer and are bit-exact
against the same references, so the choice is about speed only and can change at any time
(``layer.set_backend``). :func:`tune_backends` measures it on the deployed UNet:

1. one forward pass records each integer layer's input shape;
2. for each distinct signature (layer geometry, storage, input shape) every applicable backend
   is run on a random input of that shape: outputs must be bit-identical to the ``kernels``
   backend's (a mismatch excludes the backend and is reported), then timed;
3. every layer of the signature gets the fastest; the table (device -> signature -> times) is
   kept in a JSON cache, so a later load with the same shapes measures nothing.

A table measured on one GPU can be shipped as ``configs/backends/<device name>.json`` (spaces
as underscores); :func:`tune_backends` reads it before measuring.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from ..errors import MixDQError
from ..utils.timing import median_ms
from .modules import (
    BACKENDS,
    TRITON_BACKENDS,
    IntConv2d,
    IntLinear,
    cuda_kernels_registered,
)


def triton_available(device: torch.device) -> bool:
    """Whether the Triton backends can run on ``device`` (CUDA, or CPU under the interpreter)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    from .triton_ops import available

    return available(device)


def available_backends(device: torch.device | str) -> list[str]:
    """The backends worth timing on ``device``: ``kernels`` (on CUDA only when the extension is
    built: else it is the slow torch reference), ``int_mm``, and Triton where it runs."""
    device = torch.device(device)
    out = ["int_mm"]
    if device.type != "cuda" or cuda_kernels_registered():
        out.insert(0, "kernels")
    if triton_available(device):
        out += list(TRITON_BACKENDS)
    return out


def default_backend(device: torch.device | str) -> str:
    """Before measuring: the compiled CUDA kernels on Ampere/Ada (``mma.sync`` is their native
    instruction); on Hopper, Triton (``wgmma``) when installed; else ``kernels``."""
    device = torch.device(device)
    if device.type != "cuda":
        return "kernels"
    major, _ = torch.cuda.get_device_capability(device)
    if major >= 9 and triton_available(device):
        return "triton_fused"
    if cuda_kernels_registered():
        return "kernels"
    return "triton_fused" if triton_available(device) else "kernels"


def engine_name(backend: str, device: torch.device, int4: bool, pointwise: bool) -> str | None:
    """What actually runs for the Triton backends (``None``: not a Triton backend)."""
    if backend not in TRITON_BACKENDS:
        return None
    what = "fused quantize + GEMM" if backend == "triton_fused" else "quantize, GEMM"
    if device.type != "cuda":
        return f"Triton interpreter ({device.type}): {what}"
    return f"Triton: {what}"


def applicable(module: nn.Module, backend: str) -> bool:
    """Whether ``backend`` would run ``module`` itself (``int_mm`` takes int8 pointwise layers;
    elsewhere it falls back to ``kernels``, which is then measured under that name)."""
    if backend == "int_mm":
        if isinstance(module, IntLinear):
            return not module.gemm.int4
        return module.pointwise and not module.parts[0].int4
    return True


def layer_signature(module: nn.Module, shape: tuple[int, ...], dtype: torch.dtype) -> str:
    """What the speed of a layer depends on: geometry, storage and input shape."""
    dt = str(dtype).replace("torch.", "")
    if isinstance(module, IntLinear):
        g = module.gemm
        return (f"linear|N{module.out_features}|K{module.in_features}|"
                f"{'int4' if g.int4 else 'int8'}|a{g.act.bits}|"
                f"bos{int(module.bos_row is not None)}|x{'x'.join(map(str, shape))}|{dt}")
    parts = "+".join(str(p.act.stop - p.act.start) for p in module.parts)
    return (f"conv|N{module.out_channels}|C{parts}|k{module.kernel_size[0]}x"
            f"{module.kernel_size[1]}|s{module.stride[0]}{module.stride[1]}|"
            f"p{module.padding[0]}{module.padding[1]}|d{module.dilation[0]}{module.dilation[1]}|"
            f"{'int4' if module.parts[0].int4 else 'int8'}|a{module.a_bits}|"
            f"x{'x'.join(map(str, shape))}|{dt}")


def device_key(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device).replace(" ", "_")
    return device.type + ("-triton-interpreter" if triton_available(device) else "")


def default_timer(device: torch.device, reps: int = 10) -> Callable[[Callable, str], float]:
    """``(fn, backend) -> microseconds per call``: CUDA events (median of ``reps``), else a CPU
    clock."""
    def cuda_time(fn, backend=None):
        return 1e3 * median_ms(fn, reps, warmup=3, device=device)

    def cpu_time(fn, backend=None):
        return 1e3 * median_ms(fn, max(1, reps // 3), warmup=1, device=device)

    return cuda_time if device.type == "cuda" else cpu_time


@dataclasses.dataclass
class BackendChoice:
    """The result of :func:`tune_backends`.

    Attributes:
        device: the device key of the table.
        layers: layer name -> (signature, chosen backend).
        table: signature -> {backend: microseconds} (``inf`` for a backend whose output was not
            bit-identical, listed in ``mismatches``).
        measured: how many signatures were timed now (the rest came from the cache/shipped table).
        mismatches: ``(signature, backend)`` pairs excluded for not matching ``kernels``.
    """

    device: str
    layers: dict[str, tuple[str, str]]
    table: dict[str, dict[str, float]]
    measured: int = 0
    mismatches: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, backend in self.layers.values():
            out[backend] = out.get(backend, 0) + 1
        return out

    def format(self) -> str:
        """One line per signature: layer count, time per backend (µs), the choice."""
        backends = [b for b in BACKENDS if any(b in t for t in self.table.values())]
        count: dict[str, int] = {}
        chosen: dict[str, str] = {}
        for sig, backend in self.layers.values():
            count[sig] = count.get(sig, 0) + 1
            chosen[sig] = backend
        width = max((len(s) for s in count), default=9)
        lines = [f"backend choice on {self.device} ({self.measured} signatures measured now)",
                 f"{'signature':<{width}}  {'n':>4}" + "".join(f"{b:>14}" for b in backends)
                 + "  chosen"]
        for sig in sorted(count, key=lambda s: -count[s]):
            times = self.table.get(sig, {})
            cells = "".join(f"{_fmt_us(times.get(b)):>14}" for b in backends)
            lines.append(f"{sig:<{width}}  {count[sig]:>4}{cells}  {chosen[sig]}")
        lines.append("layers per backend: " + ", ".join(
            f"{k}: {v}" for k, v in sorted(self.counts().items())))
        for sig, backend in self.mismatches:
            lines.append(f"MISMATCH (excluded): {backend} on {sig}")
        return "\n".join(lines)


def _fmt_us(t) -> str:
    if t is None:
        return "-"
    return "mismatch" if t == float("inf") else f"{t:.1f}"


def _cache_path() -> Path:
    env = os.environ.get("MIXDQ_BACKEND_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "mixdq" / "backends.json"


def shipped_table(device: str) -> dict[str, dict[str, float]]:
    """The table shipped for ``device`` in ``configs/backends/`` (empty if none)."""
    try:
        text = resources.files("quant.configs").joinpath("backends", f"{device}.json").read_text()
    except (FileNotFoundError, OSError, ModuleNotFoundError):
        return {}
    return json.loads(text)


def _read_cache(path: Path | None) -> dict:
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # a damaged cache is rebuilt, never trusted


def _record_inputs(unet: nn.Module, layers: dict[str, nn.Module], inputs: dict):
    shapes: dict[str, tuple[tuple[int, ...], torch.dtype, torch.device, bool]] = {}

    def hook(name):
        def pre(module, args):
            x = args[0]
            cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
            shapes.setdefault(name, (tuple(x.shape), x.dtype, x.device, cl))
        return pre

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    try:
        with torch.no_grad():
            unet(**inputs)
    finally:
        for h in handles:
            h.remove()
    return shapes


def _sample(shape, dtype, device, channels_last, seed):
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if len(shape) == 3 and shape[1] > 1:
        x[:, 0] = x[:, 0] * 30  # a BOS-like outlier row, as in text embeddings
    return x


@torch.no_grad()
def tune_backends(unet: nn.Module, inputs: dict, backends: list[str] | None = None,
                  cache: str | os.PathLike | None | bool = True,
                  timer: Callable[[Callable, str], float] | None = None) -> BackendChoice:
    """Measure and set the fastest bit-exact backend of every integer layer of ``unet``.

    Args:
        unet: a converted UNet (:func:`quant.deploy.convert`).
        inputs: the UNet's call arguments at the deployment size (batch, resolution).
        backends: candidates (default: :func:`available_backends` of the layers' device); each
            is first checked bit for bit against the ``kernels`` backend's output.
        cache: a JSON file, ``True`` for ``MIXDQ_BACKEND_CACHE`` or ``~/.cache/mixdq/
            backends.json``, or ``None``/``False`` for none.
        timer: ``(fn, backend) -> microseconds`` per call of ``fn``; default CUDA events / a
            CPU clock.

    Returns:
        The choice per layer and the measured table; the layers are switched in place.
    """
    layers = {n: m for n, m in unet.named_modules() if isinstance(m, (IntLinear, IntConv2d))}
    if not layers:
        raise MixDQError("no integer layers to tune; convert the UNet first (quant.deploy)")
    from .merge import reset_merge_caches

    reset_merge_caches(unet)  # a cached wide output would hide its layer from the recording
    shapes = _record_inputs(unet, layers, inputs)
    if not shapes:
        raise MixDQError("the UNet call reached none of its integer layers")
    device = next(iter(shapes.values()))[2]
    candidates = list(backends) if backends else available_backends(device)
    unknown = [b for b in candidates if b not in BACKENDS]
    if unknown:
        raise MixDQError(f"unknown backends {unknown}; use some of {', '.join(BACKENDS)}")
    dev_key = device_key(device)
    path = _cache_path() if cache is True else (Path(cache) if cache else None)
    stored = _read_cache(path)
    table: dict[str, dict[str, float]] = dict(shipped_table(dev_key))
    table.update(stored.get(dev_key, {}))
    timer = timer or default_timer(device)
    choice = BackendChoice(dev_key, {}, {})
    by_sig: dict[str, list[str]] = {}
    for name, (shape, dtype, _, _) in shapes.items():
        by_sig.setdefault(layer_signature(layers[name], shape, dtype), []).append(name)
    for sig, names in by_sig.items():
        module = layers[names[0]]
        times = table.get(sig)
        if times is None or any(b not in times for b in candidates if applicable(module, b)):
            shape, dtype, dev, cl = shapes[names[0]]
            times = _measure(module, _sample(shape, dtype, dev, cl, len(sig)), candidates, timer,
                             sig, choice.mismatches)
            table[sig] = times
            choice.measured += 1
        usable = {b: t for b, t in times.items() if b in candidates and t != float("inf")}
        # nothing usable (no candidate applies, or all mismatched): the reference path
        best = min(usable, key=usable.get) if usable else "kernels"
        for name in names:
            layers[name].set_backend(best)
            choice.layers[name] = (sig, best)
        choice.table[sig] = times
    if path is not None and choice.measured:
        from ..utils.io import write_json

        stored.setdefault(dev_key, {}).update(choice.table)
        try:
            write_json(path, stored)
        except OSError:
            pass  # an unwritable cache only costs measuring again
    return choice


def _measure(module, x, candidates, timer, sig, mismatches) -> dict[str, float]:
    original = module.backend
    times: dict[str, float] = {}
    try:
        module.set_backend("kernels")  # the references (or the CUDA kernels): what all must match
        want = module(x)
        for backend in candidates:
            if not applicable(module, backend):
                continue
            module.set_backend(backend)
            got = module(x)
            if not _same_bits(got, want):
                times[backend] = float("inf")
                mismatches.append((sig, backend))
                continue
            times[backend] = float(timer(lambda: module(x), backend))
    finally:
        module.set_backend(original)
    return times


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.is_floating_point:
        view = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        return torch.equal(a.contiguous().view(view), b.contiguous().view(view))
    return torch.equal(a, b)
