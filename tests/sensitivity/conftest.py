"""Fixtures of the sensitivity tests: one recorded tiny calibration folder per session."""

import pytest

PROMPTS = ["a red bus on a street", "two cats on a sofa", "a bowl of fruit on a table",
           "a snowy mountain", "a man riding a horse", "a dog on the grass",
           "a plate of food", "a boat on the water"]


@pytest.fixture(scope="session")
def calib_dir(tiny_dir, tmp_path_factory):
    """8 prompts, 1 step, no guidance (SDXL-Turbo's setting), recorded from the tiny pipeline."""
    from quant.calib.record import record_calibration
    from quant.models import load_fp_pipeline

    pipe = load_fp_pipeline(str(tiny_dir), device="cpu")
    out = tmp_path_factory.mktemp("sens-calib") / "calib"
    return record_calibration(pipe, PROMPTS, out, steps=1, batch_size=4, seed=42,
                              model_name="tiny", progress=False)


@pytest.fixture
def pipe(tiny_dir):
    """A fresh tiny pipeline (sensitivity swaps its UNet's layers in place)."""
    from quant.models import load_fp_pipeline

    return load_fp_pipeline(str(tiny_dir), device="cpu")


@pytest.fixture
def calib(calib_dir):
    from quant.calib import CalibrationData

    return CalibrationData(calib_dir)
