"""Deploy a quantized UNet on integer kernels: convert per layer, report, and CUDA graphs.

    unet = quantize_unet(unet, bit_map, calibration)      # or checkpoint.load_quantized(...)
    unet, report = convert(unet)                           # integer layers, in place
    print(report.format())
    graphed = CudaGraphUNet(unet)                          # optional, CUDA only

:func:`convert` replaces each simulated quantized layer (:mod:`quant.qmodules`) by an integer
layer (:mod:`quant.kernels.modules`) built from its :meth:`integer_form`: int8 weights for 5..8
bits, packed int4 for 2..4 bits (exact: the values fit), int8 activations of 4..8 bits. Layers
the kernels cannot run keep their simulated module, and the report says why.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .errors import MixDQError
from .kernels.backends import default_backend, engine_name
from .kernels.loader import load_extension
from .kernels.modules import BACKENDS, IntConv2d, IntLinear, SliceQuant, cuda_kernels_registered
from .quantize import set_submodule
from .utils.io import write_json
from .utils.sizes import UNIT, format_mb, tensor_bytes

MAX_TAPS = 32  # the conv epilogue keeps a 32-bit mask of in-bounds kernel taps


@dataclasses.dataclass
class DeployConfig:
    """How to deploy.

    Attributes:
        backend: ``"kernels"`` (the mixdq int8 GEMM) or ``"int_mm"`` (``torch._int_mm`` and the
            fused dequantize, for int8-weight linear and pointwise layers; int4 weights and
            spatial convolutions always use the mixdq kernels), ``"triton"`` /
            ``"triton_fused"`` (the Triton kernels; fused: quantize in the GEMM prologue), or
            ``"auto"`` (:func:`quant.kernels.backends.default_backend` for the device; then
            :func:`quant.kernels.backends.tune_backends` measures a choice per layer).
        channels_last: convert the UNet to channels-last memory format, so that the NHWC
            convolutions neither copy their input nor leave strided outputs to float layers.
        merge: merge projections that share an input (:mod:`quant.kernels.merge`): q/k/v of
            self-attention into one GEMM, cross-attention K/V over the text embedding into wide
            GEMMs computed once per prompt. Bit-exact; off by default until measured.
    """

    backend: str = "kernels"
    channels_last: bool = True
    merge: bool = False

    def __post_init__(self):
        if self.backend not in BACKENDS + ("auto",):
            raise MixDQError(f"unknown deploy backend {self.backend!r}; use one of "
                             f"{', '.join(BACKENDS + ('auto',))}")


@dataclasses.dataclass(frozen=True)
class LayerDeployment:
    """One layer's deployment: ``path`` is ``int8``, ``int4``, ``simulated`` or ``float``."""

    name: str
    kind: str
    w_bits: int | None
    a_bits: int | None
    path: str
    engine: str
    reason: str
    bytes: int


@dataclasses.dataclass
class DeployReport:
    """Per-layer report of :func:`convert`."""

    layers: list[LayerDeployment]

    def counts(self) -> dict[str, int]:
        """Number of layers per path."""
        out: dict[str, int] = {}
        for layer in self.layers:
            out[layer.path] = out.get(layer.path, 0) + 1
        return out

    def to_dict(self) -> dict:
        return {"counts": self.counts(), "layers": [dataclasses.asdict(x) for x in self.layers]}

    def save(self, path) -> None:
        """Write the report as JSON (atomically)."""
        write_json(path, self.to_dict())

    def refresh(self, unet: nn.Module) -> DeployReport:
        """The engines of the integer layers as they are now in ``unet`` (after
        :func:`quant.kernels.backends.tune_backends` or ``set_backend``)."""
        rows = []
        for row in self.layers:
            try:
                module = unet.get_submodule(row.name)
            except AttributeError:
                module = None
            if row.path in ("int8", "int4") and hasattr(module, "backend"):
                device = next(module.buffers()).device
                pointwise = isinstance(module, IntLinear) or module.pointwise
                row = dataclasses.replace(row, engine=_engine(device, row.path == "int4",
                                                              pointwise, module.backend))
            rows.append(row)
        return DeployReport(rows)

    def format(self, per_layer: bool = True) -> str:
        """A text table: one line per layer (optional), then the totals per path."""
        lines = []
        if per_layer:
            width = max((len(x.name) for x in self.layers), default=4)
            lines.append(f"{'layer':<{width}}  kind    bits   path       engine / reason")
            for x in self.layers:
                bits = f"W{x.w_bits or 'fp'}A{x.a_bits or 'fp'}"
                note = x.engine + (f" ({x.reason})" if x.reason else "")
                lines.append(f"{x.name:<{width}}  {x.kind:<6}  {bits:<5}  {x.path:<9}  {note}")
        total = sum(x.bytes for x in self.layers)
        summary = ", ".join(f"{k}: {v}" for k, v in sorted(self.counts().items()))
        lines.append(f"{len(self.layers)} layers ({summary}); layer storage "
                     f"{format_mb(total, 1)} {UNIT}")
        return "\n".join(lines)


