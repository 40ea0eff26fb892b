"""Classifier-free guidance end to end: doubled batch, empty negative prompt, BOS-aware W8A8."""

import pytest
import torch

from quant.structure import is_cross_attention_kv, quantizable_layers

PROMPTS = ["a red bus on a street", "two cats on a sofa", "a bowl of fruit on a table",
           "a snowy mountain"]


@pytest.mark.slow
@pytest.mark.parametrize("model,guidance", [("tiny-sdxl", 3.0), ("tiny-sd15", 2.0)])
def test_guided_calibrate_quantize_generate(model, guidance, tmp_path):
    from quant.calib import CalibrationData
    from quant.calib.record import record_calibration
    from quant.multistep import quantize_and_measure
    from quant.generate import generate
    from quant.models import load_fp_pipeline
    from quant.models.tiny_families import tiny_family_path

    pipe = load_fp_pipeline(str(tiny_family_path(model, tmp_path / "cache")), device="cpu")
    out = record_calibration(pipe, PROMPTS, tmp_path / "calib", steps=2, guidance=guidance,
                             batch_size=4, model_name=model, progress=False)
    calib = CalibrationData(out)
    assert calib.cfg and len(calib) == 4 * 2 * 2
    batch = next(calib.batches(16))
    assert int(batch["cond"].sum()) == 8  # half the rows are unconditional
    # The empty negative prompt is encoded, so its first (BOS) row is every prompt's BOS row.
    ehs = batch["encoder_hidden_states"]
    assert torch.allclose(ehs[:, 0], ehs[:1, 0].expand_as(ehs[:, 0]), atol=1e-5)
    fp_images = generate(pipe, PROMPTS, steps=2, guidance=guidance, output_type="pt")

    result = quantize_and_measure(pipe.unet, calib, w_bits=8, a_bits=8, bos=True)
    assert result.reduction == "minmax" and len(result.per_step_db) == 2
    assert result.sqnr_db > 15.0, result  # measured ~20 dB

    from quant.bitmap import BitMap
    from quant.quantize import quantize_unet

    names = list(quantizable_layers(pipe.unet))
    quantize_unet(pipe.unet, BitMap.uniform(names, 8, 8), calib.batches(8), bos=True,
                  progress=False)
    kv = [n for n, m in quantizable_layers(pipe.unet).items() if is_cross_attention_kv(n)]
    assert kv and all(quantizable_layers(pipe.unet)[n].bos_row is not None for n in kv)
    images = generate(pipe, PROMPTS, steps=2, guidance=guidance, output_type="pt")
    assert images.shape == (4, 3, 64, 64) and bool(torch.isfinite(images).all())
    err = float((images - fp_images).abs().mean())
    assert 0.0 < err < 0.05, err  # the quantized UNet changes the images, a little
