"""Fault drill: kill every stage at random points, resume, and compare with an uninterrupted run.

Each stage of the tiny pipeline (calibrate, sensitivity, allocate, quantize, benchmark) runs as
the user runs it (``python -m quant <stage> ...``, documented flags only) in a subprocess that is
SIGKILLed at a random moment, ``MIXDQ_DRILL_KILLS`` times (default 3) per stage; then the same
command runs to the end. Every file the stage wrote must be byte-identical to the one of an
uninterrupted run (timing-only files and fields excepted, listed in ``TIMING``), and no
temporary file (``*.tmp``) may be left anywhere, the model cache included.

Both runs use the same relative paths (each runs in its own root folder); the benchmark report
names the quantized folder's absolute path, so the root folder is replaced by ``<ROOT>`` before
comparing. ``MIXDQ_DRILL_SEED`` picks the kill times.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PROMPTS = str(Path(__file__).resolve().parents[1] / "configs" / "prompts"
              / "coco2017_val_first1024.txt")
MODEL = ["--model", "tiny", "--device", "cpu"]
STAGES = [
    ("calibrate", ["calibrate", *MODEL, "--prompts", PROMPTS, "--num-prompts", "4",
                   "--batch-size", "1", "--steps", "1", "--guidance", "0", "--seed", "42",
                   "--no-progress", "--out", "calib"], ["calib"]),
    ("sensitivity", ["sensitivity", *MODEL, "--calib", "calib", "--layers",
                     r"^(conv_in|conv_out|mid_block\..*|down_blocks\.1\.attentions\.0\..*)$",
                     "--batch-size", "4", "--no-progress", "--out", "sens/sens.csv"], ["sens"]),
    ("allocate", ["allocate", "--sensitivity", "sens/sens.csv", "--weight-bits", "5",
                  "--act-bits", "8", "--pick", "predicted", "--out", "alloc/bits.json"],
     ["alloc"]),
    ("quantize", ["quantize", *MODEL, "--calib", "calib", "--w-bits", "4", "--a-bits", "8",
                  "--batch-size", "2", "--no-progress", "--out", "q"], ["q"]),
    ("benchmark", ["benchmark", *MODEL, "--quantized", "w4a8=q", "--prompts", PROMPTS,
                   "--num-prompts", "3", "--no-fid", "--no-clip", "--no-image-reward",
                   "--no-latency", "--grid-rows", "2", "--out", "bench"], ["bench"]),
]
# Files whose content is (partly) a measurement of time: compared without these fields, or
# only for their presence.
TIMING = {
    "report.json": ("generation_seconds",),
    "sens.summary.json": None,
}
TIMING_FILES = ("images.json", "report.md")  # per-image seconds; the report's timing lines


def _env(cache: Path) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "XDG_CACHE_HOME": str(cache), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def _run(args, cwd: Path, env: dict, kill_after: float | None = None) -> float | int:
    """Run ``python -m quant ARGS`` in ``cwd``; kill it after ``kill_after`` seconds if given.

    Returns the seconds it took (completed runs must succeed) or the return code of a killed
    one (``-9``, or ``0`` if it finished first).
    """
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "quant", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if kill_after is None:
        out, _ = proc.communicate(timeout=1800)
        assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
        return time.monotonic() - start
    try:
        proc.communicate(timeout=kill_after)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    return proc.returncode


def _strip(name: str, data: bytes) -> bytes | object:
    fields = TIMING.get(name, ())
    if fields is None:  # timing throughout: only its keys are compared
        return sorted(json.loads(data))
    if fields:
        obj = json.loads(data)
        return {k: v for k, v in obj.items() if k not in fields}
    return data


def _snapshot(root: Path, outputs: list[str]) -> dict[str, object]:
    files = {}
    for out in outputs:
        for path in sorted((root / out).rglob("*")):
            if path.is_file() and path.name not in TIMING_FILES and ".parts" not in path.parts[-2]:
                # The benchmark report names the quantized folder's absolute path: the two
                # runs' folders differ by their root only.
                data = path.read_bytes().replace(str(root.resolve()).encode(), b"<ROOT>")
                files[str(path.relative_to(root))] = _strip(path.name, data)
    return files


def _temporaries(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*") if p.name.endswith(".tmp")
            or (p.name.startswith(".") and ".tmp" in p.name)]


def test_fault_drill(tmp_path):
    kills = int(os.environ.get("MIXDQ_DRILL_KILLS", "3"))
    rng = random.Random(int(os.environ.get("MIXDQ_DRILL_SEED", "13")))
    ref, drill = tmp_path / "ref", tmp_path / "drill"
    ref.mkdir()
    drill.mkdir()
    ref_env, drill_env = _env(tmp_path / "ref-cache"), _env(tmp_path / "drill-cache")
    report = []
    for name, args, outputs in STAGES:
        seconds = _run(args, ref, ref_env)
        killed = 0
        for _ in range(kills):
            # anywhere from interpreter start-up to the end of an uninterrupted run
            code = _run(args, drill, drill_env, kill_after=rng.uniform(0.5, seconds))
            killed += code == -signal.SIGKILL
        _run(args, drill, drill_env)
        _run(args, drill, drill_env)  # a rerun of a finished stage changes nothing
        expected, actual = _snapshot(ref, outputs), _snapshot(drill, outputs)
        assert sorted(actual) == sorted(expected), name
        for key in expected:
            assert actual[key] == expected[key], f"{name}: {key} differs after the kills"
        report.append(f"{name}: {killed}/{kills} killed, {len(expected)} files identical, "
                      f"{seconds:.1f} s uninterrupted")
    leftovers = _temporaries(drill, tmp_path / "drill-cache")
    assert not leftovers, leftovers
    print("\n".join(report))
