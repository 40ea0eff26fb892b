"""Built-in metric networks for the ``tiny`` model: ``--inception tiny`` and ``--clip tiny``.

Like the tiny diffusion model, they have random weights fixed by a seed and are built offline in
a second. Every metric is then computed for real from the generated images, so a run on a laptop
without any downloaded weights exercises the whole benchmark; the numbers measure nothing about
image quality, and the report says so.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TINY = "tiny"
TINY_NOTE = ("'tiny' metric networks are random (seeded) stand-ins: their FID/CLIPScore values "
             "test the pipeline, not image quality")


class TinyFeatureNet(nn.Module):
    """uint8 images ``[N, 3, H, W]`` -> 64 features: resize to 64 px, two random tanh conv
    layers, global average pooling. Deterministic for a given seed."""

    num_features = 64

    def __init__(self, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 32, 5, stride=2, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        with torch.no_grad():
            for conv in (self.conv1, self.conv2):
                fan_in = conv.weight[0].numel()
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator)
                                  / fan_in ** 0.5)
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator) * 0.1)
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 127.5 - 1.0
        x = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False,
                          antialias=True)
        x = torch.tanh(self.conv1(x))  # tanh, not ReLU: no feature is dead for every image
        x = torch.tanh(self.conv2(x))
        return x.mean((2, 3))


def tiny_clip(seed: int = 0):
    """A small random CLIPModel with a processor (the tiny model's offline tokenizer, 32 px
    images), built in memory.

    Returns:
        ``(model, processor)``.
    """
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    from ..models.tokenizer import build_clip_tokenizer

    try:  # transformers 5: the PIL backend needs no torchvision
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor as ImageProcessor

    tokenizer = build_clip_tokenizer()
    processor = CLIPProcessor(
        image_processor=ImageProcessor(size={"shortest_edge": 32},
                                       crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer)
    common = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=2, projection_dim=32)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), max_position_embeddings=77,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **common),
        vision_config=dict(image_size=32, patch_size=8, **common), projection_dim=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
        # A shared offset after both final norms and one projection for both towers: image and
        # text embeddings then share a direction, so scores land in a visible positive range
        # (around 50) and vary with the content, instead of scattering around 0 and clamping.
        with torch.no_grad():
            offset = torch.randn(common["hidden_size"])
            model.vision_model.post_layernorm.bias.copy_(offset)
            model.text_model.final_layer_norm.bias.copy_(offset)
            model.visual_projection.weight.copy_(model.text_projection.weight)
    return model, processor
