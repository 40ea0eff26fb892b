"""The public API: quantize a pipeline's UNet, save it, load it back as a stock pipeline."""

import pytest
import torch

import quant
from quant.bitmap import BitMap
from quant.checkpoint import save_quantized
from quant.errors import MixDQError
from quant.generate import generate
from quant.structure import quantizable_layers


def _calibration(pipe, prompts, out):
    """Calibration batches recorded from real pipeline calls."""
    from quant.calib import CalibrationData, record_calibration

    record_calibration(pipe, prompts, out, batch_size=4, progress=False, model_name="tiny")
    return list(CalibrationData(out).batches(4))


def _quantize_and_save(pipe, out, preset="W8A8"):
    bit_map = BitMap.preset(quantizable_layers(pipe.unet), preset)
    calib = _calibration(pipe, ["a red bus", "a cat on a sofa", "two dogs in the snow"],
                         out.with_name(out.name + "-calib"))
    quant.quantize_unet(pipe.unet, bit_map, calib, progress=False)
    save_quantized(pipe.unet, out, base_model="tiny")
    return generate(pipe, ["a bird on a wire"], output_type="pt")


def test_load_pipeline_reproduces_the_quantized_pipeline(tiny_dir, tiny_pipe, tmp_path):
    expected = _quantize_and_save(tiny_pipe, tmp_path / "q")
    pipe = quant.load_pipeline(str(tiny_dir), quantized=tmp_path / "q", device="cpu")
    assert type(pipe).__name__ == "StableDiffusionXLPipeline"
    assert pipe.mixdq_execution == "simulation"
    assert len(quantizable_layers(pipe.unet)) == len(quantizable_layers(tiny_pipe.unet))
    assert torch.equal(generate(pipe, ["a bird on a wire"], output_type="pt"), expected)
    # the snippet from the README, as users write it
    image = pipe("a photo of a cat", num_inference_steps=1, guidance_scale=0.0).images[0]
    assert image.size == (64, 64)
    fp = quant.load_pipeline(str(tiny_dir), device="cpu")
    assert fp.mixdq_execution == "full precision"
    assert not torch.equal(generate(fp, ["a bird on a wire"], output_type="pt"), expected)


def test_kernels_on_cpu_is_a_clear_error(tiny_dir, tiny_pipe, tmp_path):
    _quantize_and_save(tiny_pipe, tmp_path / "q")
    with pytest.raises(MixDQError, match="kernels requested but unavailable"):
        quant.load_pipeline(str(tiny_dir), quantized=tmp_path / "q", device="cpu",
                            execution="kernels")
    with pytest.raises(MixDQError, match="unknown execution"):
        quant.load_pipeline(str(tiny_dir), device="cpu", execution="fast")


def test_fused_lora_quantizes_and_reloads(tiny_dir, tiny_lora, tmp_path):
    lora = tiny_lora
    fused = quant.models.load_fp_pipeline(str(tiny_dir), "cpu", lora=str(lora))
    plain = quant.models.load_fp_pipeline(str(tiny_dir), "cpu")
    names = list(quantizable_layers(fused.unet))
    assert names == list(quantizable_layers(plain.unet))  # fused: no adapter modules left
    changed = [n for n in names
               if not torch.equal(fused.unet.get_submodule(n).weight,
                                  plain.unet.get_submodule(n).weight)]
    assert changed and all(n.rsplit(".", 1)[-1] in ("to_q", "to_k", "to_v", "0") for n in changed)
    expected = _quantize_and_save(fused, tmp_path / "q")
    pipe = quant.load_pipeline(str(tiny_dir), quantized=tmp_path / "q", device="cpu",
                               lora=str(lora))
    assert torch.equal(generate(pipe, ["a bird on a wire"], output_type="pt"), expected)
    # the same checkpoint on the model without its LoRA is refused
    with pytest.raises(MixDQError, match="different UNet"):
        quant.load_pipeline(str(tiny_dir), quantized=tmp_path / "q", device="cpu")


def test_bad_lora_is_one_line(tiny_dir, tmp_path):
    pytest.importorskip("peft")
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    with pytest.raises(MixDQError, match="--lora"):
        quant.models.load_fp_pipeline(str(tiny_dir), "cpu", lora=str(tmp_path / "bad.safetensors"))
