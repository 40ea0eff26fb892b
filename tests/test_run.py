"""mixdq run: config, stage plan, skipping and the end-to-end tiny run."""

import json
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


def test_plan_maps_options_to_flags(tmp_path):
    (tmp_path / "prompts.txt").write_text("a cat\na dog\n")
    config = RunConfig.load(_write(tmp_path, BASIC))
    stages = {s.name: s.argv for s in plan(config, tmp_path / "out")}
    assert list(stages) == ["calibrate", "sensitivity", "quantize w8a8", "allocate mixed",
                            "quantize mixed", "benchmark"]
    out = str(tmp_path / "out")
    assert stages["calibrate"] == ["calibrate", "--model", "tiny", "--prompts",
                                   str(tmp_path / "prompts.txt"), "--num-prompts", "4",
                                   "--out", f"{out}/calib"]
    assert stages["sensitivity"][-4:] == ["--weight-bits", "2,4,8", "--out",
                                          f"{out}/sensitivity/sens.csv"]
    assert stages["allocate mixed"] == [
        "allocate", "--sensitivity", f"{out}/sensitivity/sens.csv", "--weight-bits", "4.0",
        "--act-bits", "8.0", "--protect", f"{out}/sensitivity/sens.protect.txt",
        "--out", f"{out}/variants/mixed/bitmap.json"]
    assert stages["quantize mixed"][-4:] == ["--bit-map", f"{out}/variants/mixed/bitmap.json",
                                             "--out", f"{out}/variants/mixed/quant"]
    assert stages["quantize w8a8"][5:9] == ["--w-bits", "8", "--a-bits", "8"]
    bench = stages["benchmark"]
    assert bench.count("--quantized") == 2 and bench.count("--prompt") == 2
    assert "--no-clip" in bench and "--inception" in bench


def test_overrides_and_errors(tmp_path):
    (tmp_path / "prompts.txt").write_text("a cat\n")
    path = _write(tmp_path, BASIC)
    config = RunConfig.load(path, ["calibrate.num_prompts=16", "benchmark=null"])
    assert config.calibrate["num_prompts"] == 16 and config.benchmark is None
    assert [s.name for s in plan(config, tmp_path)][-1] == "quantize mixed"
    with pytest.raises(MixDQError, match="KEY=VALUE"):
        RunConfig.load(path, ["calibrate.num_prompts"])
    with pytest.raises(MixDQError, match="unknown keys \\['modle'\\]"):
        RunConfig.load(_write(tmp_path, BASIC + "modle: x\n"))
    with pytest.raises(MixDQError, match="no such file"):
        RunConfig.load(tmp_path / "absent.yaml")
    with pytest.raises(MixDQError, match="malformed YAML"):
        RunConfig.load(_write(tmp_path, "model: [unclosed"))
    with pytest.raises(MixDQError, match="calibrate.prompts"):
        RunConfig.load(_write(tmp_path, "variants: [{name: a, quantize: {w_bits: 8}}]"))
    with pytest.raises(MixDQError, match="no variants"):
        RunConfig.load(_write(tmp_path, "calibrate: {prompts: p.txt}"))
    with pytest.raises(MixDQError, match="variant x: give"):
        RunConfig.load(_write(tmp_path, "calibrate: {prompts: p}\nvariants: [{name: x}]"))


def test_finished_stages_are_skipped(tmp_path):
    (tmp_path / "prompts.txt").write_text("a cat\n")
    config = RunConfig.load(_write(tmp_path, BASIC))
    calls = []

    def fake_main(argv):
        calls.append(argv[0])
        out = Path(argv[argv.index("--out") + 1])
        target = {"calibrate": out / "manifest.json", "quantize": out / "quant_config.json",
                  "benchmark": out / "report.json"}.get(argv[0], out)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("{}")
        return 0

    first = run(config, tmp_path / "out", main=fake_main, log=lambda s: None)
    assert [status for _, status in first if status == "skipped"] == []
    assert calls == ["calibrate", "sensitivity", "quantize", "allocate", "quantize", "benchmark"]
    calls.clear()
    # an interrupted benchmark: only it runs again
    (tmp_path / "out" / "benchmark" / "report.json").unlink()
    again = run(config, tmp_path / "out", main=fake_main, log=lambda s: None)
    assert calls == ["benchmark"]
    assert sum(status == "skipped" for _, status in again) == 5
    changed = RunConfig.load(_write(tmp_path, BASIC), ["calibrate.num_prompts=5"])
    with pytest.raises(MixDQError, match="stage calibrate .* finished with other arguments"):
        run(changed, tmp_path / "out", main=fake_main, log=lambda s: None)
    failing = RunConfig.load(_write(tmp_path, BASIC))
    with pytest.raises(MixDQError, match="stage calibrate failed"):
        run(failing, tmp_path / "other", main=lambda argv: 2, log=lambda s: None)


@pytest.mark.parametrize("name", ["tiny", "sdxl_turbo_w8a8", "sdxl_turbo_w5a8", "sdxl_turbo_w4a8"])
def test_presets_load_and_plan(name, tmp_path):
    config = RunConfig.load(CONFIGS / f"{name}.yaml")
    stages = plan(config, tmp_path)
    assert stages[0].argv[0] == "calibrate" and stages[-1].argv[0] == "benchmark"
    prompts = stages[0].argv[stages[0].argv.index("--prompts") + 1]
    assert Path(prompts).is_file()


@pytest.mark.slow
def test_readme_main_job_on_tiny(tmp_path):
    """The README's main-job command, for real: every stage, a report and a grid."""
    from quant.cli import main

    out = tmp_path / "tiny"
    assert main(["run", "--config", str(CONFIGS / "tiny.yaml"), "--out", str(out)]) == 0
    report = json.loads((out / "benchmark" / "report.json").read_text())
    assert (out / "benchmark" / "grid.png").stat().st_size > 1000
    text = json.dumps(report)
    for variant in ("w8a8", "w4a8", "mixdq-w4a8"):
        assert variant in text
    # a rerun skips every stage
    assert main(["run", "--config", str(CONFIGS / "tiny.yaml"), "--out", str(out)]) == 0
