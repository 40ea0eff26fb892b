"""Timestep-dependent activation ranges: gathered per step, chosen by the call's timestep."""

import pytest
import torch

from quant.bitmap import BitMap
from quant.calib.ranges import calibrate_activations
from quant.errors import MixDQError
from quant.quantize import prepare, quantize_unet
from quant.steps import StepClock, install_clock, remove_clock, split_by_step


class _Net(torch.nn.Module):
    """A UNet stand-in: ``forward(sample, timestep, encoder_hidden_states)``."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 4)

    def forward(self, sample, timestep, encoder_hidden_states=None, return_dict=False):
        return (self.a(sample),)


def _batches():
    # step 0 (timestep 999): inputs up to 1; step 1 (timestep 499): inputs up to 8
    rows = torch.tensor([[1.0, 0.5, -0.5, 0.0], [8.0, 4.0, -2.0, 0.0],
                         [0.5, 1.0, -1.0, 0.0], [4.0, 8.0, -1.0, 0.0]])
    step = torch.tensor([0, 1, 0, 1])
    timestep = torch.tensor([999.0, 499.0, 999.0, 499.0])
    return [{"sample": rows, "timestep": timestep, "encoder_hidden_states": torch.zeros(4, 1, 2),
             "step": step, "output": rows}]


def test_clock_picks_the_nearest_calibrated_timestep():
    clock = StepClock([999.0, 749.0, 499.0, 259.0])
    for t, index in ((999, 0), (torch.tensor(760.0), 1), (torch.tensor([500, 500]), 2),
                     (0, 3), (None, None)):
        clock.set_timestep(t)
        assert clock.index == index
    with pytest.raises(MixDQError, match="one UNet call has several timesteps"):
        clock.set_timestep(torch.tensor([999.0, 499.0]))


def test_split_by_step_keeps_rows_and_nested_inputs():
    batch = {**_batches()[0], "added_cond_kwargs": {"time_ids": torch.arange(4.0)[:, None]}}
    parts = split_by_step(batch)
    assert [s for s, _ in parts] == [0, 1]
    assert parts[1][1]["timestep"].tolist() == [499.0, 499.0]
    assert parts[1][1]["added_cond_kwargs"]["time_ids"].flatten().tolist() == [1.0, 3.0]
    assert parts[0][1]["sample"][:, 0].tolist() == [1.0, 0.5]


@torch.no_grad()
def test_per_step_ranges_are_each_steps_own_and_follow_the_timestep():
    torch.manual_seed(0)
    net = quantize_unet(_Net(), BitMap.uniform(["a"], 8, 8), _batches(),
                        range_reduction="minmax", timestep_ranges=True, progress=False)
    layer = net.a
    assert layer.act_range == [(-2.0, 8.0)]  # over every step, as without per-step ranges
    assert layer.step_ranges == [[(-1.0, 1.0)], [(-2.0, 8.0)]]
    assert net.mixdq_step_clock.timesteps == (999.0, 499.0)
    x = torch.tensor([[0.3, -0.7, 0.9, 0.01]])
    net(x, torch.tensor(999))
    scale0 = layer.act_params(8)[0][0]
    y0 = net(x, torch.tensor(999))[0]
    net(x, 499)
    scale1 = layer.act_params(8)[0][0]
    assert float(scale0) == pytest.approx(2.0 / 255) and float(scale1) == pytest.approx(10 / 255)
    # the step-0 range resolves the small input 5x finer: a smaller error than the merged range
    ref = torch.nn.functional.linear(x, layer.weight, layer.bias)
    y1 = net(x, torch.tensor(499))[0]
    assert float((y0 - ref).abs().max()) < float((y1 - ref).abs().max())
    # the deployable form keeps the range over all steps
    assert float(layer.integer_form().act_scale[0]) == pytest.approx(10 / 255)
    remove_clock(net)
    assert not hasattr(net, "mixdq_step_clock")


def test_one_step_calibration_installs_nothing():
    batch = _batches()[0]
    one = {k: v[batch["step"] == 0] for k, v in batch.items()}
    net = quantize_unet(_Net(), BitMap.uniform(["a"], 8, 8), [one], timestep_ranges=True,
                        progress=False)
    assert net.a.step_ranges is None and not hasattr(net, "mixdq_step_clock")


def test_calibration_tracks_steps_only_when_told():
    torch.manual_seed(0)
    net = prepare(_Net(), BitMap.uniform(["a"], 8, 8))
    with torch.no_grad(), calibrate_activations(net, reduction="minmax") as cal:
        cal.step = 3
        net(torch.tensor([[2.0, 0.0, -1.0, 0.0]]), 10)
        cal.step = None
        net(torch.tensor([[5.0, 0.0, -1.0, 0.0]]), 10)
    assert cal.step_ranges == {"a": {3: [(-1.0, 2.0)]}}
    assert cal.ranges == {"a": [(-1.0, 5.0)]}


def test_layer_rejects_ranges_without_a_clock():
    net = prepare(_Net(), BitMap.uniform(["a"], 8, 8))
    with pytest.raises(MixDQError, match="per-step ranges need 1 range"):
        net.a.set_step_ranges([[(0.0, 1.0)]])
    install_clock(net, [1.0])
    net.a.set_step_ranges([[(0.0, 1.0)]], net.mixdq_step_clock)
    assert net.a.step_clock is net.mixdq_step_clock


@pytest.mark.slow
def test_stage_checkpoint_and_pipeline_use_the_per_step_ranges(tmp_path):
    from importlib import resources

    from quant.api import load_pipeline
    from quant.calib import CalibrationData
    from quant.checkpoint import read_config
    from quant.generate import generate
    from quant.multistep import step_sqnr
    from quant.stages import (CalibrateOptions, ModelSpec, QuantizeOptions, calibrate,
                              quantize)

    prompts = str(resources.files("quant.configs").joinpath(
        "prompts/coco2017_val_first1024.txt"))
    model, logs = ModelSpec("tiny", device="cpu"), []
    calib = calibrate(model, CalibrateOptions(prompts=prompts, num_prompts=4, steps=2,
                                              batch_size=4, no_progress=True),
                      tmp_path / "calib", log=logs.append)
    out = quantize(model, QuantizeOptions(w_bits=8, a_bits=8, timestep_ranges=True,
                                          no_progress=True),
                   calib, tmp_path / "q", log=logs.append)
    config = read_config(out)
    assert config["timestep_ranges"] is True and config["range_reduction"] == "minmax"
    assert len(config["step_timesteps"]) == 2 and len(config["sqnr_db_per_step"]) == 2
    assert any(line.startswith("  per step: step 0: ") for line in logs)
    pipe = load_pipeline("tiny", out, device="cpu")
    assert pipe.mixdq_execution == "simulation"
    assert pipe.unet.mixdq_step_clock.timesteps == tuple(config["step_timesteps"])
    # the loaded checkpoint computes what the stage measured, step by step
    total, per_step = step_sqnr(pipe.unet, CalibrationData(calib), 4)
    assert round(total, 4) == config["sqnr_db"]
    assert [round(v, 4) for v in per_step] == config["sqnr_db_per_step"]
    image = generate(pipe, ["a red bus"], steps=2)[0]
    assert image.size == (64, 64) and pipe.unet.mixdq_step_clock.index == 1  # the last step
