"""What a new user meets first: presets, help texts, usage on bad options, prompt options,
`mixdq generate --quantized`, and the lazy public API."""

from pathlib import Path

import pytest

from quant.cli import build_parser, main

BUNDLED = "configs/prompts/coco2017_val_first1024.txt"
# every YAML shipped in configs/ is a preset, by its file name
PRESETS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def _help(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    return " ".join(capsys.readouterr().out.split())


REQUIRED = {"calibrate": ["--prompts", "p.txt", "--out", "o"],
            "generate": ["--prompt", "x", "--out", "o.png"], "benchmark": ["--out", "o"],
            "run": ["--config", "tiny", "--out", "o"], "quantize": ["--calib", "c", "--out", "o"]}


@pytest.mark.parametrize("command", sorted(REQUIRED))
def test_unknown_option_prints_the_subcommands_usage(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, *REQUIRED[command], "--no-such-option", "1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: mixdq {command} ")
    assert f"mixdq {command}: error: unrecognized arguments: --no-such-option 1" in err


def test_help_texts(capsys):
    generate = _help(capsys, "generate")
    for flag in ("--prompt PROMPT the text prompt",
                 "--steps STEPS denoising steps (default: the model's usual, e.g. 1 for "
                 "SDXL-Turbo",
                 "--guidance GUIDANCE classifier-free guidance scale; above 1 the batch is "
                 "doubled (default: the model's usual)",
                 "--negative-prompt NEGATIVE_PROMPT",
                 "--seed SEED random seed of the noise (default 42)",
                 "--quantized QUANT_DIR", "--execution {auto,kernels,simulate}"):
        assert flag in generate
    assert "'proxy'" in generate and "'tiny'" in generate
    calibrate = _help(capsys, "calibrate")
    assert "--column COLUMN text column of a CSV/TSV file or a dataset (default text)" \
        in calibrate
    run = _help(capsys, "run")
    assert f"({', '.join(PRESETS)})" in run


def test_every_prompt_reading_subcommand_has_the_same_prompt_options():
    parser = build_parser()
    flags = ("--num-prompts", "--column", "--split", "--shuffle", "--shuffle-seed")
    for command in ("calibrate", "benchmark"):
        known = {s for a in parser.subcommands[command]._actions for s in a.option_strings}
        assert set(flags) <= known, command


def test_run_accepts_preset_names():
    from quant.run import RunConfig, presets, resolve_config

    assert presets() == PRESETS and {"tiny", "sdxl_turbo_w4a8"} <= set(PRESETS)
    config = RunConfig.load("tiny")
    assert config.model.model == "tiny"
    assert config.calibrate.num_prompts == 8
    assert resolve_config("tiny.yaml") == resolve_config("tiny")
    prompts = config.calibrate.prompts
    assert prompts.endswith("coco2017_val_first1024.txt")
    from pathlib import Path

    assert Path(prompts).is_file()  # resolved beside the preset, whatever the working folder


def test_run_unknown_config_names_the_presets(tmp_path, capsys):
    assert main(["run", "--config", "tinny", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["mixdq run: error: run config tinny: no such file and no such preset "
                   f"(presets: {', '.join(PRESETS)})"]


def test_run_column_error_suggests_set(tmp_path, capsys):
    table = tmp_path / "prompts.tsv"
    table.write_text("Prompt\tCategory\nbird\tAnimals\na red bus on a street\tVehicles\n")
    assert main(["run", "--config", "tiny", "--out", str(tmp_path / "r"),
                 "--set", f"calibrate.prompts={table}", "--set", "calibrate.num_prompts=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "no column 'text' (columns: Prompt, Category); pick one with " \
           "--set calibrate.column=..." in err[0]
    assert "--column" not in err[0]


def test_benchmark_shuffle_takes_a_seeded_sample(tmp_path):
    from quant.calib.prompts import read_prompts
    from quant.stages import BenchmarkOptions

    first, _ = BenchmarkOptions(prompts=BUNDLED, num_prompts=4).read_prompts()
    shuffled, _ = BenchmarkOptions(prompts=BUNDLED, num_prompts=4, shuffle=True,
                                   shuffle_seed=3).read_prompts()
    assert first == read_prompts(BUNDLED, num_prompts=4).prompts
    assert shuffled == read_prompts(BUNDLED, num_prompts=4, shuffle=True, seed=3).prompts
    assert shuffled != first
    inline = BenchmarkOptions(prompt=("a", "b", "c", "d", "e"), num_prompts=3, shuffle=True,
                              shuffle_seed=1).read_prompts()[0]
    assert len(inline) == 3 and len(set(inline)) == 3 and set(inline) <= set("abcde")
    assert inline != ["a", "b", "c"]


@pytest.fixture(scope="module")
def tiny_w8a8(tiny_dir, tmp_path_factory):
    """A W8A8 checkpoint of the tiny UNet, made through the stage functions."""
    from quant.stages import ModelSpec, QuantizeOptions, quantize

    root = tmp_path_factory.mktemp("w8a8")
    _calibrate_tiny(tiny_dir, root)
    lines = []
    quantize(ModelSpec(str(tiny_dir), device="cpu"),
             QuantizeOptions(w_bits=8, a_bits=8, no_progress=True), root / "calib",
             root / "quant", log=lines.append)
    (root / "quantize.log").write_text("\n".join(lines))
    return root / "quant"


def _calibrate_tiny(tiny_dir, root):
    from quant.stages import CalibrateOptions, ModelSpec, calibrate


    model = ModelSpec(str(tiny_dir), device="cpu")
    calibrate(model, CalibrateOptions(prompts=BUNDLED, num_prompts=2, batch_size=2,
                                      no_progress=True), root / "calib", log=lambda _: None)


def test_generate_quantized_equals_load_pipeline(tiny_dir, tiny_w8a8, tmp_path):
    import numpy as np
    from PIL import Image

    import quant
    from quant.generate import generate

    out, fp_out = tmp_path / "q.png", tmp_path / "fp.png"
    common = ["--model", str(tiny_dir), "--device", "cpu", "--prompt", "a cat on a mat",
              "--seed", "7"]
    assert main(["generate", *common, "--quantized", str(tiny_w8a8), "--execution",
                 "simulation", "--out", str(out)]) == 0  # the name pipe.mixdq_execution uses
    assert main(["generate", *common, "--out", str(fp_out)]) == 0
    pipe = quant.load_pipeline(str(tiny_dir), quantized=tiny_w8a8, device="cpu",
                               execution="simulate")
    assert pipe.mixdq_execution == "simulation"
    expected = np.asarray(generate(pipe, ["a cat on a mat"], seed=7)[0])
    got = np.asarray(Image.open(out).convert("RGB"))
    assert got.shape == expected.shape == (64, 64, 3)
    assert np.array_equal(got, expected)
    fp = np.asarray(Image.open(fp_out).convert("RGB"))
    assert not np.array_equal(got, fp)  # the quantized UNet really ran


def test_generate_quantized_errors_are_one_line(tiny_dir, tiny_w8a8, tmp_path, capsys):
    base = ["generate", "--model", str(tiny_dir), "--device", "cpu", "--prompt", "x",
            "--out", str(tmp_path / "x.png")]
    assert main([*base, "--quantized", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--quantized" in err[0] and "no such folder" in err[0]
    assert main([*base, "--quantized", str(tiny_w8a8), "--execution", "kernels"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "integer kernels requested but unavailable" in err[0]


def test_dir_quant_lists_the_public_api():
    import quant

    assert set(quant.__all__) >= {"load_pipeline", "quantize_unet", "BitMap",
                                  "load_fp_pipeline", "MixDQError", "__version__"}
    import subprocess
    import sys

    fresh = subprocess.run([sys.executable, "-c", "import quant; print(' '.join(n for n in "
                            "dir(quant) if not n.startswith('_')))"], capture_output=True,
                           text=True, check=True).stdout.split()
    assert fresh == ["BitMap", "MixDQError", "load_fp_pipeline", "load_pipeline",
                     "quantize_unet"]
    for name in quant.__all__:
        assert getattr(quant, name) is not None


def _readme_block(after: str) -> str:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    start = text.index("```python\n", text.index(after)) + len("```python\n")
    return text[start:text.index("```", start)]


def test_readme_quantize_your_own_pipeline_snippet_runs(tiny_dir, tiny_w8a8, tmp_path,
                                                         monkeypatch):
    """The README's snippet, verbatim but for the model, device and run folder."""
    from PIL import Image

    import quant.calib

    code = _readme_block("To quantize a pipeline you built yourself")
    assert "pipe = " in code.split("quantize_unet(pipe.unet")[0]  # pipe is defined first
    code = (code.replace('"stabilityai/sdxl-turbo"', repr(str(tiny_dir)))
            .replace('device="cuda"', 'device="cpu"')
            .replace('"runs/', '"' + str(tiny_w8a8.parent) + "/")
            .replace("num_inference_steps=1", "num_inference_steps=1, height=64, width=64"))
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert isinstance(scope["image"], Image.Image)
    saved = tiny_w8a8.parent / "my_w8a8"
    assert (saved / "quant_config.json").is_file()
    assert quant.calib.CalibrationData(tiny_w8a8.parent / "calib").prompts


def test_loading_is_quiet_and_restores_library_settings(tiny_dir, tmp_path):
    """No third-party chatter on stderr while loading (fresh process: warn-once notices fire),
    and the caller's diffusers/transformers verbosity and progress bars survive."""
    import subprocess
    import sys

    code = (
        "import warnings, transformers.utils.logging as t, diffusers.utils.logging as d\n"
        "import quant\n"
        "before = (t.get_verbosity(), d.get_verbosity(), t.is_progress_bar_enabled(),"
        " d.is_progress_bar_enabled())\n"
        f"pipe = quant.load_pipeline({str(tiny_dir)!r}, device='cpu')\n"
        "after = (t.get_verbosity(), d.get_verbosity(), t.is_progress_bar_enabled(),"
        " d.is_progress_bar_enabled())\n"
        "assert before == after, (before, after)\n"
        "print(pipe.mixdq_execution)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**__import__("os").environ, "XDG_CACHE_HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "full precision"
    assert proc.stderr == ""


def test_quantize_states_deployed_size_in_mb_of_fp16(tiny_dir, tiny_w8a8):
    """The quantize stage's size line: the benchmark's byte counter, unit and baseline."""
    import quant
    from quant.utils.sizes import fp16_bytes, weight_bytes

    log = (tiny_w8a8.parent / "quantize.log").read_text().splitlines()
    fp = quant.load_pipeline(str(tiny_dir), device="cpu").unet
    q = quant.load_pipeline(str(tiny_dir), quantized=tiny_w8a8, device="cpu",
                            execution="simulate").unet
    deployed, baseline = weight_bytes(q), fp16_bytes(fp)
    expected = (f"UNet weights as deployed: {deployed / 1e6:.2f} MB "
                f"({100 * deployed / baseline:.1f}% of its {baseline / 1e6:.2f} MB in fp16)")
    assert expected in log
    assert 0.25 < deployed / baseline < 0.75  # W8 against fp16: about half
