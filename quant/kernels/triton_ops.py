"""Triton backend of the integer layers: one GEMM kernel for linear and NHWC conv, int8 or
packed-int4 weights, int8 or float (quantized in the prologue) input, and the fused epilogue.

Ops (``torch.ops.mixdq.*``, defined here with fake implementations for ``torch.compile``):

- ``triton_quantize_act(x, scale, zero_point, bits, pad_to)``: as ``mixdq::quantize_act``;
- ``triton_linear(x, weight, weight_sum, weight_scale, x_scale, x_zero_point, bias, out_dtype,
  int4, bits)``: ``x`` int8 ``[..., K]`` as ``mixdq::w8a8_linear`` / ``w4a8_linear``, or ``x``
  float (fused quantize: equal to ``quantize_act`` followed by the GEMM, one kernel);
- ``triton_conv2d(x, weight, weight_sum, tap_sum, weight_scale, x_scale, x_zero_point, bias,
  kernel_size, stride, padding, dilation, out_dtype, int4, bits)``: NHWC implicit GEMM with the
  in-bounds zero-point correction; ``weight`` is the 2-D ``[N, KH*KW*C]`` (int8) or packed int4.

Arithmetic contract (bit for bit with :mod:`quant.kernels.reference`):

- quantize: ``div_rn(x, scale)`` (correctly rounded; Triton's ``/`` is approximate on GPU),
  round half to even by adding and subtracting 1.5 * 2^23 (exact for |q| < 2^22; larger values
  are clamped first, which the final clamp to the int8 range makes harmless), ``+ zp``, clamp,
  NaN -> qmin;
- GEMM: ``tl.dot`` int8 x int8 -> int32 (exact), ``v = acc - zp * wsum`` in int32 (for convs the
  per-tap sums of the taps inside the image);
- epilogue: ``float(v) * (x_scale * w_scale[n]) + bias[n]`` in float32, one rounding each, then
  one rounding to the output dtype. Every launch passes ``enable_fp_fusion=False`` so neither
  LLVM nor ptxas contracts the multiply-add into an FMA (PTX ``mul.rn``/``add.rn``).

Tile configurations: on a GPU each (kernel variant, N, K, M bucket, device) is tuned once by
timing a few candidates, and the winner is kept in a JSON cache (``MIXDQ_TRITON_CACHE`` or
``~/.cache/mixdq/triton_tuning.json``); Triton's own cache keeps the compiled binaries.
``MIXDQ_TRITON_TUNE=0`` uses one fixed configuration instead. Under the interpreter
(``TRITON_INTERPRET=1``, CPU tests) one small configuration is used.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import torch
import triton
import triton.language as tl

from ..errors import MixDQError
from .layout import round_up

# 1.5 * 2^23: (x + M) - M rounds a float32 |x| < 2^22 to an integer, half to even.
ROUND_MAGIC = tl.constexpr(12582912.0)
ROUND_LIMIT = tl.constexpr(4194304.0)  # 2^22


def interpreting() -> bool:
    """Whether Triton runs its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _quantize(x, scale, zp, qmin, qmax):
    """float -> int8 values (as int8), exactly as ``reference.quantize_act``."""
    q = tl.math.div_rn(x.to(tl.float32), scale)
    nan = q != q  # noqa: PLR0124  (NaN test)
    q = tl.minimum(tl.maximum(q, -ROUND_LIMIT), ROUND_LIMIT)
    q = (q + ROUND_MAGIC) - ROUND_MAGIC
    lo = qmin + 0.0  # the integer arguments may arrive as constexprs (Triton specialises 1)
    q = q + zp
    q = tl.minimum(tl.maximum(q, lo), qmax + 0.0)
    q = tl.where(nan, lo, q)
    return q.to(tl.int8)


@triton.jit
def _quantize_kernel(x_ptr, out_ptr, rows, cols, cols_out, sxr, scale, zp, qmin, qmax,
                     BR: tl.constexpr, BC: tl.constexpr):
    pid_r = tl.program_id(0)
    pid_c = tl.program_id(1)
    rr = pid_r * BR + tl.arange(0, BR)
    rc = pid_c * BC + tl.arange(0, BC)
    r64 = rr.to(tl.int64)
    row_ok = rr < rows
    inside = row_ok[:, None] & (rc < cols)[None, :]
    x = tl.load(x_ptr + r64[:, None] * sxr + rc[None, :], mask=inside, other=0.0)
    q = _quantize(x, scale, zp, qmin, qmax)
    q = tl.where(inside, q, 0)  # the padded columns hold 0, as in the reference
    tl.store(out_ptr + r64[:, None] * cols_out + rc[None, :], q,
             mask=row_ok[:, None] & (rc < cols_out)[None, :])


