"""Block caching: re-run only what a perturbed layer can change.

In a forward pass of the UNet every module starts and finishes at a fixed point of the call
sequence. A module that *finished* before layer ``L`` *started* cannot depend on ``L``, so when
``L`` alone is perturbed that module's output is the one of the unperturbed pass. The engine
records, once per calibration batch, the outputs of a set of *units* - the UNet's top-level
children (``conv_in``, ``time_embedding``, ``down_blocks.1``, ``mid_block``...) and the numbered
children of its ``down_blocks``/``up_blocks``/``resnets``/``attentions``/samplers/
``transformer_blocks`` lists - and evaluates a perturbed ``L`` by running the stock UNet forward
with each outermost unit that finished before ``L`` swapped for a :class:`Replay` module that
returns the recorded output. What is left to compute is the work downstream of ``L``: skip
tensors, the time embedding and everything upstream are reused, and diffusers' own forward code
runs unchanged, so the result equals a full forward bit for bit.

Units are read from the model by this naming rule and kept only if the traced forward calls them
exactly once; the rule is a parameter (``containers``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterable, Iterator

import torch
from torch import nn

from ..errors import MixDQError
from ..unet import UNET_INPUTS, run_unet

# Only the UNet's top-level blocks and leaves: caching the inputs of the layer's block.
TOP_LEVEL = ("down_blocks", "up_blocks")
DEFAULT_CONTAINERS = ("down_blocks", "up_blocks", "resnets", "attentions", "downsamplers",
                      "upsamplers", "transformer_blocks")
UNET_KEYS = UNET_INPUTS


def unit_candidates(model: nn.Module, containers: Iterable[str] = DEFAULT_CONTAINERS) -> list[str]:
    """Names of the modules that may become replay units, in module order.

    A candidate is a direct child of ``model``, or an item of a ``ModuleList`` whose name is one
    of ``containers`` (``down_blocks.2``, ``down_blocks.2.attentions.0.transformer_blocks.7``).
    """
    containers = set(containers)
    out = []
    for name, module in model.named_modules():
        if not name or isinstance(module, (nn.ModuleList, nn.ModuleDict)):
            continue
        parent, _, leaf = name.rpartition(".")
        if not parent or (leaf.isdigit() and parent.rpartition(".")[2] in containers):
            out.append(name)
    return out


@dataclasses.dataclass(frozen=True)
class Span:
    """Positions of a module's first start and last end in the traced call sequence."""

    start: int
    end: int


@dataclasses.dataclass
class Trace:
    """The call sequence of one forward pass: when units and layers ran.

    Attributes:
        units: replay units (candidates called exactly once) by name.
        layers: traced layers by name (their first call).
        input_elems: input elements per sample of each traced layer (first call).
    """

    units: dict[str, Span]
    layers: dict[str, Span]
    input_elems: dict[str, int]

    def replay_set(self, layer: str) -> tuple[str, ...]:
        """The outermost units that finish before ``layer`` starts, in call order.

        Raises:
            MixDQError: ``layer`` was not called by the traced forward.
        """
        if layer not in self.layers:
            raise MixDQError(f"layer {layer} is not called by the UNet's forward; "
                             f"its sensitivity cannot be measured")
        start = self.layers[layer].start
        done = [u for u, span in self.units.items() if span.end < start]
        done_set = set(done)
        outer = [u for u in done if not any(a in done_set for a in _ancestors(u))]
        return tuple(sorted(outer, key=lambda u: self.units[u].start))


def _ancestors(name: str) -> Iterator[str]:
    parts = name.split(".")
    for i in range(1, len(parts)):
        yield ".".join(parts[:i])


class _Tracer:
    """Hooks that number every start and end of the watched modules during one forward."""

    def __init__(self, model: nn.Module, units: list[str], layers: list[str]):
        self.model = model
        self.units, self.layers = units, layers
        self.clock = 0
        self.starts: dict[str, int] = {}
        self.ends: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self.input_elems: dict[str, int] = {}
        self._handles: list = []

    def __enter__(self) -> "_Tracer":
        try:
            for name in dict.fromkeys(self.units + self.layers):
                module = self.model.get_submodule(name)
                self._handles.append(module.register_forward_pre_hook(self._pre(name)))
                self._handles.append(module.register_forward_hook(self._post(name)))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _pre(self, name: str):
        def hook(module, args):
            self.clock += 1
            self.calls[name] = self.calls.get(name, 0) + 1
            if name not in self.starts:
                self.starts[name] = self.clock
                if args and isinstance(args[0], torch.Tensor) and args[0].dim() > 0:
                    self.input_elems[name] = args[0].numel() // args[0].shape[0]
        return hook

    def _post(self, name: str):
        def hook(module, args, output):
            self.clock += 1
            self.ends[name] = self.clock
        return hook


