"""Run the CUDA kernels' source on the CPU (``kernels/emu``), for tests without a GPU.

The kernel bodies in ``kernels/gemm.cuh`` and ``kernels/elementwise.cuh`` are templates over the
few GPU instructions they use; ``kernels/emu/host_arch.h`` implements those instructions on the
CPU (one thread per GPU thread, warp collectives through barriers, cp.async landing only at its
wait). This module compiles that emulator with the host C++ compiler and calls it through
ctypes with the same arguments as the ``mixdq::`` ops, so tests can compare the kernel source
with the torch reference bit for bit. Source checkouts only (it needs ``kernels/``).
"""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
from pathlib import Path

import torch

from ..errors import MixDQError
from .layout import round_up
from .loader import kernel_sources

CXX_FLAGS = ("-std=c++17", "-O1", "-shared", "-fPIC", "-pthread", "-ffp-contract=off",
             "-fno-fast-math", "-Wall", "-Wno-unknown-pragmas")


class _GemmParams(ctypes.Structure):
    """Mirror of ``mixdq::GemmParams`` (kernels/params.h), field for field."""

    _fields_ = ([("a", ctypes.c_void_p), ("b", ctypes.c_void_p)]
                + [(f, ctypes.c_int) for f in ("M", "N", "K", "ldb", "batch", "H", "W", "C",
                                                "OH", "OW", "KH", "KW", "SH", "SW", "PH", "PW",
                                                "DH", "DW")]
                + [("wsum", ctypes.c_void_p), ("tap_sum", ctypes.c_void_p),
                   ("wscale", ctypes.c_void_p), ("bias", ctypes.c_void_p),
                   ("x_scale", ctypes.c_float), ("zp", ctypes.c_int),
                   ("out", ctypes.c_void_p), ("ldo", ctypes.c_int)])


def _emu_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "kernels"


