"""Deployable integer layers: what :func:`quant.deploy.convert` puts in place of simulated ones.

Each layer holds integer weights in the kernels' layout (int8, or packed int4 for weights of 4
bits and fewer), the int32 weight sums of the zero-point correction, float32 scales and bias,
and calls the ``mixdq::`` ops: on CUDA the compiled kernels when present, elsewhere the exact
torch references. Outputs match the simulated layer up to float rounding; the int32
accumulators are exact.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from . import ops  # noqa: F401  (defines torch.ops.mixdq)
from .layout import conv_weight_nhwc, pack_int4, pad_last, tap_sums, weight_sums

# "kernels": the mixdq ops (CUDA C++ kernels when built, else the torch references);
# "int_mm": torch._int_mm (cuBLASLt) + the fused dequantize, for int8-weight pointwise layers
#   (others use "kernels");
# "triton": the Triton quantize kernel, then the Triton int8/int4 GEMM;
# "triton_fused": one Triton GEMM that quantizes its float input in the prologue.
BACKENDS = ("kernels", "int_mm", "triton", "triton_fused")
TRITON_BACKENDS = ("triton", "triton_fused")
K_ALIGN = 16  # the GEMM loads 16 bytes of K at a time


@dataclasses.dataclass(frozen=True)
class SliceQuant:
    """The activation quantizer of input channels ``[start, stop)``."""

    start: int
    stop: int
    scale: float
    zero_point: int
    bits: int

    def __post_init__(self):
        if not 0 <= self.start < self.stop:
            raise ValueError(f"empty input slice [{self.start}, {self.stop})")
        if not 2 <= self.bits <= 8:
            raise ValueError(f"activation bits {self.bits} outside 2..8")
        lo, hi = -(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1
        if not lo <= self.zero_point <= hi:
            raise ValueError(f"zero point {self.zero_point} outside [{lo}, {hi}]")
        if not self.scale > 0:
            raise ValueError(f"activation scale {self.scale} must be positive")


def cuda_kernels_registered() -> bool:
    """Whether the compiled CUDA kernels are registered for the ``mixdq::`` ops."""
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key("mixdq::w8a8_linear", "CUDA")
    except (AttributeError, RuntimeError):
        return False


_KERNELS_REGISTERED: list[bool] = []  # cached: a dispatcher query is opaque to torch.compile


def _kernels_registered() -> bool:
    if not _KERNELS_REGISTERED:
        _KERNELS_REGISTERED.append(cuda_kernels_registered())
    return _KERNELS_REGISTERED[0]


def _out_dtype(x: torch.Tensor, backend: str = "kernels") -> torch.dtype:
    # The CUDA GEMM writes float16 (or int32); the references and Triton any float dtype.
    if x.is_cuda and backend not in TRITON_BACKENDS and _kernels_registered():
        return torch.float16
    return x.dtype


def check_backend(backend: str) -> None:
    """Raise ValueError for an unknown backend; import the Triton ops for a Triton one."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use one of {BACKENDS}")
    if backend in TRITON_BACKENDS:
        from . import triton_ops  # noqa: F401  (defines torch.ops.mixdq.triton_*)


def _int_mm_ok(m: int, k: int, n: int) -> bool:
    return m > 16 and k % 8 == 0 and n % 8 == 0