@triton.jit
def _gemm_kernel(
        x_ptr, w_ptr, wsum_ptr, tap_ptr, ws_ptr, bias_ptr, out_ptr,
        M, N, K, KX, sxm, sxk, swn, som,
        x_scale, x_zp, qmin, qmax,
        H, W, CX, CW, OH, OW, sxb, sxh, sxw, sxc,
        st_h, st_w, pd_h, pd_w, dl_h, dl_w,
        KH: tl.constexpr, KW: tl.constexpr, CONV: tl.constexpr, W_INT4: tl.constexpr,
        A_FLOAT: tl.constexpr, HAS_BIAS: tl.constexpr, OUT_INT32: tl.constexpr,
        BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr):
    """out[m, n] = epilogue(sum_k A[m, k] * W[n, k]); A is the input (linear: rows of ``x``;
    conv: the implicit im2col of the NHWC image, k in (kh, kw, c) order over CW channels)."""
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BM)
    num_n = tl.cdiv(N, BN)
    per_group = GROUP_M * num_n
    first_m = (pid // per_group) * GROUP_M
    group_rows = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_rows
    pid_n = (pid % per_group) // group_rows

    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    m_ok = rm < M
    n_ok = rn < N
    rm64 = rm.to(tl.int64)
    rn64 = rn.to(tl.int64)
    if CONV:
        ow = rm % OW
        oh = (rm // OW) % OH
        img = (rm // OW) // OH
        ih0 = oh * st_h - pd_h
        iw0 = ow * st_w - pd_w
        x_row = img.to(tl.int64) * sxb
    else:
        x_row = rm64 * sxm

    acc = tl.zeros((BM, BN), dtype=tl.int32)
    for k0 in range(0, K, BK):
        rk = k0 + tl.arange(0, BK)
        k_ok = rk < K
        if CONV:
            c = rk % CW
            tap = rk // CW
            ih = ih0[:, None] + (tap // KW)[None, :] * dl_h
            iw = iw0[:, None] + (tap % KW)[None, :] * dl_w
            a_mask = (m_ok[:, None] & (k_ok & (c < CX))[None, :]
                      & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W))
            a_ptrs = (x_ptr + x_row[:, None] + ih.to(tl.int64) * sxh + iw.to(tl.int64) * sxw
                      + c[None, :].to(tl.int64) * sxc)
        else:
            a_mask = m_ok[:, None] & (rk < KX)[None, :]
            a_ptrs = x_ptr + x_row[:, None] + rk[None, :].to(tl.int64) * sxk
        if A_FLOAT:
            xf = tl.load(a_ptrs, mask=a_mask, other=0.0)
            a = tl.where(a_mask, _quantize(xf, x_scale, x_zp, qmin, qmax), 0).to(tl.int8)
        else:
            a = tl.load(a_ptrs, mask=a_mask, other=0)
        w_mask = k_ok[:, None] & n_ok[None, :]
        if W_INT4:
            # per 32 k: 16 bytes, byte j = k j (low nibble) | k 16 + j (high nibble)
            byte = (rk // 32) * 16 + (rk % 16)
            shift = ((rk // 16) % 2) * 4
            wb = tl.load(w_ptr + rn64[None, :] * swn + byte[:, None], mask=w_mask, other=0)
            u = (wb.to(tl.int32) >> shift[:, None]) & 0xF
            b = ((u ^ 8) - 8).to(tl.int8)
        else:
            b = tl.load(w_ptr + rn64[None, :] * swn + rk[:, None], mask=w_mask, other=0)
        acc = tl.dot(a, b, acc, out_dtype=tl.int32)

    if CONV:
        wsum = tl.zeros((BM, BN), dtype=tl.int32)
        for t in tl.static_range(KH * KW):
            ih = ih0 + (t // KW) * dl_h
            iw = iw0 + (t % KW) * dl_w
            inside = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            ts = tl.load(tap_ptr + rn64 * (KH * KW) + t, mask=n_ok, other=0)
            wsum += tl.where(inside[:, None], ts[None, :], 0)
        v = acc - x_zp * wsum
    else:
        ws = tl.load(wsum_ptr + rn, mask=n_ok, other=0)
        v = acc - x_zp * ws[None, :]
    out_ptrs = out_ptr + rm64[:, None] * som + rn[None, :]
    out_mask = m_ok[:, None] & n_ok[None, :]
    if OUT_INT32:
        tl.store(out_ptrs, v, mask=out_mask)
    else:
        s = x_scale * tl.load(ws_ptr + rn, mask=n_ok, other=0.0)
        y = v.to(tl.float32) * s[None, :]
        if HAS_BIAS:
            y = y + tl.load(bias_ptr + rn, mask=n_ok, other=0.0)[None, :]
        tl.store(out_ptrs, y.to(out_ptr.dtype.element_ty), mask=out_mask)


# --------------------------------------------------------------------------------------------
# tile configurations and their tuning cache


class TileConfig(tuple):
    """``(BM, BN, BK, GROUP_M, num_warps, num_stages)``."""

    __slots__ = ()

    def __new__(cls, bm, bn, bk, group_m, num_warps, num_stages):
        return super().__new__(cls, (bm, bn, bk, group_m, num_warps, num_stages))


# Hopper/Ampere candidates (int8: BK = 128 bytes per row and stage); small-M shapes want many
# CTAs, large ones big tiles. The interpreter runs one small tile (exercises the tails).
# Each candidate is one more Triton compile per kernel variant (~1-2 s), so the list is short.
GPU_CONFIGS = (
    TileConfig(128, 256, 128, 8, 8, 3),
    TileConfig(128, 128, 128, 8, 8, 4),
    TileConfig(64, 128, 128, 8, 4, 4),
    TileConfig(64, 64, 128, 8, 4, 5),
)
# MIXDQ_TRITON_TUNE=0: this one config, no timing (the GPU test run: many variants, tiny shapes)
UNTUNED_CONFIG = TileConfig(64, 64, 64, 8, 4, 3)
INTERPRETER_CONFIG = TileConfig(32, 32, 32, 2, 4, 1)


def _cache_path() -> Path:
    env = os.environ.get("MIXDQ_TRITON_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "mixdq" / "triton_tuning.json"


class Tuner:
    """Chooses a tile configuration per problem key by timing the candidates once; keeps the
    winners in memory and in a JSON file (written atomically after each new entry).

    Args:
        path: the cache file; ``None`` keeps the choices in memory only.
        timer: ``fn -> seconds`` (default ``triton.testing.do_bench``, milliseconds, on GPU).
        configs: the candidates.
    """

    def __init__(self, path: Path | None = None, timer: Callable | None = None,
                 configs=GPU_CONFIGS):
        self.path = path
        self.timer = timer
        self.configs = tuple(configs)
        self.tuned = 0  # how many keys were timed (not loaded) by this tuner
        self._lock = threading.Lock()
        self._table: dict[str, list] = {}
        if path is not None and path.exists():
            try:
                self._table = json.loads(path.read_text())
            except (OSError, ValueError):
                self._table = {}  # a damaged cache is rebuilt, never trusted

    def lookup(self, key: str) -> TileConfig | None:
        entry = self._table.get(key)
        return TileConfig(*entry) if entry is not None and len(entry) == 6 else None

    def choose(self, key: str, launch: Callable[[TileConfig], None]) -> TileConfig:
        """The cached config for ``key``, or the fastest candidate (timed now, then cached)."""
        found = self.lookup(key)
        if found is not None:
            return found
        timer = self.timer or _do_bench
        best, best_t = None, float("inf")
        for cfg in self.configs:
            try:
                t = timer(lambda cfg=cfg: launch(cfg))
            except Exception as e:
                if "OutOfResources" in type(e).__name__ or "out of resource" in str(e):
                    continue
                raise
            if t < best_t:
                best, best_t = cfg, t
        if best is None:
            raise MixDQError(f"no Triton tile configuration fits problem {key}")
        with self._lock:
            self._table[key] = list(best)
            self.tuned += 1
            if self.path is not None:
                from ..utils.io import write_json

                try:
                    write_json(self.path, self._table)
                except OSError:
                    pass  # an unwritable cache only costs tuning again next time
        return best


def _do_bench(fn) -> float:
    return triton.testing.do_bench(fn, warmup=5, rep=20)


_TUNER: Tuner | None = None


def tuner() -> Tuner:
    """The process-wide tuner (cache file from ``MIXDQ_TRITON_CACHE`` or the home folder)."""
    global _TUNER
    if _TUNER is None:
        _TUNER = Tuner(_cache_path())
    return _TUNER


def set_tuner(t: Tuner | None) -> None:
    """Replace the process-wide tuner (tests; a tuner with another cache file)."""
    global _TUNER
    _TUNER = t


def _m_bucket(m: int) -> int:
    return 1 << max(4, (m - 1).bit_length())


def _device_name(t: torch.Tensor) -> str:
    return _cuda_name(t.device.index if t.device.index is not None else
                      torch.cuda.current_device()) if t.is_cuda else "interpreter"


@functools.lru_cache(maxsize=None)
def _cuda_name(index: int) -> str:
    return torch.cuda.get_device_name(index).replace(" ", "_")


# --------------------------------------------------------------------------------------------
# launchers


def _check_device(x: torch.Tensor) -> None:
    if not x.is_cuda and not interpreting():
        raise MixDQError("the Triton backend runs on CUDA tensors (or under TRITON_INTERPRET=1); "
                         f"got a {x.device.type} tensor")


def _qrange(bits: int) -> tuple[int, int]:
    if not 2 <= bits <= 8:
        raise MixDQError(f"activation bits {bits} outside 2..8")
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def _launch_opts(cfg: TileConfig) -> dict:
    if interpreting():
        return {}
    return {"num_warps": cfg[4], "num_stages": cfg[5], "enable_fp_fusion": False}


def _output(out, shape, dtype, device):
    if out is None:
        return torch.empty(shape, dtype=dtype, device=device)
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype or not out.is_contiguous():
        raise MixDQError(f"out must be a contiguous {dtype} tensor of shape {tuple(shape)}")
    return out


def quantize_act_impl(x: torch.Tensor, scale: float, zero_point: int, bits: int,
                      pad_to: int = 1, out: torch.Tensor | None = None) -> torch.Tensor:
    """Launch the quantize kernel (see the module docstring); ``out`` for the bounds tests."""
    _check_device(x)
    qmin, qmax = _qrange(bits)
    cols = x.shape[-1]
    cols_out = round_up(cols, pad_to)
    x2 = x.reshape(-1, cols)
    if x2.numel() and x2.stride(-1) != 1:
        x2 = x2.contiguous()
    rows = x2.shape[0]
    out = _output(out, tuple(x.shape[:-1]) + (cols_out,), torch.int8, x.device)
    if rows and cols_out:
        br, bc = (16, 32) if interpreting() else (8, 256)
        grid = (triton.cdiv(rows, br), triton.cdiv(cols_out, bc))
        opts = {} if interpreting() else {"num_warps": 4, "enable_fp_fusion": False}
        _quantize_kernel[grid](x2, out, rows, cols, cols_out, x2.stride(0), scale, zero_point,
                               qmin, qmax, BR=br, BC=bc, **opts)
    return out


def _gemm(x, weight, weight_sum, tap_sum, weight_scale, x_scale, x_zero_point, bias, out_dtype,
          int4, bits, m, n, k, kx, x_strides, conv, out_shape, key, out=None):
    _check_device(x)
    qmin, qmax = _qrange(bits)
    a_float = x.dtype.is_floating_point
    if not a_float and x.dtype != torch.int8:
        raise MixDQError(f"Triton GEMM input must be int8 or float, got {x.dtype}")
    if int4 and weight.dtype != torch.uint8:
        raise MixDQError(f"packed int4 weight must be uint8, got {weight.dtype}")
    if not int4 and weight.dtype != torch.int8:
        raise MixDQError(f"int8 weight expected, got {weight.dtype}")
    if weight.stride(-1) != 1:
        weight = weight.contiguous()
    out = _output(out, out_shape, out_dtype, x.device)
    if m == 0 or n == 0:
        return out
    geo = conv or {"H": 1, "W": 1, "CX": 1, "CW": 1, "OH": 1, "OW": 1, "sxb": 0, "sxh": 0,
                   "sxw": 0, "sxc": 0, "st_h": 1, "st_w": 1, "pd_h": 0, "pd_w": 0, "dl_h": 1,
                   "dl_w": 1, "KH": 1, "KW": 1}
    dummy = weight_sum  # never read when the flag says absent
    args = (x, weight, weight_sum, tap_sum if tap_sum is not None else dummy, weight_scale,
            bias if bias is not None else dummy, out, m, n, k, kx, x_strides[0], x_strides[1],
            weight.stride(0), out.stride(-2) if out.dim() > 1 else n,
            float(x_scale), int(x_zero_point), qmin, qmax,
            geo["H"], geo["W"], geo["CX"], geo["CW"], geo["OH"], geo["OW"], geo["sxb"],
            geo["sxh"], geo["sxw"], geo["sxc"], geo["st_h"], geo["st_w"], geo["pd_h"],
            geo["pd_w"], geo["dl_h"], geo["dl_w"])
    flags = {"KH": geo["KH"], "KW": geo["KW"], "CONV": conv is not None, "W_INT4": bool(int4),
             "A_FLOAT": a_float, "HAS_BIAS": bias is not None,
             "OUT_INT32": out_dtype == torch.int32}

    def launch(cfg: TileConfig):
        grid = (triton.cdiv(m, cfg[0]) * triton.cdiv(n, cfg[1]),)
        _gemm_kernel[grid](*args, **flags, BM=cfg[0], BN=cfg[1], BK=cfg[2], GROUP_M=cfg[3],
                           **_launch_opts(cfg))

    if interpreting():
        cfg = INTERPRETER_CONFIG
    elif os.environ.get("MIXDQ_TRITON_TUNE", "1") == "0":
        cfg = UNTUNED_CONFIG
    else:
        full_key = "|".join([_device_name(x), key, "f" if a_float else "i8",
                             "w4" if int4 else "w8", f"M{_m_bucket(m)}", f"N{n}", f"K{k}",
                             str(out_dtype).replace("torch.", "")])
        cfg = tuner().choose(full_key, launch)
    launch(cfg)
    return out


def linear_impl(x, weight, weight_sum, weight_scale, x_scale, x_zero_point, bias, out_dtype,
                int4, bits, out=None):
    """``x`` int8 or float ``[..., KX]`` x weight ``[N, K]`` (int8) / packed int4.

    Returns ``[..., N]``.
    """
    kx = x.shape[-1]
    x2 = x.reshape(-1, kx)
    if x2.numel() and x2.stride(-1) != 1:
        x2 = x2.contiguous()
    n = weight.shape[0]
    k = weight.shape[1] * 2 if int4 else weight.shape[1]
    if kx > k:
        raise MixDQError(f"input has {kx} features but the weight only {k}")
    if not int4 and kx != k and not x.dtype.is_floating_point:
        raise MixDQError(f"int8 input has {kx} features, the weight {k} (pad the input)")
    out_shape = tuple(x.shape[:-1]) + (n,)
    return _gemm(x2, weight, weight_sum, None, weight_scale, x_scale, x_zero_point, bias,
                 out_dtype, int4, bits, x2.shape[0], n, k, kx, (x2.stride(0), 1), None, out_shape,
                 "linear", out)


def conv2d_impl(x, weight, weight_sum, tap_sum, weight_scale, x_scale, x_zero_point, bias,
                kernel_size, stride, padding, dilation, out_dtype, int4, bits, out=None):
    """NHWC ``x`` ``[B, H, W, CX]`` (int8 or float, any strides) x ``weight`` ``[N, KH*KW*CW]``."""
    kh, kw = kernel_size
    b, h, w, cx = x.shape
    n = weight.shape[0]
    taps = kh * kw
    if tap_sum.shape != (n, taps):
        raise MixDQError(f"tap sums of shape {tuple(tap_sum.shape)}, expected {(n, taps)}")
    if int4:
        kw_total = weight.shape[1] * 2  # padded to 32; the true K is KH*KW*CW
        cw = round_up(cx, 16)
        if round_up(taps * cw, 32) != kw_total:
            raise MixDQError(f"packed int4 weight of {kw_total} k for {taps} taps x {cx} "
                             f"channels")
    else:
        if weight.shape[1] % taps:
            raise MixDQError(f"weight K {weight.shape[1]} is not a multiple of {taps} taps")
        cw = weight.shape[1] // taps
    if cx > cw:
        raise MixDQError(f"input has {cx} channels but the weight only {cw}")
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    sb, sh, sw, sc = x.stride()
    geo = {"H": h, "W": w, "CX": cx, "CW": cw, "OH": oh, "OW": ow, "sxb": sb, "sxh": sh,
           "sxw": sw, "sxc": sc, "st_h": stride[0], "st_w": stride[1], "pd_h": padding[0],
           "pd_w": padding[1], "dl_h": dilation[0], "dl_w": dilation[1], "KH": kh, "KW": kw}
    key = (f"conv{kh}x{kw}s{stride[0]}{stride[1]}p{padding[0]}{padding[1]}"
           f"d{dilation[0]}{dilation[1]}")
    return _gemm(x, weight, weight_sum, tap_sum, weight_scale, x_scale, x_zero_point, bias,
                 out_dtype, int4, bits, b * oh * ow, n, taps * cw, taps * cw, (0, 0), geo,
                 (b, oh, ow, n), key + f"H{h}W{w}", out)


# --------------------------------------------------------------------------------------------
# torch ops: opaque to torch.compile, with fake (shape-only) implementations

_PREFIX = "mixdq::triton_"


def _fake_quantize(x, scale, zero_point, bits, pad_to=1):
    shape = list(x.shape)
    shape[-1] = round_up(shape[-1], pad_to)
    return x.new_empty(shape, dtype=torch.int8)


def _fake_linear(x, weight, weight_sum, weight_scale, x_scale, x_zero_point, bias, out_dtype,
                 int4, bits):
    return x.new_empty(list(x.shape[:-1]) + [weight.shape[0]], dtype=out_dtype)


def _fake_conv(x, weight, weight_sum, tap_sum, weight_scale, x_scale, x_zero_point, bias,
               kernel_size, stride, padding, dilation, out_dtype, int4, bits):
    b, h, w, _ = x.shape
    oh = (h + 2 * padding[0] - dilation[0] * (kernel_size[0] - 1) - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - dilation[1] * (kernel_size[1] - 1) - 1) // stride[1] + 1
    return x.new_empty([b, oh, ow, weight.shape[0]], dtype=out_dtype)


def _define_ops():
    try:
        if torch.ops.mixdq.triton_linear.default is not None:  # defined (imported twice)
            return
    except (AttributeError, RuntimeError):
        pass

    @torch.library.custom_op(_PREFIX + "quantize_act", mutates_args=())
    def triton_quantize_act(x: torch.Tensor, scale: float, zero_point: int, bits: int,
                            pad_to: int = 1) -> torch.Tensor:
        return quantize_act_impl(x, scale, zero_point, bits, pad_to)

    @torch.library.custom_op(_PREFIX + "linear", mutates_args=())
    def triton_linear(x: torch.Tensor, weight: torch.Tensor, weight_sum: torch.Tensor,
                      weight_scale: torch.Tensor, x_scale: float, x_zero_point: int,
                      bias: torch.Tensor | None, out_dtype: torch.dtype, int4: bool,
                      bits: int) -> torch.Tensor:
        return linear_impl(x, weight, weight_sum, weight_scale, x_scale, x_zero_point, bias,
                           out_dtype, int4, bits)

    @torch.library.custom_op(_PREFIX + "conv2d", mutates_args=())
    def triton_conv2d(x: torch.Tensor, weight: torch.Tensor, weight_sum: torch.Tensor,
                      tap_sum: torch.Tensor, weight_scale: torch.Tensor, x_scale: float,
                      x_zero_point: int, bias: torch.Tensor | None, kernel_size: list[int],
                      stride: list[int], padding: list[int], dilation: list[int],
                      out_dtype: torch.dtype, int4: bool, bits: int) -> torch.Tensor:
        return conv2d_impl(x, weight, weight_sum, tap_sum, weight_scale, x_scale, x_zero_point,
                           bias, kernel_size, stride, padding, dilation, out_dtype, int4, bits)

    triton_quantize_act.register_fake(_fake_quantize)
    triton_linear.register_fake(_fake_linear)
    triton_conv2d.register_fake(_fake_conv)


_define_ops()


def available(device: torch.device | str = "cuda") -> bool:
    """Whether the Triton backend can run on ``device`` (a CUDA device, or the interpreter)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and not interpreting()
    return interpreting()