class _Recorder:
    """Hooks that keep the outputs of the given units, one dict per batch."""

    def __init__(self, model: nn.Module, units: Iterable[str]):
        self.model = model
        self.units = list(units)
        self.store: list[dict[str, Any]] = []
        self._handles: list = []

    def __enter__(self) -> "_Recorder":
        for name in self.units:
            module = self.model.get_submodule(name)
            self._handles.append(module.register_forward_hook(self._keep(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def next_batch(self) -> None:
        self.store.append({})

    def _keep(self, name: str):
        def hook(module, args, output):
            self.store[-1][name] = output
        return hook


class _Cursor:
    """Which calibration batch the replay modules answer for."""

    def __init__(self):
        self.batch = 0


class Replay(nn.Module):
    """Stands in for a unit: returns the unit's recorded output for the current batch.

    Attribute reads that are not its own go to the replaced module, since diffusers' forward
    looks at block attributes (``has_cross_attention``, ``resnets``) before calling them.
    """

    def __init__(self, name: str, original: nn.Module, store: list[dict], cursor: _Cursor):
        super().__init__()
        object.__setattr__(self, "_original", original)  # not registered as a child
        self._name = name
        self._store = store
        self._cursor = cursor

    def forward(self, *args, **kwargs):
        return self._store[self._cursor.batch][self._name]

    def __getattr__(self, attr: str):
        try:
            return super().__getattr__(attr)
        except AttributeError:
            return getattr(self.__dict__["_original"], attr)

    def extra_repr(self) -> str:
        return f"replays {self._name}"


def _set_child(model: nn.Module, name: str, module: nn.Module) -> nn.Module:
    parent, _, leaf = name.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    old = owner.get_submodule(leaf)
    setattr(owner, leaf, module)
    return old


class ReplayEngine:
    """Evaluates single-layer perturbations of a UNet on cached calibration batches.

    Args:
        unet: the model in its unperturbed state (full precision, or a quantized base).
        batches: calibration batches (dicts of UNet inputs), already on the model's device and
            dtype; every evaluation runs over all of them.
        layers: the layers that will be perturbed (traced, and their replay units cached).
        containers: list names whose items are replay units (see :func:`unit_candidates`);
            :data:`TOP_LEVEL` caches only at top-level block boundaries.

    Use :meth:`record` once, then ``with engine.replaying(layer): engine.run(i)`` per batch.
    """

    def __init__(self, unet: nn.Module, batches: list[dict], layers: Iterable[str],
                 containers: Iterable[str] = DEFAULT_CONTAINERS):
        if not batches:
            raise MixDQError("no calibration batches to evaluate on")
        self.unet = unet
        self.batches = batches
        self.layers = list(layers)
        self.containers = tuple(containers)
        self.trace = self._trace()
        self._store: list[dict] = []
        self._cursor = _Cursor()

    @torch.no_grad()
    def _trace(self) -> Trace:
        units = unit_candidates(self.unet, self.containers)
        with _Tracer(self.unet, units, self.layers) as tracer:
            run_unet(self.unet, self.batches[0])
        spans = {n: Span(tracer.starts[n], tracer.ends[n]) for n in tracer.starts}
        unit_spans = {u: spans[u] for u in units if tracer.calls.get(u) == 1}
        layer_spans = {n: spans[n] for n in self.layers if n in spans}
        elems = {n: tracer.input_elems.get(n, 0) for n in self.layers}
        return Trace(unit_spans, layer_spans, elems)

    def needed_units(self) -> list[str]:
        """Units some layer will replay: the only outputs worth caching."""
        needed = set()
        for layer in self.layers:
            needed.update(self.trace.replay_set(layer))
        return [u for u in self.trace.units if u in needed]

    @torch.no_grad()
    def record(self) -> list[torch.Tensor]:
        """Run the unperturbed model over every batch, caching the units' outputs.

        Returns:
            The model's output on each batch.
        """
        outputs = []
        with _Recorder(self.unet, self.needed_units()) as rec:
            for batch in self.batches:
                rec.next_batch()
                outputs.append(run_unet(self.unet, batch))
        self._store = rec.store
        return outputs

    def cached_bytes(self) -> int:
        """Bytes held by the cached unit outputs (shared tensors counted once)."""
        seen: dict[int, int] = {}

        def walk(obj):
            if isinstance(obj, torch.Tensor):
                seen[id(obj)] = obj.numel() * obj.element_size()
            elif isinstance(obj, (tuple, list)):
                for item in obj:
                    walk(item)
            elif isinstance(obj, dict):
                for item in obj.values():
                    walk(item)
        for outputs in self._store:
            walk(outputs)
        return sum(seen.values())

    @contextlib.contextmanager
    def replaying(self, layer: str | None) -> Iterator[tuple[str, ...]]:
        """Swap in replay modules for everything that finishes before ``layer`` starts.

        ``None`` replays nothing (a full forward). Yields the replayed unit names.
        """
        if layer is not None and not self._store:
            raise MixDQError("ReplayEngine.record() must run before replaying")
        units = self.trace.replay_set(layer) if layer is not None else ()
        swapped: dict[str, nn.Module] = {}
        try:
            for name in units:
                original = self.unet.get_submodule(name)
                swapped[name] = _set_child(self.unet, name,
                                           Replay(name, original, self._store, self._cursor))
            yield units
        finally:
            for name, original in swapped.items():
                _set_child(self.unet, name, original)

    @torch.no_grad()
    def run(self, index: int) -> torch.Tensor:
        """The model's output on batch ``index`` (replaying whatever :meth:`replaying` set up)."""
        self._cursor.batch = index
        return run_unet(self.unet, self.batches[index])
