"""Multi-step calibration: range reduction by step count, per-step SQNR, every pipeline family.

Measured on the tiny models (8 prompts, W8A8, UNet-output SQNR over all steps; per step in
``scripts/bench_range_reduction.py``): at 4 steps the original's EMA (momentum 0.95, batches in
step order) gives 8.7-9.0 dB on every family - its ranges stay near the first batches' (step 0)
and clip the later steps' larger inputs (steps 3-4 at 5-7 dB); running min/max gives
19.3-20.9 dB. The random tiny UNets do not denoise, so their latents grow ~13x in scale over
4 steps and one range per layer cannot fit every step; one range per step
(``timestep_ranges``, :mod:`quant.steps`) gives 32.5 dB on ``tiny``; see the README.
"""

import pytest
import torch

from quant.calib.ranges import calibrate_activations
from quant.errors import MixDQError

PROMPTS = ["a red bus on a street", "two cats on a sofa", "a bowl of fruit on a table",
           "a snowy mountain", "a man riding a horse", "a dog on the grass",
           "a plate of food", "a boat on the water"]


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.a(x)


def _prepared():
    from quant.bitmap import BitMap
    from quant.quantize import prepare

    torch.manual_seed(0)
    return prepare(_Net(), BitMap.uniform(["a"], 8, 8))


@pytest.mark.parametrize("reduction,steps,expected_hi", [
    ("minmax", None, 8.0),
    ("mean", None, (1.0 + 8.0 + 2.0) / 3),
    ("ema", None, 0.5 * (0.5 * 1.0 + 0.5 * 8.0) + 0.5 * 2.0),
    ("auto", [0, 0, 0], 0.5 * (0.5 * 1.0 + 0.5 * 8.0) + 0.5 * 2.0),  # one step: the EMA
    ("auto", [0, 1, 2], 8.0),  # several steps: min/max
])
def test_reductions(reduction, steps, expected_hi):
    net = _prepared()
    with torch.no_grad(), calibrate_activations(net, momentum=0.5, reduction=reduction) as cal:
        for i, top in enumerate((1.0, 8.0, 2.0)):
            if steps is not None:
                cal.note_steps(torch.tensor([steps[i]]))
            net(torch.tensor([[top, 0.5, 0.25, -1.0]]))
    (lo, hi), = net.a.act_range
    assert hi == pytest.approx(expected_hi) and lo == -1.0
    assert cal.used_reduction == (reduction if reduction != "auto" else
                                  ("minmax" if len(set(steps)) > 1 else "ema"))


def test_bad_reduction_is_one_line():
    with pytest.raises(MixDQError, match="range reduction 'max': use one of auto, ema"):
        calibrate_activations(_prepared(), reduction="max")


@pytest.fixture(scope="module")
def family_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _measure(model, cache, tmp, steps, guidance=0.0, reductions=("auto",),
             timestep_ranges=False):
    from quant.calib import CalibrationData
    from quant.calib.record import record_calibration
    from quant.multistep import quantize_and_measure
    from quant.models import load_fp_pipeline
    from quant.models.tiny import tiny_path
    from quant.models.tiny_families import tiny_family_path

    path = tiny_path(cache_dir=cache) if model == "tiny" else tiny_family_path(model, cache)
    pipe = load_fp_pipeline(str(path), device="cpu")
    out = record_calibration(pipe, PROMPTS, tmp / model, steps=steps, guidance=guidance,
                             batch_size=8, model_name=model, progress=False)
    calib = CalibrationData(out)
    return {r: quantize_and_measure(pipe.unet, calib, reduction=r,
                                    timestep_ranges=timestep_ranges) for r in reductions}


@pytest.mark.slow
def test_four_step_minmax_beats_the_ema(family_cache, tmp_path):
    got = _measure("tiny", family_cache, tmp_path, steps=4, reductions=("ema", "auto"))
    ema, auto = got["ema"], got["auto"]
    assert auto.reduction == "minmax" and len(auto.per_step_db) == 4
    assert ema.sqnr_db < 10.0  # measured 8.8 dB: the last steps clipped
    assert auto.sqnr_db > 18.0 and auto.sqnr_db > ema.sqnr_db + 9.0  # measured 19.3 dB
    assert min(auto.per_step_db) > 12.0 and min(ema.per_step_db) < 6.0


@pytest.mark.slow
def test_four_step_timestep_ranges_reach_25_db(family_cache, tmp_path):
    """The issue's criterion: 4-step tiny W8A8 >= 25 dB where the EMA (and one min/max range
    per layer) give less. Measured: EMA 8.8 dB, min/max 19.5 dB, one range per step 32.5 dB
    (per step 29.6 / 33.8 / 34.1 / 34.3 dB)."""
    per_step = _measure("tiny", family_cache, tmp_path, steps=4, timestep_ranges=True)["auto"]
    baseline = _measure("tiny", family_cache, tmp_path, steps=4, reductions=("ema", "auto"))
    assert per_step.sqnr_db >= 28.0 and min(per_step.per_step_db) > 26.0
    assert baseline["ema"].sqnr_db < 12.0 and baseline["auto"].sqnr_db < 23.0
    assert per_step.sqnr_db > baseline["auto"].sqnr_db + 8.0


@pytest.mark.slow
def test_every_family_within_3_db_of_sdxl_tiny(family_cache, tmp_path):
    """W8A8 UNet-output SQNR at 2 steps, the same settings for every family."""
    results = {m: _measure(m, family_cache, tmp_path, steps=2)["auto"].sqnr_db
               for m in ("tiny", "tiny-sd15", "tiny-sd21", "tiny-sdxl")}
    print(results)
    for sqnr in results.values():
        assert abs(sqnr - results["tiny"]) <= 3.0, results
        assert sqnr > 15.0, results
