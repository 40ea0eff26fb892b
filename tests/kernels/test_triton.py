"""The Triton kernels against the exact torch references, bit for bit.

Without a GPU they run in Triton's interpreter (``TRITON_INTERPRET=1``, set by the conftest);
with one, on the GPU. Shapes are small and have tails (M, N, K not multiples of the tile). The
interpreter does not fault on out-of-bounds accesses, so the bounds tests put every operand in
the middle of a guard-filled buffer: a stray read changes the result, a stray write a guard.
"""

import json

import pytest
import torch

triton = pytest.importorskip("triton")
pytest.importorskip("numpy")

from quant.errors import MixDQError  # noqa: E402
from quant.kernels import reference as ref  # noqa: E402
from quant.kernels import triton_ops as tt  # noqa: E402
from quant.kernels.layout import pack_int4, tap_sums, weight_sums  # noqa: E402

DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Identical values and dtypes, compared as raw bits (so -0.0 != +0.0, NaN == NaN)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.is_floating_point:
        view = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        a, b = a.contiguous().view(view), b.contiguous().view(view)
    return torch.equal(a.cpu(), b.cpu())


def _operands(n, k, int4, seed, bias=True):
    g = torch.Generator().manual_seed(seed)
    lo, hi = (-8, 8) if int4 else (-128, 128)
    w = torch.randint(lo, hi, (n, k), generator=g, dtype=torch.int8)
    scale = torch.rand(n, generator=g) * 1e-2 + 1e-4
    b = torch.randn(n, generator=g) if bias else None
    return w, scale, b


# ------------------------------------------------------------------------------ quantize