def _source_hash() -> str:
    digest = hashlib.sha256(" ".join(CXX_FLAGS).encode())
    root = _emu_dir()
    for path in sorted(list(root.glob("*.cuh")) + list(root.glob("*.h")) +
                       list((root / "emu").glob("*"))):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def build_emulator(cache_dir: str | Path, cxx: str | None = None) -> "Emulator":
    """Compile (or reuse from ``cache_dir``) the emulator library and load it.

    Raises:
        MixDQError: no kernel sources or no C++ compiler; the compiler's message on failure.
    """
    if not kernel_sources():
        raise MixDQError("the kernel sources (kernels/) are not beside the package")
    cxx = cxx or shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        raise MixDQError("no C++ compiler (g++) to build the kernel emulator")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    lib = cache_dir / f"mixdq_emu_{_source_hash()}.so"
    if not lib.exists():
        tmp = lib.with_suffix(".tmp.so")
        source = str(_emu_dir() / "emu" / "emu.cpp")
        proc = subprocess.run([cxx, *CXX_FLAGS, "-o", str(tmp), source],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise MixDQError(f"building the kernel emulator failed:\n{proc.stderr[-4000:]}")
        tmp.replace(lib)
    return Emulator(ctypes.CDLL(str(lib)))


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _out_kind(dtype: torch.dtype) -> int:
    if dtype == torch.float32:
        return 0
    if dtype == torch.int32:
        return 1
    raise MixDQError(f"the emulator writes float32 or int32, not {dtype}")


class Emulator:
    """The emulated kernels, with the arguments of the ``mixdq::`` ops (CPU tensors)."""

    def __init__(self, lib: ctypes.CDLL):
        self._lib = lib
        lib.mixdq_emu_gemm.restype = ctypes.c_int
        lib.mixdq_emu_gemm.argtypes = [ctypes.c_int] * 4 + [
            ctypes.POINTER(_GemmParams), ctypes.c_longlong, ctypes.c_longlong, ctypes.c_longlong,
            ctypes.c_char_p, ctypes.c_int]
        lib.mixdq_emu_quantize.restype = ctypes.c_int
        lib.mixdq_emu_quantize.argtypes = [
            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_longlong, ctypes.c_int, ctypes.c_int,
            ctypes.c_float, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
            ctypes.c_char_p, ctypes.c_int]
        lib.mixdq_emu_dequantize.restype = ctypes.c_int
        lib.mixdq_emu_dequantize.argtypes = [
            ctypes.c_void_p, ctypes.c_longlong, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
            ctypes.c_void_p, ctypes.c_float, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
            ctypes.c_int, ctypes.c_char_p, ctypes.c_int]

    @staticmethod
    def _check(rc: int, err: ctypes.Array) -> None:
        if rc != 0:
            raise MixDQError(f"emulated kernel fault: {err.value.decode()}")

    def _gemm(self, p: _GemmParams, keep: list, conv: bool, int4: bool, out: torch.Tensor,
              config: int) -> torch.Tensor:
        err = ctypes.create_string_buffer(512)
        a, b = keep[0], keep[1]
        rc = self._lib.mixdq_emu_gemm(int(conv), int(int4), _out_kind(out.dtype), config,
                                      ctypes.byref(p), a.numel(), b.numel(),
                                      out.numel() * out.element_size(), err, len(err))
        self._check(rc, err)
        return out

    def _params(self, x, weight, weight_sum, weight_scale, x_scale, x_zero_point, bias, out,
                m, n, k, ldb):
        p = _GemmParams()
        p.a, p.b = _ptr(x), _ptr(weight)
        p.M, p.N, p.K, p.ldb = m, n, k, ldb
        p.wsum, p.wscale, p.bias = _ptr(weight_sum), _ptr(weight_scale), _ptr(bias)
        p.x_scale, p.zp = x_scale, x_zero_point
        p.out, p.ldo = _ptr(out), n
        return p

    def linear(self, x, weight, weight_sum, weight_scale, x_scale, x_zero_point, bias, out_dtype,
               config: int, int4: bool) -> torch.Tensor:
        """Emulated ``w8a8_linear`` / ``w4a8_linear`` (``int4``) with tile shape ``config``."""
        k, n = x.shape[-1], weight.shape[0]
        if k % 16:
            raise MixDQError(f"K = {k} is not a multiple of 16")
        x = x.contiguous()
        out = torch.empty(*x.shape[:-1], n, dtype=out_dtype)
        ldb = round_up(k, 32) // 2 if int4 else k
        p = self._params(x, weight, weight_sum, weight_scale, x_scale, x_zero_point, bias, out,
                         x.numel() // k, n, k, ldb)
        return self._gemm(p, [x, weight], False, int4, out, config)

    def conv2d(self, x, weight, weight_sum, tap_sum, weight_scale, x_scale, x_zero_point, bias,
               kernel_size, stride, padding, dilation, out_dtype, config: int,
               int4: bool) -> torch.Tensor:
        """Emulated ``w8a8_conv2d`` / ``w4a8_conv2d`` on an NHWC int8 image."""
        b, h, w, c = x.shape
        kh, kw = kernel_size
        oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
        ow = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
        n, k = weight.shape[0], kh * kw * c
        if c % 16:
            raise MixDQError(f"C = {c} is not a multiple of 16")
        x = x.contiguous()
        out = torch.empty(b, oh, ow, n, dtype=out_dtype)
        p = self._params(x, weight, weight_sum, weight_scale, x_scale, x_zero_point, bias, out,
                         b * oh * ow, n, k, round_up(k, 32) // 2 if int4 else k)
        p.tap_sum = _ptr(tap_sum)
        p.batch, p.H, p.W, p.C, p.OH, p.OW, p.KH, p.KW = b, h, w, c, oh, ow, kh, kw
        p.SH, p.SW = stride
        p.PH, p.PW = padding
        p.DH, p.DW = dilation
        return self._gemm(p, [x, weight], True, int4, out, config)

    def quantize(self, x: torch.Tensor, scale: float, zero_point: int, bits: int, pad_to: int,
                 vec: bool, nthreads: int) -> torch.Tensor:
        """Emulated ``quantize_act`` on float32 input over ``nthreads`` threads."""
        x = x.contiguous().float()
        k = x.shape[-1]
        kp = round_up(k, pad_to)
        out = torch.empty(*x.shape[:-1], kp, dtype=torch.int8)
        err = ctypes.create_string_buffer(512)
        qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        rc = self._lib.mixdq_emu_quantize(_ptr(x), _ptr(out), x.numel() // max(k, 1), k, kp,
                                          scale, zero_point, qmin, qmax, int(vec), nthreads,
                                          err, len(err))
        self._check(rc, err)
        return out

    def dequantize(self, acc, weight_sum, weight_scale, x_scale, x_zero_point, bias, out_dtype,
                   nthreads: int = 64) -> torch.Tensor:
        """Emulated ``dequantize_acc`` (float32 or int32 output)."""
        acc = acc.contiguous()
        n = acc.shape[-1]
        out = torch.empty(acc.shape, dtype=out_dtype)
        err = ctypes.create_string_buffer(512)
        rc = self._lib.mixdq_emu_dequantize(_ptr(acc), acc.numel() // n, n, _ptr(weight_sum),
                                            _ptr(weight_scale), _ptr(bias), x_scale,
                                            x_zero_point, _out_kind(out_dtype), _ptr(out),
                                            nthreads, err, len(err))
        self._check(rc, err)
        return out
