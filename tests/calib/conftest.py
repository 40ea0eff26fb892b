"""Fixtures of the calibration tests: one shared tiny pipeline and one recorded folder."""

import pytest


@pytest.fixture(scope="module")
def pipe(tiny_dir):
    """A float32 tiny pipeline on CPU shared by a test module (tests must not modify it)."""
    from quant.models import load_fp_pipeline

    return load_fp_pipeline(str(tiny_dir), device="cpu")


PROMPTS = ["a red bus on a street", "two cats on a sofa", "a bowl of fruit", "a snowy mountain",
           "a man riding a horse"]


@pytest.fixture(scope="session")
def calib_prompts():
    """The prompts of the ``recorded`` folder."""
    return list(PROMPTS)


@pytest.fixture(scope="module")
def recorded(pipe, tmp_path_factory):
    """5 prompts, 2 steps, no guidance, shards of 2 prompts (3 shards, the last one short)."""
    from quant.calib.record import record_calibration

    out = tmp_path_factory.mktemp("calib") / "run"
    return record_calibration(pipe, PROMPTS, out, steps=2, batch_size=2, seed=7,
                              model_name="tiny", progress=False)