def test_quantize_specials_and_ties():
    # halves (ties to even), exact integers, NaN, infinities, huge values, -0.0
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.0, float("nan"), float("inf"),
                      -float("inf"), 1e30, -1e30, -0.0, 126.5, 127.5, -128.5, 5e6, -5e6,
                      4194303.5, 0.49999997], dtype=torch.float32).to(DEV)
    for bits, zp in ((8, 0), (8, -3), (4, 2), (6, -32)):
        got = tt.quantize_act_impl(x, 1.0, zp, bits, 1)
        assert _bits_equal(got, ref.quantize_act(x, 1.0, zp, bits, 1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape,pad_to", [((37, 40), 16), ((3, 5, 19), 1), ((1, 33), 32)])
def test_quantize_random(dtype, shape, pad_to):
    g = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(shape, generator=g) * 4).to(dtype).to(DEV)
    scale = 0.0371  # not a power of two: the division rounds
    got = tt.quantize_act_impl(x, scale, 5, 8, pad_to)
    want = ref.quantize_act(x, scale, 5, 8, pad_to)
    assert _bits_equal(got, want)


def test_quantize_division_is_correctly_rounded():
    """Inputs on which a reciprocal multiply rounds differently: the kernel must not."""
    s = torch.tensor(0.1, dtype=torch.float32)
    k = torch.arange(-1270, 1270, dtype=torch.float32) + 0.5
    x = torch.cat([torch.nextafter(k * s, k * s + d) for d in (-1, 0, 1)] + [k * s])
    x = x[torch.round(x * (1 / s)) != torch.round(x / s)]  # where a reciprocal multiply errs
    assert x.numel() > 10
    got = tt.quantize_act_impl(x.to(DEV), 0.1, 0, 8, 1)
    assert _bits_equal(got, ref.quantize_act(x.to(DEV), 0.1, 0, 8, 1))


# ------------------------------------------------------------------------------ linear

LINEAR_SHAPES = [(1, 16, 16), (37, 45, 48), (70, 33, 80), (5, 64, 96)]


@pytest.mark.parametrize("m,n,k", LINEAR_SHAPES)
@pytest.mark.parametrize("int4", [False, True])
@pytest.mark.parametrize("fused", [False, True])
def test_linear_bit_exact(m, n, k, int4, fused):
    w, scale, bias = _operands(n, k, int4, m * n + k)
    g = torch.Generator().manual_seed(k)
    xf = (torch.randn(m, k, generator=g) * 3).to(DEV)
    x_scale, zp, bits = 0.0413, -7, 8
    xq = ref.quantize_act(xf, x_scale, zp, bits, 16)
    wt = (pack_int4(w) if int4 else w).to(DEV)
    args = (weight_sums(w).to(DEV), scale.to(DEV), x_scale, zp)
    refop = ref.w4a8_linear if int4 else ref.w8a8_linear
    inp = xf if fused else xq
    for out_dtype in (torch.int32, torch.float32, torch.float16):
        for b in (bias, None):
            bb = None if b is None else b.to(DEV)
            want = refop(xq, wt, *args, bb, out_dtype)
            got = tt.linear_impl(inp, wt, *args, bb, out_dtype, int4, bits)
            assert _bits_equal(got, want), (out_dtype, b is None)


def test_linear_3d_input_and_low_bits():
    w, scale, bias = _operands(24, 40, False, 3)
    x = torch.randn(2, 9, 40).to(DEV)
    for bits, zp in ((4, -2), (6, 11)):
        xq = ref.quantize_act(x, 0.3, zp, bits, 16)
        w48 = torch.nn.functional.pad(w, (0, 8)).to(DEV)
        args = (w48, weight_sums(w).to(DEV), scale.to(DEV), 0.3, zp, bias.to(DEV))
        want = ref.w8a8_linear(xq, *args, torch.float16)
        assert _bits_equal(tt.linear_impl(xq, *args, torch.float16, False, bits), want)
        # fused: the float input of 40 features, the weight padded to 48
        assert _bits_equal(tt.linear_impl(x, *args, torch.float16, False, bits), want)


# ------------------------------------------------------------------------------ conv

CONVS = [  # (B, H, W, C, N, kernel, stride, padding, dilation)
    (2, 9, 7, 16, 20, (3, 3), (1, 1), (1, 1), (1, 1)),
    (1, 8, 8, 32, 19, (3, 3), (2, 2), (1, 1), (1, 1)),
    (1, 6, 5, 16, 33, (1, 1), (1, 1), (0, 0), (1, 1)),
    (1, 7, 9, 16, 8, (1, 3), (1, 2), (2, 0), (1, 1)),
    (1, 9, 9, 16, 12, (3, 3), (1, 1), (2, 2), (2, 2)),
]


def _geo_id(g):
    return f"{g[5][0]}x{g[5][1]}s{g[6][0]}p{g[7][0]}d{g[8][0]}"


@pytest.mark.parametrize("geo", CONVS, ids=_geo_id)
@pytest.mark.parametrize("int4", [False, True])
@pytest.mark.parametrize("fused", [False, True])
def test_conv_bit_exact(geo, int4, fused):
    b, h, w_, c, n, ks, st, pd, dl = geo
    g = torch.Generator().manual_seed(h * w_ + n)
    lo, hi = (-8, 8) if int4 else (-128, 128)
    wq = torch.randint(lo, hi, (n, ks[0], ks[1], c), generator=g, dtype=torch.int8)
    scale = torch.rand(n, generator=g) * 1e-2
    bias = torch.randn(n, generator=g)
    xf = torch.randn(b, h, w_, c, generator=g).to(DEV) * 2
    zp = 9
    xq = ref.quantize_act(xf, 0.05, zp, 8, 16)
    w2 = wq.reshape(n, -1)
    sums = (weight_sums(wq).to(DEV), tap_sums(wq).to(DEV), scale.to(DEV), 0.05, zp,
            bias.to(DEV))
    wt = (pack_int4(w2) if int4 else w2).to(DEV)
    for out_dtype in (torch.int32, torch.float16):
        if int4:
            want = ref.w4a8_conv2d(xq, wt, *sums, ks, st, pd, dl, out_dtype)
        else:
            want = ref.w8a8_conv2d(xq, wq.to(DEV), *sums, st, pd, dl, out_dtype)
        got = tt.conv2d_impl(xf if fused else xq, wt, *sums, ks, st, pd, dl, out_dtype, int4, 8)
        assert _bits_equal(got, want), out_dtype


def test_conv_fused_unpadded_channels_and_strided_input():
    """A float NCHW input (non-contiguous NHWC view) with 4 channels, the weight's padded to 16."""
    g = torch.Generator().manual_seed(4)
    wq = torch.randint(-128, 128, (10, 3, 3, 4), generator=g, dtype=torch.int8)
    w16 = torch.nn.functional.pad(wq, (0, 12))
    scale, bias = torch.rand(10, generator=g) * 1e-2, torch.randn(10, generator=g)
    x_nchw = torch.randn(2, 4, 6, 7, generator=g).to(DEV)
    x = x_nchw.permute(0, 2, 3, 1)  # strided NHWC view
    xq = ref.quantize_act(x, 0.02, -1, 8, 16)
    sums = (weight_sums(w16).to(DEV), tap_sums(w16).to(DEV), scale.to(DEV), 0.02, -1,
            bias.to(DEV))
    want = ref.w8a8_conv2d(xq, w16.to(DEV), *sums, (1, 1), (1, 1), (1, 1), torch.float16)
    got = tt.conv2d_impl(x, w16.reshape(10, -1).to(DEV), *sums, (3, 3), (1, 1), (1, 1), (1, 1),
                         torch.float16, False, 8)
    assert _bits_equal(got, want)


# ------------------------------------------------------------------------------ bounds

def _guarded(t: torch.Tensor, guard: int, fill):
    """``t``'s values in the middle of a buffer of ``guard`` extra elements on each side."""
    flat = t.contiguous().reshape(-1)
    buf = torch.full((flat.numel() + 2 * guard,), fill, dtype=t.dtype, device=t.device)
    buf[guard:guard + flat.numel()] = flat
    return buf, buf[guard:guard + flat.numel()].view(t.shape)


def _guard_intact(buf, n, guard, fill):
    g = torch.cat([buf[:guard], buf[guard + n:]])
    return _bits_equal(g, torch.full_like(g, fill))


GUARD = 4096


@pytest.mark.parametrize("int4", [False, True])
@pytest.mark.parametrize("fused", [False, True])
def test_linear_bounds(int4, fused):
    m, n, k = 37, 45, 48
    w, scale, bias = _operands(n, k, int4, 11)
    xf = torch.randn(m, k).to(DEV)
    xq = ref.quantize_act(xf, 0.05, 3, 8, 16)
    wt = pack_int4(w) if int4 else w
    want = (ref.w4a8_linear if int4 else ref.w8a8_linear)(
        xq, wt.to(DEV), weight_sums(w).to(DEV), scale.to(DEV), 0.05, 3, bias.to(DEV),
        torch.float32)
    # guards that change the result if read: large values and NaN
    _, xg = _guarded(xf if fused else xq, GUARD, float("nan") if fused else 127)
    _, wg = _guarded(wt.to(DEV), GUARD, 0x77 if int4 else 127)
    _, sg = _guarded(weight_sums(w).to(DEV), GUARD, 1 << 20)
    _, cg = _guarded(scale.to(DEV), GUARD, float("nan"))
    _, bg = _guarded(bias.to(DEV), GUARD, float("nan"))
    obuf, out = _guarded(torch.empty(m, n, device=DEV), GUARD, -7.0)
    got = tt.linear_impl(xg, wg, sg, cg, 0.05, 3, bg, torch.float32, int4, 8, out=out)
    assert got.data_ptr() == out.data_ptr()
    assert _bits_equal(got, want)
    assert _guard_intact(obuf, m * n, GUARD, -7.0)


@pytest.mark.parametrize("fused", [False, True])
def test_conv_bounds(fused):
    b, h, w_, c, n = 2, 5, 6, 16, 13
    g = torch.Generator().manual_seed(2)
    wq = torch.randint(-128, 128, (n, 3, 3, c), generator=g, dtype=torch.int8)
    scale, bias = torch.rand(n, generator=g) * 1e-2, torch.randn(n, generator=g)
    xf = torch.randn(b, h, w_, c, generator=g).to(DEV)
    xq = ref.quantize_act(xf, 0.05, -4, 8, 16)
    sums = [weight_sums(wq), tap_sums(wq), scale, bias]
    want = ref.w8a8_conv2d(xq, wq.to(DEV), *[t.to(DEV) for t in sums[:3]], 0.05, -4,
                           bias.to(DEV), (2, 1), (1, 1), (1, 1), torch.float16)
    _, xg = _guarded(xf if fused else xq, GUARD, float("nan") if fused else 127)
    _, wg = _guarded(wq.reshape(n, -1).to(DEV), GUARD, 127)
    _, sg = _guarded(weight_sums(wq).to(DEV), GUARD, 1 << 20)
    _, tg = _guarded(tap_sums(wq).to(DEV), GUARD, 1 << 20)
    _, cg = _guarded(scale.to(DEV), GUARD, float("nan"))
    _, bg = _guarded(bias.to(DEV), GUARD, float("nan"))
    oh, ow = 3, 6
    obuf, out = _guarded(torch.empty(b, oh, ow, n, dtype=torch.float16, device=DEV), GUARD, 3.0)
    got = tt.conv2d_impl(xg, wg, sg, tg, cg, 0.05, -4, bg, (3, 3), (2, 1), (1, 1), (1, 1),
                         torch.float16, False, 8, out=out)
    assert _bits_equal(got, want)
    assert _guard_intact(obuf, out.numel(), GUARD, 3.0)


def test_quantize_bounds():
    x = torch.randn(7, 19).to(DEV)
    _, xg = _guarded(x, GUARD, float("nan"))
    obuf, out = _guarded(torch.empty(7, 32, dtype=torch.int8, device=DEV), GUARD, 55)
    got = tt.quantize_act_impl(xg, 0.1, 0, 8, 32, out=out)
    assert _bits_equal(got, ref.quantize_act(x, 0.1, 0, 8, 32))
    assert _guard_intact(obuf, out.numel(), GUARD, 55)


# ------------------------------------------------------------------------------ errors, ops

def test_errors():
    w, scale, _ = _operands(8, 32, False, 1)
    x = torch.zeros(4, 48, dtype=torch.int8)
    with pytest.raises(MixDQError, match="features"):
        tt.linear_impl(x.to(DEV), w.to(DEV), weight_sums(w).to(DEV), scale.to(DEV), 0.1, 0,
                       None, torch.float16, False, 8)
    with pytest.raises(MixDQError, match="activation bits"):
        tt.quantize_act_impl(torch.zeros(2, 2, device=DEV), 0.1, 0, 9, 1)


def test_cpu_tensor_without_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(MixDQError, match="CUDA tensors"):
        tt.quantize_act_impl(torch.zeros(2, 2), 0.1, 0, 8, 1)


def test_ops_and_fake_impls():
    from torch._subclasses.fake_tensor import FakeTensorMode

    w, scale, bias = _operands(24, 48, True, 9)
    x = torch.randn(3, 5, 40).to(DEV)
    pw = pack_int4(w).to(DEV)
    args = (pw, weight_sums(w).to(DEV), scale.to(DEV), 0.1, 2, bias.to(DEV), torch.float16,
            True, 8)
    y = torch.ops.mixdq.triton_linear(x, *args)
    xq = torch.ops.mixdq.triton_quantize_act(x, 0.1, 2, 8, 16)
    assert _bits_equal(xq, ref.quantize_act(x, 0.1, 2, 8, 16))
    assert _bits_equal(y, ref.w4a8_linear(xq, *args[:-2]))
    with FakeTensorMode() as mode:
        fx = mode.from_tensor(x)
        fargs = tuple(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args)
        fy = torch.ops.mixdq.triton_linear(fx, *fargs)
        fq = torch.ops.mixdq.triton_quantize_act(fx, 0.1, 2, 8, 16)
        xi = mode.from_tensor(torch.zeros(1, 9, 9, 16, dtype=torch.int8, device=DEV))
        wc = mode.from_tensor(torch.zeros(6, 144, dtype=torch.int8, device=DEV))
        ts = mode.from_tensor(torch.zeros(6, 9, dtype=torch.int32, device=DEV))
        ws = mode.from_tensor(torch.zeros(6, dtype=torch.int32, device=DEV))
        sc = mode.from_tensor(torch.zeros(6, device=DEV))
        fc = torch.ops.mixdq.triton_conv2d(xi, wc, ws, ts, sc, 0.1, 0, None, [3, 3], [2, 2],
                                           [1, 1], [1, 1], torch.float16, False, 8)
    assert fy.shape == y.shape and fy.dtype == torch.float16
    assert fq.shape == (3, 5, 48) and fq.dtype == torch.int8
    assert fc.shape == (1, 5, 5, 6) and fc.dtype == torch.float16


# ------------------------------------------------------------------------------ tuning cache

def test_tuner_picks_fastest_and_caches(tmp_path):
    path = tmp_path / "tune.json"
    configs = tt.GPU_CONFIGS[:3]
    cost = {configs[0]: 3.0, configs[1]: 1.0, configs[2]: 2.0}
    calls = []

    def timer(fn):
        fn()
        return cost[calls[-1]]

    t = tt.Tuner(path, timer, configs)
    assert t.choose("k1", calls.append) == configs[1]
    assert len(calls) == 3 and t.tuned == 1
    assert json.loads(path.read_text()) == {"k1": list(configs[1])}
    t2 = tt.Tuner(path, lambda fn: pytest.fail("a cached key must not be timed"), configs)
    assert t2.choose("k1", calls.append) == configs[1] and t2.tuned == 0
    path.write_text("{not json")
    t3 = tt.Tuner(path, timer, configs)  # a damaged cache is ignored and rewritten
    assert t3.choose("k1", calls.append) == configs[1] and t3.tuned == 1
    assert json.loads(path.read_text())["k1"] == list(configs[1])


@pytest.mark.slow
@pytest.mark.parametrize("arch", [90, 80])
def test_compiles_for_gpu_without_one(arch):
    """Ahead-of-time compile for sm_90 / sm_80: int8 tensor-core MMA (wgmma on Hopper),
    cp.async pipelining, IEEE division where quantizing, no FMA (scripts/triton_sm90_check.py)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(root)
    proc = subprocess.run([sys.executable, str(root / "scripts" / "triton_sm90_check.py"),
                           "--arch", str(arch)], cwd=root, env=env, capture_output=True,
                          text=True, timeout=900, check=False)
    if proc.returncode == 2:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("ok   ") == 9 and "all checks passed" in proc.stdout
