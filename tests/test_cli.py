import subprocess
import sys
import time

import pytest

from quant.cli import SUBCOMMANDS, main
from quant.cli.common import not_built


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


def test_unbuilt_subcommand_is_one_line_and_exit_2():
    from quant.errors import MixDQError

    with pytest.raises(MixDQError, match="not built yet"):
        not_built("frobnicate")(None)


def test_generate_tiny_writes_png(tiny_dir, tmp_path):
    from PIL import Image

    out = tmp_path / "cat.png"
    assert main(["generate", "--model", str(tiny_dir), "--prompt", "a cat on a mat",
                 "--device", "cpu", "--out", str(out)]) == 0
    image = Image.open(out)
    assert image.size == (64, 64)
    assert image.getextrema() != ((0, 0), (0, 0), (0, 0))


def test_generate_rejects_bad_out_name(tiny_dir, tmp_path, capsys):
    assert main(["generate", "--model", str(tiny_dir), "--prompt", "x",
                 "--out", str(tmp_path / "x.txt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out" in err[0]


def test_missing_folder_is_one_line(tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path / "nope"), "--prompt", "x",
                 "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model_index.json" in err[0]


def test_unreachable_hub_id_fails_fast_with_one_line(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PATH": "",
           "OMP_NUM_THREADS": "1"}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "quant", "generate", "--model",
                           "stabilityai/sdxl-turbo", "--prompt", "x", "--out",
                           str(tmp_path / "x.png")], capture_output=True, text=True, env=env,
                          timeout=120)
    elapsed = time.monotonic() - start
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "stabilityai/sdxl-turbo" in lines[0] and "--model" in lines[0]
    assert "Traceback" not in proc.stderr
    assert elapsed < 60  # import time included; no 30 s network retries
