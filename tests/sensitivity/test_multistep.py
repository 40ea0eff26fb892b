"""Multi-step, guided sensitivity: the first step's UNet output is reused, the rest recomputed."""

import pytest
import torch

from quant.sensitivity.decode import FirstStepOutputs, regenerate
from quant.sensitivity.metrics import load_references, to_uint8_levels


@pytest.fixture(scope="module")
def guided(tmp_path_factory):
    """tiny-sdxl, 3 steps, guidance 3 (doubled batch, empty negative prompt), 3 prompts."""
    from quant.calib import CalibrationData
    from quant.calib.record import record_calibration
    from quant.models import load_fp_pipeline
    from quant.models.tiny_families import tiny_family_path

    path = tiny_family_path("tiny-sdxl", cache_dir=tmp_path_factory.mktemp("cache"))
    pipe = load_fp_pipeline(str(path), device="cpu")
    out = record_calibration(pipe, ["a cat on a sofa", "a red bus", "a bowl of fruit"],
                             tmp_path_factory.mktemp("c") / "c", steps=3, guidance=3.0,
                             batch_size=2, seed=5, model_name="tiny-sdxl", progress=False)
    return pipe, CalibrationData(out)


def _first_step(pipe, calib):
    first = FirstStepOutputs()
    with torch.no_grad():
        for batch in calib.batches(4, steps=0):
            first.add(batch, pipe.unet(**calib.unet_kwargs(batch), return_dict=False)[0])
    return first


def test_first_step_reuse_matches_full_regeneration_and_skips_one_call(guided):
    pipe, calib = guided
    assert calib.cfg and calib.steps == 3 and len(calib) == 3 * 3 * 2
    first = _first_step(pipe, calib)
    assert len(first.rows) == 6  # 3 prompts x (unconditional, conditional)
    calls = []
    handle = pipe.unet.conv_in.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        reused = regenerate(pipe, calib, batch_size=2, first_step=first)
        n_reused = len(calls)
        calls.clear()
        full = regenerate(pipe, calib, batch_size=2)
    finally:
        handle.remove()
    assert (n_reused, len(calls)) == (2 * 2, 2 * 3)  # 2 pipeline calls: 2 vs 3 UNet calls each
    refs = load_references(calib)
    for images in (reused, full):
        assert float(((to_uint8_levels(images) - refs).abs() * 255).max()) <= 1.0 + 1e-4
    # A perturbed first step must show in the images (the reuse is not ignored).
    for key in first.rows:
        first.rows[key] = first.rows[key] * 1.5
    changed = regenerate(pipe, calib, batch_size=2, first_step=first)
    assert float((changed - full).abs().max()) > 0.02
