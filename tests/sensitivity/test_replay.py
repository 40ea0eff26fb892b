"""Block caching must reproduce the stock UNet forward exactly, perturbed or not."""

import pytest
import torch

from quant.errors import MixDQError
from quant.sensitivity.replay import (TOP_LEVEL, Replay, ReplayEngine, run_unet,
                                      unit_candidates)
from quant.structure import quantizable_layers


@pytest.fixture
def setup(pipe, calib):
    batches = list(calib.batches(4))
    layers = list(quantizable_layers(pipe.unet))
    return pipe.unet, batches, layers


def distinct_starts(engine, layers):
    """One layer per distinct replay set: every place the engine can start from."""
    seen = {}
    for name in layers:
        seen.setdefault(engine.trace.replay_set(name), name)
    return list(seen.values())


@torch.no_grad()
def test_replayed_forward_equals_stock_forward_bit_for_bit(setup):
    unet, batches, layers = setup
    engine = ReplayEngine(unet, batches, layers)
    base = engine.record()
    for batch, y in zip(batches, base):
        assert torch.equal(y, batch["output"])  # the engine reproduces the recorded outputs
    starts = distinct_starts(engine, layers)
    assert len(starts) > 40
    for name in starts:
        with engine.replaying(name):
            outs = [engine.run(i) for i in range(len(batches))]
        for y, ref in zip(outs, base):
            assert torch.equal(y, ref), name
    # conv_out runs alone: everything before it replays.
    assert engine.trace.replay_set("conv_out")[-1] == "conv_act"
    assert "conv_in" not in engine.trace.replay_set("conv_in")


@torch.no_grad()
@pytest.mark.parametrize("containers", [None, TOP_LEVEL])
def test_perturbed_layer_replayed_equals_full_forward(setup, containers):
    unet, batches, layers = setup
    kwargs = {} if containers is None else {"containers": containers}
    engine = ReplayEngine(unet, batches, layers, **kwargs)
    base = engine.record()
    starts = distinct_starts(engine, layers)
    picked = ["conv_in", "time_embedding.linear_1", "conv_out"] + starts[3::6]
    for name in picked:
        handle = unet.get_submodule(name).register_forward_hook(lambda m, a, o: o * 1.01 + 0.01)
        try:
            full = [run_unet(unet, b) for b in batches]
            with engine.replaying(name):
                replayed = [engine.run(i) for i in range(len(batches))]
        finally:
            handle.remove()
        for y, ref, b in zip(replayed, full, base):
            assert torch.equal(y, ref), name
            assert not torch.equal(y, b), name  # the perturbation did reach the output


def test_units_follow_the_naming_rule_and_are_restored(setup):
    unet, batches, layers = setup
    names = unit_candidates(unet)
    assert "down_blocks.1" in names and "mid_block" in names and "conv_in" in names
    assert "down_blocks.1.attentions.0.transformer_blocks.0" in names
    assert "up_blocks.0.resnets.2" in names and "down_blocks" not in names
    assert unit_candidates(unet, ())[:3] == ["conv_in", "time_proj", "time_embedding"]
    top = unit_candidates(unet, TOP_LEVEL)
    assert "down_blocks.0" in top and "up_blocks.2" in top and "mid_block" in top
    assert not any(".resnets." in u for u in top)
    late = [n for n in layers if n.startswith("up_blocks.2")]
    engine = ReplayEngine(unet, batches, late)
    needed = engine.needed_units()
    # Only units that finish before some late layer are cached, and never a unit inside one
    # that is cached whole.
    assert "down_blocks.1" in needed and "down_blocks.1.resnets.0" not in needed
    engine.record()
    name = "up_blocks.2.resnets.1.conv1"
    before = {n: unet.get_submodule(n) for n in engine.trace.replay_set(name)}
    with engine.replaying(name) as units:
        swapped = unet.get_submodule(units[0])
        assert isinstance(swapped, Replay)
        # Attribute reads reach the replaced block (diffusers' forward reads them).
        assert len(unet.get_submodule("up_blocks.0").resnets) == 3
    for n, module in before.items():
        assert unet.get_submodule(n) is module
    assert not any(isinstance(m, Replay) for m in unet.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in unet.modules()
                   if m is not unet)


def test_replay_needs_record_and_known_layers(setup):
    unet, batches, layers = setup
    engine = ReplayEngine(unet, batches, layers[:3])
    with pytest.raises(MixDQError, match="record"):
        with engine.replaying(layers[1]):
            pass
    with pytest.raises(MixDQError, match="not called"):
        engine.trace.replay_set("no.such.layer")
    with pytest.raises(MixDQError, match="no calibration batches"):
        ReplayEngine(unet, [], layers)
