"""INT8 kernels for the quantized UNet: ``mixdq::`` ops, pure-torch references, CUDA when built.

The ops (``torch.ops.mixdq.*``, declared in :mod:`quant.kernels.ops`) are:

- ``quantize_act(x, scale, zero_point, bits, pad_to=1)``: float -> int8, per tensor;
- ``w8a8_linear`` / ``w4a8_linear``: int8 x int8 (or packed int4) GEMM with the zero-point
  correction, scales and bias fused into the epilogue;
- ``w8a8_conv2d`` / ``w4a8_conv2d``: the same on NHWC int8 images (implicit GEMM, exact at
  padded borders);
- ``dequantize_acc``: the epilogue alone, after ``torch._int_mm``.

Every op runs everywhere through its exact torch reference (:mod:`quant.kernels.reference`);
importing the compiled extension registers CUDA kernels for them. Importing this package never
fails for lack of the build; :func:`is_available` and :func:`describe` say what is there.
"""

from __future__ import annotations

import torch

from . import ops  # noqa: F401  (defines torch.ops.mixdq)
from .loader import KernelStatus, build_jit, load_extension
from .modules import IntConv2d, IntLinear, SliceQuant, cuda_kernels_registered

# Register the CUDA kernels of a built extension now, so that every mixdq op called on CUDA
# tensors finds them; without a build this records why and changes nothing.
load_extension()

__all__ = ["is_available", "describe", "load_extension", "build_jit", "KernelStatus",
           "IntLinear", "IntConv2d", "SliceQuant", "quantize_act", "w8a8_linear",
           "w4a8_linear", "w8a8_conv2d", "w4a8_conv2d", "dequantize_acc"]


def is_available() -> bool:
    """Whether the CUDA kernels can run here: a CUDA device and the kernels registered.

    Tries to import the built extension on first call.
    """
    load_extension()
    return torch.cuda.is_available() and cuda_kernels_registered()


def describe() -> str:
    """A few lines on what is available: torch, the GPU, the extension (or why not), the ops."""
    status = load_extension()
    lines = [f"mixdq kernels: {'available' if is_available() else 'not available'}",
             f"  torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}"]
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        lines.append(f"  device: {props.name} (sm_{props.major}{props.minor}, "
                     f"{props.multi_processor_count} SMs)")
    else:
        lines.append("  device: no CUDA device")
    if cuda_kernels_registered():
        lines.append(f"  extension: loaded ({status.source or 'JIT build'})")
    else:
        lines.append(f"  extension: not loaded - {status.reason}")
    try:
        import triton

        from .backends import triton_available

        where = "runs here" if triton_available(torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")) else "needs a CUDA device"
        lines.append(f"  triton: {triton.__version__} ({where}; backends triton, triton_fused)")
    except ImportError:
        lines.append("  triton: not installed (pip install mixdq[triton])")
    impl = "CUDA kernel + torch reference" if cuda_kernels_registered() else "torch reference"
    lines.append(f"  ops: {', '.join('mixdq::' + n for n in ops.SCHEMAS)} ({impl})")
    return "\n".join(lines)


def quantize_act(x: torch.Tensor, scale: float, zero_point: int, bits: int = 8,
                 pad_to: int = 1) -> torch.Tensor:
    """``clamp(round(x / scale) + zero_point, qmin, qmax)`` as int8.

    The last dim is padded to ``pad_to``.
    """
    return torch.ops.mixdq.quantize_act(x, scale, zero_point, bits, pad_to)


def w8a8_linear(x, weight, weight_sum, weight_scale, x_scale, x_zero_point, bias=None,
                out_dtype=torch.float16, config=-1):
    """Int8 linear; see :func:`quant.kernels.reference.w8a8_linear`."""
    return torch.ops.mixdq.w8a8_linear(x, weight, weight_sum, weight_scale, x_scale,
                                       x_zero_point, bias, out_dtype, config)


def w4a8_linear(x, weight, weight_sum, weight_scale, x_scale, x_zero_point, bias=None,
                out_dtype=torch.float16, config=-1):
    """Int8 x packed-int4 linear; see :func:`quant.kernels.reference.w4a8_linear`."""
    return torch.ops.mixdq.w4a8_linear(x, weight, weight_sum, weight_scale, x_scale,
                                       x_zero_point, bias, out_dtype, config)


def w8a8_conv2d(x, weight, weight_sum, tap_sum, weight_scale, x_scale, x_zero_point, bias=None,
                stride=(1, 1), padding=(0, 0), dilation=(1, 1), out_dtype=torch.float16,
                config=-1):
    """Int8 NHWC convolution; see :func:`quant.kernels.reference.w8a8_conv2d`."""
    return torch.ops.mixdq.w8a8_conv2d(x, weight, weight_sum, tap_sum, weight_scale, x_scale,
                                       x_zero_point, bias, list(stride), list(padding),
                                       list(dilation), out_dtype, config)


def w4a8_conv2d(x, weight, weight_sum, tap_sum, weight_scale, x_scale, x_zero_point, bias=None,
                kernel_size=(3, 3), stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                out_dtype=torch.float16, config=-1):
    """Int8 x packed-int4 NHWC convolution; see :func:`quant.kernels.reference.w4a8_conv2d`."""
    return torch.ops.mixdq.w4a8_conv2d(x, weight, weight_sum, tap_sum, weight_scale, x_scale,
                                       x_zero_point, bias, list(kernel_size), list(stride),
                                       list(padding), list(dilation), out_dtype, config)


def dequantize_acc(acc, weight_sum, weight_scale, x_scale, x_zero_point, bias=None,
                   out_dtype=torch.float16):
    """The fused epilogue over a raw int32 accumulator (after ``torch._int_mm``)."""
    return torch.ops.mixdq.dequantize_acc(acc, weight_sum, weight_scale, x_scale, x_zero_point,
                                          bias, out_dtype)