def _engine(device: torch.device, int4: bool, pointwise: bool, backend: str) -> str:
    triton = engine_name(backend, device, int4, pointwise)
    if triton is not None:
        return triton
    if device.type != "cuda":
        return f"torch reference ({device.type})"
    if not cuda_kernels_registered():
        return f"torch reference on CUDA, slow: {load_extension().reason}"
    if backend == "int_mm" and pointwise and not int4:
        return "torch._int_mm + CUDA epilogue"
    return "CUDA kernel"


def _fallback_reason(form) -> tuple[str, str] | None:
    """``(path, reason)`` when the integer kernels cannot run this layer, else None."""
    if form.w_bits is None and form.a_bits is None:
        return "float", "weight and input in floating point"
    if form.w_bits is None:
        return "simulated", "weight kept in floating point"
    if form.a_bits is None:
        return "simulated", "input kept in floating point (no weight-only kernel)"
    if form.kind == "linear" and form.split is not None:
        return "simulated", "split input slices on a linear layer"
    if form.kind == "conv2d":
        conv = form.conv or {}
        if conv.get("groups", 1) != 1:
            return "simulated", f"grouped convolution (groups={conv['groups']})"
        if conv.get("padding_mode", "zeros") != "zeros":
            return "simulated", f"padding mode {conv['padding_mode']!r}"
        if isinstance(conv.get("padding"), str) and conv["padding"] != "valid":
            return "simulated", f"padding {conv['padding']!r}"
        kh, kw = form.weight_shape[2:]
        if kh * kw > MAX_TAPS:
            return "simulated", f"{kh}x{kw} kernel has more than {MAX_TAPS} taps"
    if form.kind not in ("linear", "conv2d"):
        return "simulated", f"no integer kernel for {form.kind} layers"
    return None


def _slices(form) -> list[SliceQuant]:
    width = form.weight_shape[1]
    bounds = [(0, width)] if form.split is None else [(0, form.split), (form.split, width)]
    return [SliceQuant(lo, hi, float(form.act_scale[i]), int(form.act_zero_point[i]),
                       form.a_bits) for i, (lo, hi) in enumerate(bounds)]


def build_integer_layer(form, backend: str = "kernels") -> nn.Module:
    """The integer layer for a layer's :class:`quant.qmodules.IntegerForm` (no fallback check)."""
    qweight = form.qweight.reshape(form.weight_shape)
    if form.kind == "linear":
        return IntLinear(qweight, form.w_bits, form.wscale, form.bias, _slices(form)[0],
                         form.bos_row, backend)
    conv = form.conv
    padding = (0, 0) if conv["padding"] == "valid" else tuple(conv["padding"])
    return IntConv2d(qweight, form.w_bits, form.wscale, form.bias, _slices(form),
                     tuple(conv["stride"]), padding, tuple(conv["dilation"]), backend)


