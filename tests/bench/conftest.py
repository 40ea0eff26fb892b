"""Fixtures for the benchmark tests: small local metric networks and a weight-rounded variant."""

import os

import pytest
import torch
from torch import nn


class SmallExtractor(nn.Module):
    """A deterministic stand-in for Inception: fixed random conv features, average-pooled.

    Takes uint8 ``[N, 3, H, W]`` like the real one and returns ``[N, 16]``.
    """

    num_features = 16

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 16, 5, stride=2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.2)
            self.conv.bias.copy_(torch.randn(16, generator=g) * 0.1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 127.5 - 1.0
        return torch.tanh(self.conv(x)).mean((2, 3))


@pytest.fixture
def extractor():
    return SmallExtractor().eval()


@pytest.fixture(scope="session")
def coco_prompts(bundled_data):
    """The first 16 bundled COCO val2017 captions, as the prompt loader reads them."""
    from quant.calib.prompts import load_prompts

    return load_prompts(os.path.join(bundled_data, "coco_captions_val2017.json"), num_prompts=16)


@pytest.fixture(scope="session")
def tiny_clip_dir(bundled_data, tmp_path_factory):
    """A tiny random CLIPModel + CLIPProcessor (the shipped CLIP tokenizer) saved as a folder."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer

    try:  # transformers 5: the PIL backend, which needs no torchvision
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor as ImageProcessor

    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(bundled_data, "clip_tokenizer"),
                                              model_max_length=77)
    image_processor = ImageProcessor(size={"shortest_edge": 32},
                                            crop_size={"height": 32, "width": 32})
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    torch.manual_seed(0)
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, projection_dim=16)
    config = CLIPConfig(text_config=dict(vocab_size=49408, max_position_embeddings=77, **common),
                        vision_config=dict(image_size=32, patch_size=8, **common),
                        projection_dim=16)
    path = tmp_path_factory.mktemp("clip")
    CLIPModel(config).eval().save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _quantize(tiny_dir, prompts, calib_dir, out_dir, preset):
    """The real path: record calibration, quantize the UNet with a preset, save a checkpoint."""
    from quant.bitmap import BitMap
    from quant.calib import CalibrationData, record_calibration
    from quant.checkpoint import save_quantized
    from quant.models import load_fp_pipeline
    from quant.quantize import quantize_unet
    from quant.structure import quantizable_layers

    pipe = load_fp_pipeline(str(tiny_dir), device="cpu")
    if not (calib_dir / "manifest.json").exists():
        record_calibration(pipe, prompts, calib_dir, batch_size=4, model_name=str(tiny_dir),
                           progress=False)
    data = CalibrationData(calib_dir)
    bit_map = BitMap.preset(quantizable_layers(pipe.unet), preset)
    quantize_unet(pipe.unet, bit_map, list(data.batches(4)), progress=False)
    return save_quantized(pipe.unet, out_dir, base_model=str(tiny_dir))


@pytest.fixture(scope="session")
def quant_dirs(tiny_dir, coco_prompts, tmp_path_factory):
    """W8A8 and W4A8 checkpoints of the tiny UNet, calibrated on 8 COCO prompts."""
    root = tmp_path_factory.mktemp("quantized")
    return {preset: _quantize(tiny_dir, coco_prompts[8:16], root / "calib", root / preset,
                              preset) for preset in ("W8A8", "W4A8")}
