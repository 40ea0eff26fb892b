"""mixdq run: config, stage plan, skipping and the end-to-end tiny run."""

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from quant.errors import MixDQError
from quant.run import RunConfig, plan, run

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _write(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


BASIC = """
model: tiny
calibrate: {prompts: prompts.txt, num_prompts: 4}
sensitivity: {batch_size: 4, weight_bits: [2, 4, 8]}
variants:
  - {name: w8a8, quantize: {w_bits: 8, a_bits: 8}}
  - {name: mixed, allocate: {weight_bits: 4.0, act_bits: 8.0}}
benchmark: {prompt: [a cat, a dog], inception: tiny, no_clip: true}
"""


def test_plan_builds_typed_options(tmp_path):
    (tmp_path / "prompts.txt").write_text("a cat\na dog\n")
    config = RunConfig.load(_write(tmp_path, BASIC))
    stages = {s.name: s.record for s in plan(config, tmp_path / "out")}
    assert list(stages) == ["calibrate", "sensitivity", "quantize w8a8", "allocate mixed",
                            "quantize mixed", "benchmark"]
    calib = stages["calibrate"]
    assert calib["model"] == {"model": "tiny", "device": None, "dtype": None, "lora": None,
                              "lora_scale": 1.0}
    # records hold settings, not path spellings: files by content, run files relative to it
    digest = hashlib.sha256(b"a cat\na dog\n").hexdigest()
    assert calib["options"]["prompts"] == {"file": "prompts.txt", "sha256": digest}
    assert config.calibrate.prompts == str(tmp_path / "prompts.txt")  # what the stage reads
    assert calib["options"]["num_prompts"] == 4 and calib["out"] == "$OUT/calib"
    assert stages["sensitivity"]["options"]["weight_bits"] == [2, 4, 8]
    assert stages["sensitivity"]["out"] == "$OUT/sensitivity/sens.csv"
    assert stages["sensitivity"]["calib"] == "$OUT/calib"
    alloc = stages["allocate mixed"]
    # paper: split mode with the final pick measured on images of calibration prompts
    assert alloc["model"]["model"] == "tiny" and alloc["calib"] == "$OUT/calib"
    assert (alloc["options"]["mode"], alloc["options"]["pick"]) == ("split", "images")
    assert (alloc["options"]["weight_bits"], alloc["options"]["act_bits"]) == (4.0, 8.0)
    assert alloc["options"]["protect"] == "$OUT/sensitivity/sens.protect.txt"
    assert alloc["out"] == "$OUT/variants/mixed/bitmap.json"
    assert stages["quantize mixed"]["options"]["bit_map"] == alloc["out"]
    assert stages["quantize mixed"]["out"] == "$OUT/variants/mixed/quant"
    w8a8 = stages["quantize w8a8"]["options"]
    assert (w8a8["w_bits"], w8a8["a_bits"], w8a8["bit_map"]) == (8, 8, None)
    bench = stages["benchmark"]
    assert bench["options"]["prompt"] == ["a cat", "a dog"] and bench["options"]["no_clip"]
    assert bench["options"]["inception"] == "tiny"
    assert bench["quantized"] == {"w8a8": "$OUT/variants/w8a8/quant",
                                  "mixed": "$OUT/variants/mixed/quant"}


def test_overrides_and_errors(tmp_path):
    (tmp_path / "prompts.txt").write_text("a cat\n")
    path = _write(tmp_path, BASIC)
    config = RunConfig.load(path, ["calibrate.num_prompts=16", "benchmark=null"])
    assert config.calibrate.num_prompts == 16 and config.benchmark is None
    assert [s.name for s in plan(config, tmp_path)][-1] == "quantize mixed"
    with pytest.raises(MixDQError, match="KEY=VALUE"):
        RunConfig.load(path, ["calibrate.num_prompts"])
    with pytest.raises(MixDQError, match="unknown key 'modle'"):
        RunConfig.load(_write(tmp_path, BASIC + "modle: x\n"))
    with pytest.raises(MixDQError, match="no such file"):
        RunConfig.load(tmp_path / "absent.yaml")
    with pytest.raises(MixDQError, match="malformed YAML"):
        RunConfig.load(_write(tmp_path, "model: [unclosed"))
    with pytest.raises(MixDQError, match="calibrate.prompts"):
        RunConfig.load(_write(tmp_path, "variants: [{name: a, quantize: {w_bits: 8}}]"))
    with pytest.raises(MixDQError, match="no variants"):
        RunConfig.load(_write(tmp_path, "calibrate: {prompts: p.txt}\nbenchmark: null"))
    with pytest.raises(MixDQError, match="variant x: give"):
        RunConfig.load(_write(tmp_path, "calibrate: {prompts: p}\nvariants: [{name: x}]"))


# one typo or bad value per section: each fails when the config is loaded, naming the key
TYPOS = [
    ("sensitivity.batch_sise=8", "sensitivity.batch_sise: unknown setting"),
    ("sensitivity.batch_size=eight", "sensitivity.batch_size: expected an integer"),
    ("sensitivity.ssim=some", "sensitivity.ssim: expected one of"),
    ("sensitivity.calib.num_promts=2", "sensitivity.calib.num_promts: unknown setting"),
    ("calibrate.num_promts=8", "calibrate.num_promts: unknown setting"),
    ("calibrate.steps=0", "calibrate.steps: must be positive"),
    ("benchmark.latency_repeat=3", "benchmark.latency_repeat: unknown setting"),
    ("benchmark.execution=fast", "benchmark.execution: expected one of"),
    ("variants=[{name: a, quantize: {w_bits: 8, a_bit: 8}}]", "variant a.quantize.a_bit"),
    ("variants=[{name: a, quantize: {w_bits: 1, a_bits: 8}}]", "variant a.quantize.w_bits"),
    ("variants=[{name: a, allocate: {weight_bit: 4}}]", "variant a.allocate.weight_bit"),
    ("variants=[{name: a, allocate: {weight_bits: 4, mode: best}}]", "mode must be one of"),
    ("variants=[{name: a, quantise: {w_bits: 8}}]", "variant a.quantise: unknown key"),
    ("lora_scale=strong", "model.lora_scale: expected a number"),
    ("dtyp=fp16", "unknown key 'dtyp'"),
]


@pytest.mark.parametrize("item,message", TYPOS)
def test_typo_in_any_section_fails_before_any_stage(item, message, tmp_path, capsys):
    """The config is fully validated in well under a second, before a stage runs."""
    import time

    from quant.cli import main

    (tmp_path / "prompts.txt").write_text("a cat\n")
    path = _write(tmp_path, BASIC)
    start = time.monotonic()
    with pytest.raises(MixDQError, match=re.escape(message)):
        RunConfig.load(path, [item])
    assert time.monotonic() - start < 0.5
    assert main(["run", "--config", str(path), "--out", str(tmp_path / "out"),
                 "--set", item]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "out").exists()  # nothing ran, nothing was written


def _fake_stage(calls):
    def execute(stage):
        calls.append(stage.kind)
        for target in stage.outputs:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("{}")
    return execute


def test_finished_stages_are_skipped(tmp_path):
    (tmp_path / "prompts.txt").write_text("a cat\n")
    config = RunConfig.load(_write(tmp_path, BASIC))
    calls = []
    execute = _fake_stage(calls)
    first = run(config, tmp_path / "out", execute=execute, log=lambda s: None)
    assert [status for _, status in first if status == "skipped"] == []
    assert calls == ["calibrate", "sensitivity", "quantize", "allocate", "quantize", "benchmark"]
    record = json.loads((tmp_path / "out" / "calib" / "stage.json").read_text())
    assert record["config"]["options"]["num_prompts"] == 4  # settings, not argv
    calls.clear()
    # an interrupted benchmark: only it runs again
    (tmp_path / "out" / "benchmark" / "report.json").unlink()
    again = run(config, tmp_path / "out", execute=execute, log=lambda s: None)
    assert calls == ["benchmark"]
    assert sum(status == "skipped" for _, status in again) == 5
    changed = RunConfig.load(_write(tmp_path, BASIC), ["calibrate.num_prompts=5"])
    with pytest.raises(MixDQError, match="stage calibrate .* finished with other settings"):
        run(changed, tmp_path / "out", execute=execute, log=lambda s: None)

    def failing(stage):
        raise MixDQError("no GPU here")

    # the refusal names the setting that differs
    with pytest.raises(MixDQError, match=re.escape("(options.num_prompts: 4 there, 5 now)")):
        run(changed, tmp_path / "out", execute=execute, log=lambda s: None)

    with pytest.raises(MixDQError, match="stage calibrate failed: no GPU here"):
        run(config, tmp_path / "other", execute=failing, log=lambda s: None)


def test_finished_stages_are_recognised_however_out_is_spelled_or_moved(tmp_path, monkeypatch):
    """--out absolute or relative, from another working directory, the run folder moved or
    copied: the same run, every finished stage skipped."""
    (tmp_path / "prompts.txt").write_text("a cat\n")
    config = RunConfig.load(_write(tmp_path, BASIC))
    calls = []
    execute = _fake_stage(calls)
    quiet = {"execute": execute, "log": lambda s: None}
    run(config, tmp_path / "runs" / "a", **quiet)
    assert len(calls) == 6
    calls.clear()
    monkeypatch.chdir(tmp_path / "runs")
    skipped = [s for _, s in run(config, "a", **quiet)]  # relative spelling
    assert skipped == ["skipped"] * 6 and calls == []
    monkeypatch.chdir(tmp_path)
    run(config, os.path.join("runs", ".", "a"), **quiet)
    shutil.move(tmp_path / "runs" / "a", tmp_path / "moved")
    shutil.copytree(tmp_path / "moved", tmp_path / "copied")
    for folder in ("moved", "copied"):
        assert [s for _, s in run(config, tmp_path / folder, **quiet)] == ["skipped"] * 6
    assert calls == []
    # an input file with other content is another setting, named
    (tmp_path / "prompts.txt").write_text("a dog\n")
    changed = RunConfig.load(_write(tmp_path, BASIC))
    with pytest.raises(MixDQError, match=r"finished with other settings "
                                         r"\(options.prompts.sha256: '[0-9a-f]+' there"):
        run(changed, tmp_path / "moved", **quiet)


@pytest.mark.parametrize("name", ["tiny", "sdxl_turbo_w8a8", "sdxl_turbo_w5a8", "sdxl_turbo_w4a8"])
def test_presets_load_and_plan(name, tmp_path):
    config = RunConfig.load(CONFIGS / f"{name}.yaml")
    stages = plan(config, tmp_path)
    assert stages[0].kind == "calibrate" and stages[-1].kind == "benchmark"
    assert Path(config.calibrate.prompts).is_file() and Path(config.benchmark.prompts).is_file()
    assert len(stages[0].record["options"]["prompts"]["sha256"]) == 64


@pytest.mark.slow
def test_readme_main_job_on_tiny(tmp_path):
    """The README's main-job command, for real: every stage, a report and a grid."""
    from quant.cli import main

    out = tmp_path / "tiny"
    assert main(["run", "--config", "tiny", "--out", str(out)]) == 0
    report = json.loads((out / "benchmark" / "report.json").read_text())
    assert (out / "benchmark" / "grid.png").stat().st_size > 1000
    text = json.dumps(report)
    for variant in ("w8a8", "w4a8", "mixdq-w4a8"):
        assert variant in text
    # a rerun skips every stage
    assert main(["run", "--config", str(CONFIGS / "tiny.yaml"), "--out", str(out)]) == 0
