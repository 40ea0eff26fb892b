"""The benchmark library behind scripts/bench_sensitivity.py, on the tiny UNet."""

import pytest
import torch

from quant.sensitivity.bench import benchmark, random_batch, sample_layers
from quant.structure import quantizable_layers


def test_sampling_covers_every_block_first_and_last():
    names = ["conv_in", "down_blocks.0.a", "down_blocks.0.b", "down_blocks.0.c",
             "up_blocks.0.a", "mid_block.a", "mid_block.b", "conv_out"]
    assert sample_layers(names, 2) == ["conv_in", "down_blocks.0.a", "down_blocks.0.c",
                                       "mid_block.a", "mid_block.b", "up_blocks.0.a", "conv_out"]
    assert sample_layers(names, 3)[1:4] == ["down_blocks.0.a", "down_blocks.0.b",
                                            "down_blocks.0.c"]


def test_benchmark_on_tiny(pipe):
    unet = pipe.unet
    batch = random_batch(unet, samples=2, latent=16)
    result = benchmark(unet, batch, per_block=2, progress=False)
    blocks = [r.block for r in result.rows]
    assert blocks[0] == "time_embedding" or blocks[0] == "conv_in"
    assert blocks.index("mid_block") < blocks.index("up_blocks.0") and blocks[-1] == "conv_out"
    assert sum(r.layers for r in result.rows) == len(quantizable_layers(unet)) == 263
    totals = result.totals()
    assert totals["evaluations"] == 263 * 5
    # conv_out alone is far cheaper than a full forward, whatever the machine's load.
    assert result.rows[-1].fine_s < result.rows[-1].full_s
    assert result.rows[-1].blocks_s < result.rows[-1].full_s
    text = result.format()
    assert "extrapolated to all 263 layers x 5 evaluations = 1315" in text
    # The sampled layers were restored to float weights.
    assert all(getattr(m, "active_w_bits", None) is None for m in unet.modules())
    assert torch.isfinite(unet(**batch).sample).all()


@pytest.mark.slow
def test_sdxl_random_weights_are_shared_views():
    from quant.sensitivity.bench import sdxl_unet_random

    unet = sdxl_unet_random()
    params = list(unet.parameters())
    assert sum(p.numel() for p in params) == 2_567_463_684
    storage = {p.untyped_storage().data_ptr() for p in params if p.dim() > 1}
    assert len(storage) == 1  # one pool: a few hundred MB instead of 10 GB
