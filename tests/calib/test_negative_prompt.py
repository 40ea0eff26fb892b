"""A negative prompt reaches the unconditional rows, the calibration's settings and regeneration."""

import torch

from quant.calib import CalibrationData
from quant.calib.record import finished_run, record_calibration


def test_negative_prompt_is_recorded_and_reproduced(pipe, tmp_path):
    prompts = ["a dog on a beach", "a red car"]
    args = dict(steps=1, guidance=3.0, batch_size=2, progress=False)
    out = record_calibration(pipe, prompts, tmp_path / "neg", negative_prompt="blurry, dark",
                             **args)
    data = CalibrationData(out)
    assert data.manifest["settings"]["negative_prompt"] == "blurry, dark"
    assert data.generate_kwargs()["negative_prompt"] == "blurry, dark"
    batch = next(data.batches(len(data)))
    uncond = ~batch["cond"]
    negative = pipe.encode_prompt("blurry, dark", device="cpu",
                                  do_classifier_free_guidance=False)[0]
    empty = pipe.encode_prompt("", device="cpu", do_classifier_free_guidance=False)[0]
    ehs = batch["encoder_hidden_states"][uncond]
    assert torch.allclose(ehs, negative.expand_as(ehs), atol=1e-5)
    assert not torch.allclose(ehs, empty.expand_as(ehs), atol=1e-3)
    settings = dict(steps=1, guidance=3.0, resolution=None, batch_size=2, seed=42,
                    model_name="unknown")
    assert finished_run(out, prompts, negative_prompt="blurry, dark", **settings)
    assert not finished_run(out, prompts, **settings)  # another negative prompt: not this run
    # without one, nothing is added to the settings (older calibrations stay valid)
    plain = CalibrationData(record_calibration(pipe, prompts[:1], tmp_path / "plain", **args))
    assert "negative_prompt" not in plain.manifest["settings"]
    assert "negative_prompt" not in plain.generate_kwargs()
