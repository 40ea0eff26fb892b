"""Quantized ``nn.Linear`` / ``nn.Conv2d``: simulated (fake) W/A quantization, and a registry.

A quantized layer is made from the float layer (``QuantLinear.from_module(linear, 8, 8)``) and
shares its weight and bias tensors. The weight stays float; the layer quantize-dequantizes it
per output channel (cached per bit width, so switching bits is cheap) and quantize-dequantizes
its input per tensor with the scale and zero point of a calibrated range. The deployable integer
form (int8 values, scales, zero points, BOS row) comes from :meth:`integer_form`, which the
checkpoint writer and the CUDA converter both read.

Two refinements of the input quantizer, both read from the model by :mod:`quant.quantize`:

- ``split``: the input is ``concat(hidden, skip)`` along channels (up-block resnets); the two
  channel slices get separate quantizers.
- ``bos``: cross-attention key/value projections take the text embedding, whose first (BOS)
  token is the same for every prompt and carries a huge outlier. Its output row is computed once
  in full precision and put back in front; only tokens 1.. are quantized.

Optionally an input range per denoising step (``step_ranges``, set by a multi-step calibration
with timestep-dependent ranges, see :mod:`quant.steps`): the range of the step that a
:class:`~quant.steps.StepClock` shared by the UNet's layers names is used instead of
``act_range`` (which stays the range over all steps, and the one of :meth:`integer_form`).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from .bitmap import check_bits
from .bos import full_precision_row
from .errors import MixDQError
from .quantizer import (WEIGHT_SCALES, act_qparams, dequantize_weight, fake_quantize_act,
                        quantize_weight, weight_scale)

QMODULES: dict[type, type] = {}  # float class -> quantized class; filled only by the decorator


def register_qmodule(float_cls: type):
    """Class decorator: make the decorated class the quantized version of ``float_cls``."""
    def decorator(cls):
        QMODULES[float_cls] = cls
        return cls
    return decorator


def qmodule_class(module: nn.Module) -> type | None:
    """The quantized class registered for ``type(module)``, or ``None``."""
    return QMODULES.get(type(module))


class _Keep:
    def __repr__(self):
        return "KEEP"


KEEP = _Keep()  # "leave unchanged" for set_bits


@dataclasses.dataclass
class IntegerForm:
    """The deployable form of one quantized layer (what checkpoints and CUDA kernels consume).

    ``qweight`` is int8 ``[out, K]`` (unpacked values in ``[-2^(b-1), 2^(b-1) - 1]``,
    ``K = in * kh * kw`` in torch's order) with float32 per-channel ``wscale``; when the weight
    stays float, ``weight`` holds it instead. ``act_scale``/``act_zero_point`` have one entry per
    input slice (two when ``split`` is set: channels ``[:split]`` and ``[split:]``). ``bos_row``
    is the precomputed float32 output for the first token of a cross-attention key/value.
    """

    kind: str
    weight_shape: tuple[int, ...]
    w_bits: int | None
    a_bits: int | None
    qweight: torch.Tensor | None
    wscale: torch.Tensor | None
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    act_scale: torch.Tensor | None
    act_zero_point: torch.Tensor | None
    split: int | None
    bos_row: torch.Tensor | None
    conv: dict | None = None


class QuantLayer:
    """Behaviour shared by the quantized layer classes (mixed in before the torch class)."""

    is_quantized_module = True
    kind = ""

    def _init_quant(self, float_module: nn.Module, w_bits, a_bits, name: str,
                    weight_scale: str, split: int | None, bos: bool) -> None:
        if weight_scale not in WEIGHT_SCALES:
            raise MixDQError(f"unknown weight scale method {weight_scale!r}; "
                             f"use one of {', '.join(WEIGHT_SCALES)}")
        self.weight = float_module.weight
        self.bias = float_module.bias
        self.layer_name = name
        self.weight_scale = weight_scale
        self.w_bits = self.a_bits = None
        self.w_enabled = self.a_enabled = True
        self.split = split
        self.bos = bos
        self.bos_row: torch.Tensor | None = None
        self.act_range: list[tuple[float, float]] | None = None
        self.step_ranges: list[list[tuple[float, float]]] | None = None
        self.step_clock = None  # a quant.steps.StepClock when step_ranges are used
        self._wcache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._pinned_bits: int | None = None
        self._w_hat: torch.Tensor | None = None
        self._w_hat_bits: int | None = None
        self._aparams: dict[int, list[tuple[torch.Tensor, int]]] = {}
        self.set_bits(w=w_bits, a=a_bits)

    # -- switches ------------------------------------------------------------------------------

    def set_bits(self, w=KEEP, a=KEEP) -> None:
        """Change the weight and/or activation bits (``None`` = floating point).

        Cheap: integer weights are cached per bit width (one byte per parameter each, until
        :meth:`clear_cache`), nothing is re-created; only the dequantized weight of the bits in
        use is kept.

        Raises:
            MixDQError: an unsupported bit width, naming this layer.
        """
        if w is not KEEP:
            check_bits(w, "weight", self.layer_name)
            self.w_bits = w
            if w != self._w_hat_bits:
                self._w_hat = self._w_hat_bits = None
        if a is not KEEP:
            check_bits(a, "activation", self.layer_name)
            self.a_bits = a

    def enable(self, weight: bool | None = None, act: bool | None = None) -> None:
        """Turn weight / activation quantization on or off, keeping the configured bits."""
        if weight is not None:
            self.w_enabled = bool(weight)
        if act is not None:
            self.a_enabled = bool(act)

    @property
    def active_w_bits(self) -> int | None:
        """The weight bits in effect (``None`` when float or switched off)."""
        return self.w_bits if self.w_enabled else None

    @property
    def active_a_bits(self) -> int | None:
        """The activation bits in effect (``None`` when float or switched off)."""
        return self.a_bits if self.a_enabled else None

    def clear_cache(self) -> None:
        """Drop cached quantized weights (those loaded from a checkpoint are kept)."""
        self._wcache = {b: v for b, v in self._wcache.items() if b == self._pinned_bits}
        self._w_hat = None
        self._w_hat_bits = None

    # -- weights -------------------------------------------------------------------------------

    def quantized_weight(self, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(q, scale)``: int8 ``[out, K]`` and float32 ``[out]`` at ``bits``, cached."""
        if bits not in self._wcache:
            check_bits(bits, "weight", self.layer_name)
            scale = weight_scale(self.weight, bits, self.weight_scale)
            self._wcache[bits] = (quantize_weight(self.weight, scale, bits), scale)
        return self._wcache[bits]

    def effective_weight(self) -> torch.Tensor:
        """The weight the forward uses: fake-quantized at the active bits, or the float one."""
        bits = self.active_w_bits
        if bits is None:
            return self.weight
        if self._w_hat is None or self._w_hat_bits != bits:
            q, scale = self.quantized_weight(bits)
            self._w_hat = dequantize_weight(q, scale, self.weight.shape, self.weight.dtype)
            self._w_hat_bits = bits
        return self._w_hat

    def pin_weight(self, bits: int, q: torch.Tensor, scale: torch.Tensor) -> None:
        """Adopt an integer weight (from a checkpoint): the float weight becomes ``q * scale``.

        The float original is dropped; other bit widths re-quantize the dequantized weight.
        """
        out = self.weight.shape[0]
        if tuple(q.shape) != (out, self.weight[0].numel()) or tuple(scale.shape) != (out,):
            raise MixDQError(f"layer {self.layer_name}: integer weight of shape "
                             f"{tuple(q.shape)} / scale {tuple(scale.shape)} does not fit a "
                             f"weight of shape {tuple(self.weight.shape)}")
        device, dtype = self.weight.device, self.weight.dtype
        q, scale = q.to(device, torch.int8), scale.to(device, torch.float32)
        w_hat = dequantize_weight(q, scale, self.weight.shape, dtype)
        self.weight = nn.Parameter(w_hat, requires_grad=False)
        self._wcache = {bits: (q, scale)}
        self._pinned_bits = bits
        self._w_hat = None
        self.set_bits(w=bits)

    # -- activations ---------------------------------------------------------------------------

    def _bos_active(self, x: torch.Tensor) -> bool:
        return self.bos and x.dim() == 3 and x.shape[1] > 1

    def calibration_view(self, x: torch.Tensor) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """What the range observer sees of input ``x``: ``(bos_input, slices)``.

        ``bos_input`` is the first token's row (``[B, D]``) when BOS handling applies, else
        ``None``; ``slices`` are the parts of the rest that get separate quantizers.
        """
        bos_input = None
        if self._bos_active(x):
            bos_input, x = x[:, 0], x[:, 1:]
        if self.split is None:
            return bos_input, [x]
        return bos_input, [x[:, :self.split], x[:, self.split:]]

    def set_act_range(self, ranges: list[tuple[float, float]]) -> None:
        """Set the calibrated input range, one ``(lo, hi)`` per slice."""
        expected = 1 if self.split is None else 2
        if len(ranges) != expected:
            raise MixDQError(f"layer {self.layer_name}: expected {expected} activation "
                             f"range(s), got {len(ranges)}")
        self.act_range = [(float(lo), float(hi)) for lo, hi in ranges]
        self._aparams = {}

    def set_step_ranges(self, ranges: list[list[tuple[float, float]]] | None, clock=None) -> None:
        """Input ranges per denoising step (one ``(lo, hi)`` per slice each), chosen by
        ``clock.index`` (a :class:`quant.steps.StepClock`) at run time; ``None`` removes them."""
        if ranges is not None:
            expected = 1 if self.split is None else 2
            if any(len(r) != expected for r in ranges) or clock is None:
                raise MixDQError(f"layer {self.layer_name}: per-step ranges need {expected} "
                                 f"range(s) per step and a step clock")
            ranges = [[(float(lo), float(hi)) for lo, hi in r] for r in ranges]
        self.step_ranges = ranges
        self.step_clock = clock if ranges is not None else None
        self._aparams = {}

    def act_params(self, bits: int) -> list[tuple[torch.Tensor, int]]:
        """``(scale, zero_point)`` per input slice at ``bits``, from the calibrated range (the
        current step's when per-step ranges are set and the step clock names a step)."""
        step = None
        if self.step_ranges is not None and self.step_clock.index is not None:
            step = self.step_clock.index
        return self._act_params_at(bits, step)

    def _act_params_at(self, bits: int, step: int | None) -> list[tuple[torch.Tensor, int]]:
        key = bits if step is None else (bits, step)
        if key not in self._aparams:
            if self.act_range is None:
                raise MixDQError(f"layer {self.layer_name}: no activation range; calibrate "
                                 f"(quant.calib.ranges.calibrate_activations) before quantizing "
                                 f"its input to {bits} bits")
            ranges = self.act_range if step is None else self.step_ranges[step]
            device = self.weight.device
            self._aparams[key] = [(scale.to(device), zp) for scale, zp in
                                  (act_qparams(lo, hi, bits) for lo, hi in ranges)]
        return self._aparams[key]

    def set_bos_input(self, row: torch.Tensor) -> None:
        """Precompute the full-precision output of the BOS token from its input ``row`` ``[D]``."""
        self.bos_row = full_precision_row(self.weight, self.bias, row)

    def _quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        bits = self.active_a_bits
        if bits is None:
            return x
        params = self.act_params(bits)
        if self.split is None:
            return fake_quantize_act(x, *params[0], bits)
        head = fake_quantize_act(x[:, :self.split], *params[0], bits)
        tail = fake_quantize_act(x[:, self.split:], *params[1], bits)
        return torch.cat([head, tail], 1)

    # -- forward -------------------------------------------------------------------------------

    def _op(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._bos_active(x):
            return self._op(self._quantize_input(x), self.effective_weight())
        if self.bos_row is None:  # not calibrated yet: the first token in full precision, live
            head = self._op(x[:, :1], self.weight)
        else:
            head = self.bos_row.to(x.dtype).expand(x.shape[0], 1, -1)
        body = self._op(self._quantize_input(x[:, 1:]), self.effective_weight())
        return torch.cat([head, body], 1)

    def _apply(self, fn, recurse=True):
        # Module.to()/half()/cuda() reach only parameters and buffers; the caches hold integer
        # and float32 tensors that must move device but never change dtype.
        super()._apply(fn, recurse)
        device = self.weight.device
        self._wcache = {b: (q.to(device), s.to(device)) for b, (q, s) in self._wcache.items()}
        if self.bos_row is not None:
            self.bos_row = self.bos_row.to(device)
        self._w_hat = None
        self._aparams = {}
        return self

    # -- deployable form -----------------------------------------------------------------------

    def integer_form(self) -> IntegerForm:
        """The integer form at the active bits; see :class:`IntegerForm`."""
        w_bits, a_bits = self.active_w_bits, self.active_a_bits
        qweight = wscale = weight = None
        if w_bits is None:
            weight = self.weight.detach()
        else:
            qweight, wscale = self.quantized_weight(w_bits)
        act_scale = act_zp = None
        if a_bits is not None:
            params = self._act_params_at(a_bits, None)  # the range over all steps
            act_scale = torch.stack([s.float().cpu() for s, _ in params])
            act_zp = torch.tensor([zp for _, zp in params], dtype=torch.int32)
        bias = None if self.bias is None else self.bias.detach().float()
        return IntegerForm(kind=self.kind, weight_shape=tuple(self.weight.shape), w_bits=w_bits,
                           a_bits=a_bits, qweight=qweight, wscale=wscale, weight=weight,
                           bias=bias, act_scale=act_scale, act_zero_point=act_zp,
                           split=self.split, bos_row=self.bos_row if self.bos else None,
                           conv=self._conv_params())

    def _conv_params(self) -> dict | None:
        return None

    def extra_repr(self) -> str:
        w = self.active_w_bits or "fp"
        a = self.active_a_bits or "fp"
        extra = f", split={self.split}" if self.split is not None else ""
        extra += ", bos" if self.bos else ""
        return f"{super().extra_repr()}, W{w}A{a}{extra}"


@register_qmodule(nn.Linear)
class QuantLinear(QuantLayer, nn.Linear):
    """Fake-quantized ``nn.Linear``."""

    kind = "linear"

    @classmethod
    def from_module(cls, module: nn.Linear, w_bits: int | None = 8, a_bits: int | None = 8, *,
                    name: str = "", weight_scale: str = "mse", split: int | None = None,
                    bos: bool = False) -> "QuantLinear":
        """Wrap ``module`` (sharing its weight and bias).

        Args:
            module: the float layer.
            w_bits: weight bits 2..8, or ``None`` for a float weight.
            a_bits: input activation bits 4..8, or ``None`` for a float input.
            name: the layer's module name, used in error messages.
            weight_scale: ``"mse"`` (clipping search) or ``"minmax"``.
            split: channel count of the first of two concatenated input slices, if any.
            bos: precompute the first token's output in full precision (cross-attention k/v).

        Returns:
            The quantized layer (not yet calibrated).
        """
        q = cls(module.in_features, module.out_features, bias=module.bias is not None,
                device="meta")
        q._init_quant(module, w_bits, a_bits, name, weight_scale, split, bos)
        return q

    def _op(self, x, weight):
        return F.linear(x, weight, self.bias)


@register_qmodule(nn.Conv2d)
class QuantConv2d(QuantLayer, nn.Conv2d):
    """Fake-quantized ``nn.Conv2d``; ``split`` slices the input channels."""

    kind = "conv2d"

    @classmethod
    def from_module(cls, module: nn.Conv2d, w_bits: int | None = 8, a_bits: int | None = 8, *,
                    name: str = "", weight_scale: str = "mse", split: int | None = None,
                    bos: bool = False) -> "QuantConv2d":
        """Wrap ``module``; arguments as in :meth:`QuantLinear.from_module`."""
        if split is not None and not 0 < split < module.in_channels:
            raise MixDQError(f"layer {name}: split {split} outside 1..{module.in_channels - 1}")
        q = cls(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                module.padding, module.dilation, module.groups, bias=module.bias is not None,
                padding_mode=module.padding_mode, device="meta")
        q._init_quant(module, w_bits, a_bits, name, weight_scale, split, False)
        return q

    def _op(self, x, weight):
        return self._conv_forward(x, weight, self.bias)

    def _conv_params(self):
        return {"stride": tuple(self.stride), "padding": self.padding,
                "dilation": tuple(self.dilation), "groups": self.groups,
                "padding_mode": self.padding_mode}
