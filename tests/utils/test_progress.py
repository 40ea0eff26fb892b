"""Progress lines when stderr is not a terminal (a log file), the bar when it is."""

import io
import os
import subprocess
import sys

from quant.utils.progress import LogProgress, progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_log_progress_prints_start_every_interval_and_end():
    clock, out = Clock(), io.StringIO()
    bar = LogProgress(total=10, desc="calibrate", unit="prompts", interval=30, stream=out,
                      clock=clock)
    for t in (10, 20, 31, 40, 65):
        clock.now = t
        bar.update(2)
    bar.close()
    bar.close()  # once only
    assert out.getvalue().splitlines() == [
        "calibrate: 0/10 prompts (0%), 0s elapsed",
        "calibrate: 6/10 prompts (60%), 31s elapsed, ~21s left",
        "calibrate: 10/10 prompts (100%), 1m05s elapsed",  # 65 - 31 >= 30: a line
        "calibrate: 10/10 prompts (100%), 1m05s elapsed, done",
    ]


def test_log_progress_resumed_and_iterated():
    clock, out = Clock(), io.StringIO()
    items = []
    for x in LogProgress(range(3), desc="scoring", unit="batches", interval=0, stream=out,
                         clock=clock):
        clock.now += 60
        items.append(x)
    assert items == [0, 1, 2]
    lines = out.getvalue().splitlines()
    assert lines[0] == "scoring: 0/3 batches (0%), 0s elapsed"
    assert lines[1] == "scoring: 1/3 batches (33%), 1m00s elapsed, ~2m00s left"
    assert lines[-1] == "scoring: 3/3 batches (100%), 3m00s elapsed, done"
    out = io.StringIO()
    bar = LogProgress(total=8, initial=6, desc="calibrate", unit="prompts", interval=0,
                      stream=out, clock=clock)
    clock.now += 10
    bar.update(1)
    assert out.getvalue().splitlines()[-1] == \
        "calibrate: 7/8 prompts (88%), 10s elapsed, ~10s left"  # rate of this run only


def test_disabled_progress_prints_nothing(capsys):
    bar = progress(total=3, desc="x", enabled=False)
    bar.update(3)
    bar.close()
    assert list(progress(range(2), enabled=False)) == [0, 1]
    assert capsys.readouterr().err == ""


def test_calibrate_to_a_log_file_prints_progress_lines(tiny_dir, tmp_path):
    BUNDLED_PROMPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "configs", "prompts", "coco2017_val_first1024.txt")

    log = tmp_path / "log.txt"
    env = {**os.environ, "MIXDQ_PROGRESS_INTERVAL": "0", "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as f:
        proc = subprocess.run(
            [sys.executable, "-m", "quant", "calibrate", "--model", str(tiny_dir), "--device",
             "cpu", "--prompts", BUNDLED_PROMPTS, "--num-prompts", "4", "--batch-size", "2",
             "--out", str(tmp_path / "calib")], stdout=f, stderr=subprocess.STDOUT, env=env,
            timeout=300)
    text = log.read_text()
    assert proc.returncode == 0, text
    lines = [line for line in text.splitlines() if line.startswith("calibrate: ")]
    assert lines[0] == "calibrate: 0/4 prompts (0%), 0s elapsed"
    assert lines[1].startswith("calibrate: 2/4 prompts (50%), ")
    assert lines[-1].startswith("calibrate: 4/4 prompts (100%), ") and lines[-1].endswith(
        ", done")
    assert "\r" not in text  # no terminal bar redraws in a log
