"""Images from UNet outputs must be the pipeline's own images."""

import torch

from quant.sensitivity.decode import OneStepDecoder, can_decode_directly, regenerate
from quant.sensitivity.metrics import load_references, to_uint8_levels


def test_one_step_decoder_reproduces_the_reference_pngs(pipe, calib):
    assert can_decode_directly(calib)
    refs = load_references(calib)
    assert refs.shape == (8, 3, 64, 64)
    decoder = OneStepDecoder(pipe, calib)
    images = torch.zeros_like(refs)
    for batch in calib.batches(3):
        index = batch["prompt_index"]
        images[index] = decoder(batch["sample"], batch["output"], index)
    diff = (to_uint8_levels(images) - refs).abs() * 255
    # Undoing scale_model_input is exact up to float rounding: at most one uint8 level, rarely.
    assert float(diff.max()) <= 1.0 + 1e-4
    assert float((diff > 0.5).float().mean()) < 1e-3
    changed = decoder(batch["sample"], batch["output"] * 1.2, batch["prompt_index"])
    assert float((to_uint8_levels(changed) - refs[batch["prompt_index"]]).abs().max()) > 0.02


def test_multi_step_calibration_regenerates_with_the_same_seeds(pipe, tmp_path):
    from quant.calib import CalibrationData
    from quant.calib.record import record_calibration

    prompts = ["a cat on a sofa", "a red bus", "a bowl of fruit"]
    out = record_calibration(pipe, prompts, tmp_path / "c", steps=2, batch_size=2, seed=5,
                             model_name="tiny", progress=False)
    calib = CalibrationData(out)
    assert not can_decode_directly(calib)
    images = regenerate(pipe, calib, batch_size=3)
    diff = (to_uint8_levels(images) - load_references(calib)).abs() * 255
    assert float(diff.max()) <= 1.0 + 1e-4
