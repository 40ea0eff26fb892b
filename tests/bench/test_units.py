"""One unit (MB = 10^6 bytes) and one baseline (fp16 weights) in every size mixdq prints, and
latency reported as median with its spread."""

import pytest

from quant.bench.report import latency_warnings, markdown
from quant.utils.sizes import MB, format_mb, fp16_bytes, percent_of, tensor_bytes, weight_bytes
from quant.utils.timing import Spread, time_calls


def _report(fp_times, q_times):
    def perf(times, weights, fp16):
        return {"latency_ms": sorted(times)[len(times) // 2], "latency_ms_all": times,
                "timer": "wall-clock", "peak_memory_bytes": None, "weight_bytes": weights,
                "fp16_weight_bytes": fp16, "execution": "simulation"}

    return {"settings": {"prompts_source": "2 prompts", "resolution": 64,
                         "generation": {"steps": 1, "guidance": 0.0, "seed": 42}},
            "device": "cpu", "notes": [],
            "variants": [
                {"name": "fp", "reference": True, "metrics": {},
                 "perf": perf(fp_times, 12_500_000, 6_250_000)},
                {"name": "w8a8", "reference": False, "metrics": {},
                 "perf": perf(q_times, 3_190_000, 3_190_000)}]}


def test_report_sizes_in_mb_against_fp16():
    text = markdown(_report([10.0, 11.0, 12.0], [20.0, 21.0, 22.0]))
    head = next(line for line in text.splitlines() if line.startswith("| variant"))
    assert "UNet weights (MB)" in head and "UNet weights (% of fp16)" in head
    assert "peak memory (MB)" in head and "MiB" not in text
    rows = [line for line in text.splitlines() if line.startswith("| fp") or
            line.startswith("| w8a8")]
    # fp32 reference: 12.50 MB is 200% of its fp16 weights; w8a8: 3.19 MB is 51.0%
    assert rows[0].split(" | ")[1:5] == ["11.00 (10.00–12.00, 3×)", "—", "12.50", "200.0%"]
    assert rows[1].split(" | ")[1:5] == ["21.00 (20.00–22.00, 3×)", "—", "3.19", "51.0%"]
    assert "MB = 10^6 bytes" in text and "fp16 (6.25 MB)" in text


def test_latency_spread_warning():
    steady = _report([10.0, 11.0, 12.0], [20.0, 21.0, 22.0])
    perf = {v["name"]: v["perf"] for v in steady["variants"]}
    assert latency_warnings(perf) == []
    busy = {"fp": {"latency_ms_all": [18.0, 20.0, 25.0, 5110.0]}, "w8a8": None}
    (line,) = latency_warnings(busy)
    assert line.startswith("warning: fp's UNet latency varied 283.9x over 4 calls "
                           "(18.00 to 5110.00 ms)")


def test_spread_summary():
    s = Spread.of([4.0, 1.0, 3.0, 2.0, 100.0])
    assert (s.median, s.min, s.max, s.q1, s.q3, s.repeats) == (3.0, 1.0, 100.0, 2.0, 4.0, 5)
    assert s.ratio == 100.0 and s.unsteady()
    assert not Spread.of([10.0, 14.0]).unsteady() and Spread.of([10.0, 16.0]).unsteady()
    assert Spread.of([7.0]).format() == "7.00 (7.00–7.00, 1×)"
    with pytest.raises(ValueError):
        Spread.of([])


def test_time_calls_counts_calls():
    calls = []
    times = time_calls(lambda: calls.append(1), 5, warmup=2, device="cpu")
    assert len(calls) == 7 and len(times) == 5 and all(t >= 0 for t in times)


def test_byte_counters():
    from torch import nn

    lin = nn.Linear(10, 4)  # 44 float32 parameters
    shared = nn.Sequential(lin, lin)
    assert tensor_bytes(shared) == 44 * 4 == weight_bytes(shared)
    assert fp16_bytes(shared) == 44 * 2
    assert MB == 10**6 and format_mb(1_234_567) == "1.23" and format_mb(None) == "—"
    assert percent_of(1, 4) == "25.0%" and percent_of(None, 4) == "—" and percent_of(1, 0) == "—"


def test_quantize_prints_the_benchmarks_size_and_baseline(tiny_dir, quant_dirs):
    """`mixdq quantize`'s size line and the benchmark's weight column count the same bytes."""
    import quant
    from quant.bench.timing import measure_unet

    pipe = quant.load_pipeline(str(tiny_dir), device="cpu")
    baseline = fp16_bytes(pipe.unet)
    assert baseline == 2 * sum(p.numel() for p in pipe.unet.parameters())
    qpipe = quant.load_pipeline(str(tiny_dir), quantized=quant_dirs["W8A8"], device="cpu",
                                execution="simulate")
    from quant.bench.timing import capture_unet_inputs

    args, kwargs = capture_unet_inputs(qpipe, "a cat")
    perf = measure_unet(qpipe, args, kwargs, repeats=2, warmup=0)
    assert perf.weight_bytes == weight_bytes(qpipe.unet)
    assert perf.fp16_weight_bytes == baseline  # simulated layers keep their float parameters
    assert perf.weight_bytes < baseline