@torch.no_grad()
def convert(unet: nn.Module, config: DeployConfig | None = None) -> tuple[nn.Module, DeployReport]:
    """Replace every simulated quantized layer of ``unet`` by its integer layer, in place.

    Args:
        unet: a UNet whose layers were quantized by :mod:`quant.quantize` (calibrated) or
            loaded by :func:`quant.checkpoint.load_quantized`.
        config: backend and memory format; default :class:`DeployConfig`.

    Returns:
        ``(unet, report)``: the same module object, and the per-layer report.

    Raises:
        MixDQError: no quantized layers, or a layer without its activation range.
    """
    config = config or DeployConfig()
    layers = {n: m for n, m in unet.named_modules() if getattr(m, "is_quantized_module", False)}
    if not layers:
        raise MixDQError("the UNet has no quantized layers; quantize it first "
                         "(quant.quantize.quantize_unet or quant.checkpoint.load_quantized)")
    rows = []
    for name, layer in layers.items():
        form = layer.integer_form()
        device = layer.weight.device
        fallback = _fallback_reason(form)
        if fallback is not None:
            path, reason = fallback
            rows.append(LayerDeployment(name, form.kind, form.w_bits, form.a_bits, path,
                                        "fake quantization" if path == "simulated" else "float",
                                        reason, tensor_bytes(layer)))
            continue
        backend = default_backend(device) if config.backend == "auto" else config.backend
        new = build_integer_layer(form, backend).to(device)
        set_submodule(unet, name, new)
        int4 = form.w_bits <= 4
        pointwise = form.kind == "linear" or getattr(new, "pointwise", False)
        rows.append(LayerDeployment(name, form.kind, form.w_bits, form.a_bits,
                                    "int4" if int4 else "int8",
                                    _engine(device, int4, pointwise, backend),
                                    "", tensor_bytes(new)))
    if config.merge:
        from .kernels.merge import merge_projections

        merged = merge_projections(unet)
        rows = [dataclasses.replace(r, engine=r.engine + f", merged: {merged.group_of[r.name]}")
                if r.name in merged.group_of else r for r in rows]
    if config.channels_last:
        unet.to(memory_format=torch.channels_last)
    return unet, DeployReport(rows)


class CudaGraphUNet(nn.Module):
    """Run a UNet through captured CUDA graphs, one per input signature (shapes, dtypes).

    The first call with a new signature warms up and captures; later calls copy the inputs into
    the graph's static buffers and replay. Timesteps given as Python numbers become tensors
    (a captured graph cannot read a Python value). Attribute reads fall through to the UNet
    (``config``, ``dtype``, ...), so pipelines can use it in place of the UNet.
    """

    def __init__(self, unet: nn.Module, warmup: int = 2):
        super().__init__()
        if not torch.cuda.is_available():
            raise MixDQError("CUDA graphs need a CUDA device")
        self.unet = unet
        self.warmup = warmup
        self._graphs: dict = {}

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["unet"], name)

    @staticmethod
    def _flatten(kwargs: dict) -> tuple[list[tuple[str, torch.Tensor]], tuple]:
        tensors, key = [], []
        for k in sorted(kwargs):
            v = kwargs[k]
            if isinstance(v, dict):
                for kk in sorted(v):
                    tensors.append((f"{k}.{kk}", v[kk]))
            elif isinstance(v, torch.Tensor):
                tensors.append((k, v))
            else:
                key.append((k, repr(v)))
        key += [(n, tuple(t.shape), t.dtype, t.device) for n, t in tensors]
        return tensors, tuple(key)

    @torch.no_grad()
    def forward(self, sample, timestep, encoder_hidden_states, *, return_dict: bool = True,
                **kwargs):
        if not torch.is_tensor(timestep):
            timestep = torch.tensor(timestep, device=sample.device)
        call = dict(kwargs, sample=sample, timestep=timestep,
                    encoder_hidden_states=encoder_hidden_states)
        tensors, key = self._flatten(call)
        if key not in self._graphs:
            self._graphs[key] = self._capture(call)
        graph, static, out, out_cls = self._graphs[key]
        for (_, src), dst in zip(tensors, static):
            dst.copy_(src)
        graph.replay()
        result = out.clone()
        if not return_dict:
            return (result,)
        return out_cls(sample=result) if out_cls is not None else (result,)

    def _capture(self, call: dict):
        static_call = {k: ({kk: vv.clone() for kk, vv in v.items()} if isinstance(v, dict) else
                           v.clone() if isinstance(v, torch.Tensor) else v)
                       for k, v in call.items()}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            first = self.unet(**static_call, return_dict=True)
            for _ in range(self.warmup - 1):
                self.unet(**static_call, return_dict=True)
        torch.cuda.current_stream().wait_stream(side)
        out_cls = None if isinstance(first, tuple) else type(first)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self.unet(**static_call, return_dict=False)[0]
        static = [t for _, t in self._flatten(static_call)[0]]
        return graph, static, out, out_cls