class _Gemm(nn.Module):
    """Integer weight of one input slice, ready for the GEMM ops, and its activation quantizer."""

    def __init__(self, q: torch.Tensor, act: SliceQuant, int4: bool, backend: str,
                 kernel_size: tuple[int, int] | None = None):
        super().__init__()
        check_backend(backend)
        self.act = act
        self.int4 = int4
        self.backend = backend
        self.kernel_size = kernel_size  # None: a matrix [N, K] (linear or pointwise conv)
        self.register_buffer("weight_sum", weight_sums(q))
        if kernel_size is None:
            q2 = pad_last(q.reshape(q.shape[0], -1), K_ALIGN)
            self.register_buffer("weight", pack_int4(q2) if int4 else q2.contiguous())
            self.register_buffer("tap_sum", None)
        else:
            q4 = pad_last(conv_weight_nhwc(q), K_ALIGN)  # [N, kh, kw, C padded]
            self.register_buffer("tap_sum", tap_sums(q4))
            # Stored 2-D: Module.to(memory_format=channels_last) restrides every 4-D buffer.
            q2 = q4.reshape(q4.shape[0], -1)
            self.register_buffer("weight", pack_int4(q2) if int4 else q2.contiguous())

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act
        if self.backend == "triton":
            return torch.ops.mixdq.triton_quantize_act(x, a.scale, a.zero_point, a.bits, K_ALIGN)
        return torch.ops.mixdq.quantize_act(x, a.scale, a.zero_point, a.bits, K_ALIGN)

    def linear(self, x, weight_scale, bias, out_dtype):
        """Float ``x`` -> quantize -> GEMM (one kernel with the fused-quantize backend)."""
        if self.backend == "triton_fused":
            a = self.act
            return torch.ops.mixdq.triton_linear(x, self.weight, self.weight_sum, weight_scale,
                                                 a.scale, a.zero_point, bias, out_dtype,
                                                 self.int4, a.bits)
        return self.matmul(self.quantize(x), weight_scale, bias, out_dtype)

    def conv_float(self, x, weight_scale, bias, out_dtype, stride, padding, dilation):
        """Float NHWC ``x`` -> quantize -> implicit-GEMM conv."""
        if self.backend == "triton_fused":
            a = self.act
            return torch.ops.mixdq.triton_conv2d(x, self.weight, self.weight_sum, self.tap_sum,
                                                 weight_scale, a.scale, a.zero_point, bias,
                                                 list(self.kernel_size), stride, padding,
                                                 dilation, out_dtype, self.int4, a.bits)
        return self.conv(self.quantize(x), weight_scale, bias, out_dtype, stride, padding,
                         dilation)

    def matmul(self, xq, weight_scale, bias, out_dtype):
        a, n = self.act, self.weight.shape[0]
        args = (self.weight_sum, weight_scale, a.scale, a.zero_point, bias, out_dtype)
        if self.backend in TRITON_BACKENDS:
            return torch.ops.mixdq.triton_linear(xq, self.weight, *args, self.int4, a.bits)
        if self.int4:
            return torch.ops.mixdq.w4a8_linear(xq, self.weight, *args)
        k = xq.shape[-1]
        if self.backend == "int_mm" and _int_mm_ok(xq.numel() // k, k, n):
            acc = torch._int_mm(xq.reshape(-1, k), self.weight.t())
            y = torch.ops.mixdq.dequantize_acc(acc, *args)
            return y.reshape(*xq.shape[:-1], n)
        return torch.ops.mixdq.w8a8_linear(xq, self.weight, *args)

    def conv(self, xq, weight_scale, bias, out_dtype, stride, padding, dilation):
        a = self.act
        args = (self.weight_sum, self.tap_sum, weight_scale, a.scale, a.zero_point, bias)
        if self.backend in TRITON_BACKENDS:
            return torch.ops.mixdq.triton_conv2d(xq, self.weight, *args, list(self.kernel_size),
                                                 stride, padding, dilation, out_dtype,
                                                 self.int4, a.bits)
        if self.int4:
            return torch.ops.mixdq.w4a8_conv2d(xq, self.weight, *args, list(self.kernel_size),
                                               stride, padding, dilation, out_dtype)
        weight = self.weight.view(self.weight.shape[0], *self.kernel_size, xq.shape[-1])
        return torch.ops.mixdq.w8a8_conv2d(xq, weight, *args, stride, padding, dilation,
                                           out_dtype)


class IntLinear(nn.Module):
    """Integer ``nn.Linear``: quantize the input, int8 x int8/int4 GEMM, fused epilogue.

    With ``bos_row`` (cross-attention key/value), a 3-D input's first token is not computed: the
    precomputed full-precision row is put in front of the integer result for tokens 1...
    """

    is_deployed_module = True

    def __init__(self, qweight: torch.Tensor, w_bits: int, weight_scale: torch.Tensor,
                 bias: torch.Tensor | None, act: SliceQuant, bos_row: torch.Tensor | None = None,
                 backend: str = "kernels"):
        """Args:
            qweight: int8 ``[out, in]`` integer weight values.
            w_bits: weight bits (2..8); 4 and fewer are stored packed as int4.
            weight_scale: float32 ``[out]``.
            bias: ``[out]`` or None (kept in float32).
            act: the input quantizer (covering all ``in`` features).
            bos_row: float32 ``[out]``, the precomputed output of the BOS token, or None.
            backend: one of :data:`BACKENDS`: ``"kernels"`` (mixdq GEMM), ``"int_mm"``
                (torch._int_mm + dequantize; int8 weights only, int4 uses the mixdq GEMM),
                ``"triton"`` or ``"triton_fused"`` (Triton; quantize fused into the GEMM).
                :meth:`set_backend` changes it later (the weight layout is the same).
        """
        super().__init__()
        check_backend(backend)
        self.out_features, self.in_features = qweight.shape
        self.w_bits, self.a_bits = w_bits, act.bits
        self.gemm = _Gemm(qweight, act, w_bits <= 4, backend)
        self.register_buffer("weight_scale", weight_scale.float().contiguous())
        self.register_buffer("bias", None if bias is None else bias.float().contiguous())
        self.register_buffer("bos_row", None if bos_row is None else bos_row.float().contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bos_row is not None and x.dim() == 3 and x.shape[1] > 1:
            body = self._forward(x[:, 1:])
            head = self.bos_row.to(body.dtype).expand(x.shape[0], 1, -1)
            return torch.cat([head, body], 1)
        return self._forward(x)

    def _forward(self, x):
        y = self.gemm.linear(x.detach(), self.weight_scale, self.bias,
                             _out_dtype(x, self.gemm.backend))
        return y if y.dtype == x.dtype else y.to(x.dtype)

    @property
    def backend(self) -> str:
        return self.gemm.backend

    def set_backend(self, backend: str) -> None:
        """Run this layer on another backend (same buffers; every backend is bit-exact)."""
        check_backend(backend)
        self.gemm.backend = backend

    @torch.no_grad()
    def accumulators(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The exact int32 ``sum_k (x_q - zp) * W_q`` of the GEMM for input ``x`` (one slice).

        For a BOS layer, of tokens 1.. only. Same path as :meth:`forward`, before the epilogue.
        """
        if self.bos_row is not None and x.dim() == 3 and x.shape[1] > 1:
            x = x[:, 1:]
        return [self.gemm.linear(x, self.weight_scale, None, torch.int32)]

    def extra_repr(self) -> str:
        storage = "int4" if self.gemm.int4 else "int8"
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"W{self.w_bits}A{self.a_bits} ({storage}, {self.gemm.backend})"
                + (", bos" if self.bos_row is not None else ""))


class IntConv2d(nn.Module):
    """Integer ``nn.Conv2d`` on NHWC int8 (implicit GEMM; pointwise convs as a GEMM).

    Input channel slices with their own quantizers (``concat(hidden, skip)``) are separate GEMMs
    whose outputs are summed; with a weight scale per slice (``weight_scale`` ``[out, slices]``,
    the original's ``conv_shortcut``) slice ``i``'s epilogue uses column ``i``. The output is an
    NCHW view of an NHWC tensor (channels last).
    """

    is_deployed_module = True

    def __init__(self, qweight: torch.Tensor, w_bits: int, weight_scale: torch.Tensor,
                 bias: torch.Tensor | None, acts: list[SliceQuant], stride: tuple[int, int],
                 padding: tuple[int, int], dilation: tuple[int, int], backend: str = "kernels"):
        """Args:
            qweight: int8 ``[out, in, kh, kw]`` integer weight values.
            w_bits, weight_scale, bias, backend: as for :class:`IntLinear`; ``weight_scale``
                may also be ``[out, len(acts)]``: one scale per output channel and input slice.
            acts: one quantizer per input-channel slice, covering ``[0, in)`` in order.
            stride, padding, dilation: of the convolution (zero padding, one group).
        """
        super().__init__()
        check_backend(backend)
        n, c, kh, kw = qweight.shape
        bounds = [(a.start, a.stop) for a in acts]
        if not acts or bounds[0][0] != 0 or bounds[-1][1] != c or any(
                bounds[i][1] != bounds[i + 1][0] for i in range(len(bounds) - 1)):
            raise ValueError(f"input slices {bounds} do not cover channels [0, {c})")
        self.out_channels, self.in_channels, self.kernel_size = n, c, (kh, kw)
        self.stride, self.padding, self.dilation = list(stride), list(padding), list(dilation)
        self.w_bits, self.a_bits = w_bits, acts[0].bits
        self.pointwise = (kh, kw) == (1, 1) and self.stride == [1, 1] and self.padding == [0, 0]
        self.parts = nn.ModuleList(
            _Gemm(qweight[:, a.start:a.stop], a, w_bits <= 4, backend,
                  None if self.pointwise else (kh, kw)) for a in acts)
        scale = weight_scale.float().contiguous()
        if scale.dim() == 2 and tuple(scale.shape) != (n, len(acts)):
            raise ValueError(f"weight scales {tuple(scale.shape)}: expected [{n}] or "
                             f"[{n}, {len(acts)}] (one column per input slice)")
        self.register_buffer("weight_scale", scale)
        for i in range(len(acts) if scale.dim() == 2 else 0):  # each slice's epilogue scales
            self.register_buffer(f"slice_scale_{i}", scale[:, i].contiguous())
        self.register_buffer("bias", None if bias is None else bias.float().contiguous())

    def _scale(self, i: int) -> torch.Tensor:
        return self.weight_scale if self.weight_scale.dim() == 1 else getattr(
            self, f"slice_scale_{i}")

    def _parts(self, x: torch.Tensor, out_dtype: torch.dtype, bias: bool):
        xs = x.detach().permute(0, 2, 3, 1)  # NHWC view; contiguous if x is channels last
        for i, part in enumerate(self.parts):
            xi = xs if len(self.parts) == 1 else xs[..., part.act.start:part.act.stop]
            b = self.bias if bias and i == 0 else None
            if self.pointwise:
                yield part.linear(xi, self._scale(i), b, out_dtype)
            else:
                yield part.conv_float(xi, self._scale(i), b, out_dtype, self.stride,
                                      self.padding, self.dilation)

    @property
    def backend(self) -> str:
        return self.parts[0].backend

    def set_backend(self, backend: str) -> None:
        """Run this layer on another backend (same buffers; every backend is bit-exact)."""
        check_backend(backend)
        for part in self.parts:
            part.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = None
        for yi in self._parts(x, _out_dtype(x, self.backend), bias=True):
            y = yi if y is None else y + yi
        y = y.permute(0, 3, 1, 2)
        return y if y.dtype == x.dtype else y.to(x.dtype)

    @torch.no_grad()
    def accumulators(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The exact int32 accumulators ``[B, OH, OW, out]`` of each input slice's GEMM:
        ``sum (x_q - zp) * W_q`` over the taps inside the image (zero padding)."""
        return list(self._parts(x, torch.int32, bias=False))

    def extra_repr(self) -> str:
        storage = "int4" if self.parts[0].int4 else "int8"
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={tuple(self.stride)}, padding={tuple(self.padding)}, "
                f"W{self.w_bits}A{self.a_bits} ({storage}, {self.parts[0].backend}), "
                f"slices={len(self.parts)}")
