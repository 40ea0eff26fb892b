"""The measured final pick on tiny: candidates rated on generated images against full precision."""

import pytest
import torch

from quant.bitalloc import AllocConfig, Budget, allocate
from quant.bitalloc.pick import ImageScore
from quant.bitalloc.synthetic import layer_sizes, synthetic_table
from quant.errors import MixDQError
from quant.structure import quantizable_layers

PROMPTS = ["a red bus on a street", "a cat on a sofa", "a bowl of fruit", "a boat on a lake"]


def _batches(pipe):
    import tempfile
    from pathlib import Path

    from quant.calib import CalibrationData, record_calibration

    with tempfile.TemporaryDirectory() as tmp:
        record_calibration(pipe, PROMPTS, Path(tmp) / "c", batch_size=4, progress=False)
        return list(CalibrationData(Path(tmp) / "c").batches(4))


@pytest.mark.slow
def test_measured_pick_rates_weights_then_activations_on_four_images(tiny_pipe):
    pipe = tiny_pipe
    weight_sizes, act_sizes = layer_sizes(pipe.unet, pipe.unet.config.sample_size)
    table = synthetic_table(weight_sizes, act_sizes, seed=1)
    before = {n: m.weight.clone() for n, m in quantizable_layers(pipe.unet).items()}
    score = ImageScore(pipe, PROMPTS, _batches(pipe), seed=7)
    assert score.reference.shape[0] == 4
    config = AllocConfig(split_points={"weight": 3, "act": 3})
    alloc = allocate(table, Budget.bits("4"), Budget.bits("6"), config, score=score)
    targets = [m.target for m in score.history]
    assert targets and targets == sorted(targets, key=["weight", "act"].index)
    assert "weight" in targets and "act" in targets
    # the chosen candidate is the best measured one of its target
    for target, result in (("weight", alloc.weight), ("act", alloc.act)):
        rated = [m for m in score.history if m.target == target]
        assert all(0 < m.mse < 1 and -1 < m.ssim < 1 for m in rated)
        assert result.split_ratio in config.ratios(target)
    best_weight = min(m.score for m in score.history if m.target == "weight")
    assert best_weight > 0
    # the UNet is left in float: the same images as before rating
    again = score._images()
    assert torch.allclose(again, score.reference, atol=1e-6)
    for name, layer in quantizable_layers(pipe.unet).items():
        assert layer.active_w_bits is None and layer.active_a_bits is None
        assert torch.equal(layer.weight, before[name])
    with pytest.raises(MixDQError, match="at least 4 prompts"):
        ImageScore(pipe, PROMPTS[:1])
