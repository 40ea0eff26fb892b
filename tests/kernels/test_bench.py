"""The benchmark code: SDXL shapes on the meta device, and one pass of the per-shape benchmark
and the tables on CPU (the torch references timed by a CPU clock); the CUDA timings themselves
run in scripts/gpu_verify.sh."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from quant.kernels.bench import bench_shape, format_results
from quant.deploy_bench import UNetResult, format_unet_results
from quant.kernels.shapes import GemmShape, distinct_shapes, sdxl_unet_meta

ROOT = Path(__file__).resolve().parents[2]


def test_sdxl_shapes_512_batch1():
    shapes = distinct_shapes(sdxl_unet_meta(), 512, 1)
    assert sum(c for _, c in shapes) == 794
    top, count = shapes[0]
    assert (top.kind, top.M, top.K, top.N, count) == ("linear", 256, 1280, 1280, 372)
    kv = [s for s, _ in shapes if s.kind == "linear" and s.K == 2048]
    assert {s.M for s in kv} == {77}  # cross-attention K/V: the 77 text tokens
    conv_in = next(s for s, _ in shapes if s.kind == "conv2d" and s.C == 4)
    assert (conv_in.H, conv_in.W, conv_in.M, conv_in.K) == (64, 64, 4096, 36)


def _cpu_timer(fn):
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e6


@pytest.mark.parametrize("shape", [
    GemmShape("linear", 20, 24, 48),
    GemmShape("conv2d", 2 * 6 * 5, 16, 9 * 16, 2, 6, 5, 16, (3, 3), (1, 1), (1, 1)),
    GemmShape("conv2d", 30, 8, 4 * 9, 1, 6, 5, 4, (3, 3), (1, 1), (1, 1)),
    GemmShape("conv2d", 30, 16, 32, 1, 6, 5, 32, (1, 1), (1, 1), (0, 0)),
])
def test_bench_shape_runs_on_references(shape):
    import importlib.util

    r = bench_shape(shape, 3, 64, 1, timer=_cpu_timer, device="cpu")
    assert r.fp16 > 0 and r.w8a8 > 0 and r.w4a8 > 0 and r.w8a8_quant > 0
    from quant.kernels.backends import triton_available

    has_triton = importlib.util.find_spec("triton") is not None and triton_available("cpu")
    assert (r.triton is not None) == (r.triton_fused is not None) == has_triton
    assert r.mismatches == []  # every integer path's output bits equal the reference's
    assert (r.int_mm is not None) == (shape.kernel == (1, 1) and shape.M > 16)
    assert r.w8a8_config in (0, 1, 2, 3)
    text = format_results([r])
    assert shape.label in text and "count-weighted" in text
    assert "bit-exact: all paths, all shapes" in text
    r.mismatches.append("tri-f")
    assert "MISMATCH" in format_results([r])


def test_unet_table():
    rows = [UNetResult("fp16", 60.0, 50.0, 4898.0, 6000.0, {}),
            UNetResult("w8a8", 40.0, 30.0, 2460.0, 3600.0, {"int8": 794})]
    text = format_unet_results(rows, 512, 1)
    assert "1.67x" in text and "50%" in text and "int8: 794" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
@pytest.mark.parametrize("script", ["bench_kernels.py", "bench_unet.py"])
def test_scripts_say_why_without_cuda(script):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / script)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith("no CUDA device; nothing to benchmark")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_unet_matrix_dry_run_on_cpu(tiny_dir, tmp_path, monkeypatch):
    """The whole-UNet flow of scripts/gpu_verify.sh on the tiny UNet, on CPU: build, quantize,
    convert (auto backend, merged projections), tune, time; then the table."""
    import json

    from quant.deploy_bench import (
        bench_unet_matrix,
        format_unet_matrix,
        mixed_bit_map,
    )

    monkeypatch.setenv("TRITON_INTERPRET", "0")  # time the references and _int_mm only
    config = json.loads((tiny_dir / "unet" / "config.json").read_text())
    logs = []
    rows = bench_unet_matrix(("fp16", "w8a8", "w4a8", "mixed"), ((64, 1), (128, 2)), iters=1,
                             device="cpu", config=config, tune_cache=tmp_path / "t.json",
                             log=logs.append)
    assert [(r.variant, r.resolution, r.batch) for r in rows] == [
        (v, r, b) for r, b in ((64, 1), (128, 2)) for v in ("fp16", "w8a8", "w4a8", "mixed")]
    assert all(r.note == "" and r.graph_ms > 0 for r in rows), [r.note for r in rows]
    weights = {r.variant: r.weight_mb for r in rows}
    assert weights["w4a8"] < weights["mixed"] < weights["w8a8"] < weights["fp16"]
    for r in rows:
        if r.variant != "fp16":
            assert set(r.backends) <= {"kernels", "int_mm"} and sum(r.backends.values()) > 0
    assert json.loads((tmp_path / "t.json").read_text())  # the backend table was cached
    text = format_unet_matrix(rows)
    assert "## SDXL UNet 128x128, batch 2" in text and "w4a8" in text
    names = [f"l{i}" for i in range(8)]
    assert [mixed_bit_map(names)[n].w for n in names] == [8, 4, 4, 2] * 2
    # a deadline in the past: every measurement is skipped, and said so
    skipped = bench_unet_matrix(("fp16",), ((64, 1),), device="cpu", config=config,
                                deadline=0.0, log=logs.append)
    assert skipped[0].note == "skipped: time budget"
