"""Activation-range calibration (quant.calib.ranges): moving averages, hooks, BOS rows."""

import pytest
import torch
from torch import nn

from quant.bitmap import BitMap
from quant.calib.ranges import calibrate_activations
from quant.errors import MixDQError
from quant.quantize import prepare
from quant.quantizer import fake_quantize_weight


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(8, 16)
        self.b = nn.Linear(16, 4)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)) - 0.1)


def _prepared(w=8, a=8):
    net = Net()
    return prepare(net, BitMap.uniform(["a", "b"], w, a))


def _hook_count(model):
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


def test_moving_average_and_zero_inclusion():
    net = _prepared()
    xs = [torch.rand(4, 8) * 2 + 1, torch.rand(4, 8) * 5 + 0.5, torch.rand(4, 8) + 3]
    with torch.no_grad(), calibrate_activations(net, momentum=0.9) as cal:
        for x in xs:
            net(x)
    hi = float(xs[0].max())  # inputs are positive: the range starts at 0
    for x in xs[1:]:
        hi = 0.9 * hi + 0.1 * float(x.max())
    (got_lo, got_hi), = net.a.act_range
    assert got_lo == 0.0 and got_hi == pytest.approx(hi, rel=1e-6)
    assert cal.ranges["a"] == net.a.act_range


def test_momentum_zero_keeps_the_last_call_and_bad_momentum_fails():
    net = _prepared()
    with torch.no_grad(), calibrate_activations(net, momentum=0.0):
        net(torch.full((1, 8), -3.0))
        net(torch.full((1, 8), 2.0))
    assert net.a.act_range == [(0.0, 2.0)]
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(MixDQError, match="momentum"):
            calibrate_activations(net, momentum=bad)


def test_ranges_are_gathered_with_weights_quantized():
    net = _prepared(w=2, a=8)
    x = torch.randn(16, 8)
    with torch.no_grad(), calibrate_activations(net):
        net(x)
        w_hat = fake_quantize_weight(net.a.weight, 2)
        mid = torch.relu(nn.functional.linear(x, w_hat, net.a.bias)) - 0.1
    assert net.b.act_range == [(min(float(mid.min()), 0.0), max(float(mid.max()), 0.0))]


def test_activation_quantization_is_off_inside_and_restored():
    net = _prepared()
    net.b.enable(act=False)
    x = torch.randn(3, 8)
    seen = []
    with torch.no_grad(), calibrate_activations(net):
        seen.append((net.a.a_enabled, net.b.a_enabled))
        net(x)
    assert seen == [(False, False)]
    assert (net.a.a_enabled, net.b.a_enabled) == (True, False)


def test_hooks_removed_on_exit_and_on_exception():
    net = _prepared()
    before = _hook_count(net)
    with torch.no_grad(), calibrate_activations(net):
        assert _hook_count(net) == before + 2
        net(torch.randn(2, 8))
    assert _hook_count(net) == before
    fresh = _prepared()
    with pytest.raises(RuntimeError, match="boom"):
        with torch.no_grad(), calibrate_activations(fresh):
            fresh(torch.randn(2, 8))
            raise RuntimeError("boom")
    assert _hook_count(fresh) == before
    assert fresh.a.act_range is None and fresh.a.a_enabled  # nothing half-applied


def test_needs_quantized_layers():
    with pytest.raises(MixDQError, match="no quantized layers"):
        calibrate_activations(Net())


class CrossKV(nn.Module):
    """A key projection fed with text embeddings (BOS row first)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.to_k = nn.Linear(12, 6)

    def forward(self, text):
        return self.to_k(text)


def _kv(bos=True):
    net = CrossKV()
    prepare(net, BitMap.uniform(["to_k"], 8, 8), bos=False)
    net.to_k.bos = bos  # a bare Linear is not a diffusers cross-attention: set the flag directly
    return net


def _text(batch, seed, bos_row):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(batch, 5, 12, generator=g)
    t[:, 0] = bos_row
    return t


def test_bos_row_is_excluded_and_precomputed():
    bos_row = torch.linspace(-300, 200, 12)  # CLIP-like outlier on the first token
    net = _kv()
    texts = [_text(2, s, bos_row) for s in range(3)]
    with torch.no_grad(), calibrate_activations(net, momentum=0.0):
        for t in texts:
            net(t)
    (lo, hi), = net.to_k.act_range
    assert lo == float(texts[-1][:, 1:].min()) and hi == float(texts[-1][:, 1:].max())
    fp = nn.functional.linear(bos_row[None], net.to_k.weight, net.to_k.bias)[0]
    torch.testing.assert_close(net.to_k.bos_row, fp, rtol=0, atol=1e-4)
    with torch.no_grad():
        y = net(texts[0])
    assert torch.equal(y[:, 0], net.to_k.bos_row.expand(2, -1))


def test_bos_row_that_changes_between_prompts_is_an_error():
    net = _kv()
    bos_row = torch.randn(12)
    with pytest.raises(MixDQError, match="layer to_k: the first \\(BOS\\) token's text embedding "
                                         "differs between calibration samples"):
        with torch.no_grad(), calibrate_activations(net):
            net(_text(2, 0, bos_row))
            net(_text(2, 1, torch.zeros(12)))  # e.g. a zeroed negative prompt


def test_without_bos_the_first_token_counts():
    net = _kv(bos=False)
    t = _text(2, 0, torch.full((12,), 50.0))
    with torch.no_grad(), calibrate_activations(net):
        net(t)
    assert net.to_k.act_range[0][1] == 50.0 and net.to_k.bos_row is None
