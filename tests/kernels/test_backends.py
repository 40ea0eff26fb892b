"""The per-layer backend choice on the tiny UNet: measured table, bit-exactness gate, cache,
and the converter's report of which backend runs where."""

import copy
import importlib.util
import json

import pytest
import torch

from quant.bitmap import BitMap
from quant.deploy import DeployConfig, convert
from quant.errors import MixDQError
from quant.kernels import backends as kb
from quant.kernels.modules import IntConv2d, IntLinear, _Gemm
from quant.quantize import quantize_unet
from quant.structure import quantizable_layers

# Triton on the CPU tensors of these tests: under the interpreter (CPU CI), not on GPU machines
HAS_TRITON = importlib.util.find_spec("triton") is not None and kb.triton_available("cpu")
PREFERENCE = {"int_mm": 1.0, "triton_fused": 2.0, "kernels": 3.0, "triton": 4.0}


def _batch(cfg, seed):
    g = torch.Generator().manual_seed(seed)
    return {"sample": torch.randn(1, 4, cfg.sample_size, cfg.sample_size, generator=g),
            "timestep": torch.tensor(999),
            "encoder_hidden_states": torch.randn(1, 77, cfg.cross_attention_dim, generator=g),
            "added_cond_kwargs": {"text_embeds": torch.randn(1, 32, generator=g),
                                  "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}}


class _Net(torch.nn.Module):
    """A few integer layers of the kinds the UNet has (small: Triton runs interpreted on CPU)."""

    def __init__(self):
        super().__init__()
        from torch import nn

        from quant.deploy import build_integer_layer
        from quant.qmodules import QuantConv2d, QuantLinear

        torch.manual_seed(0)
        sims = {"fc": (QuantLinear.from_module(nn.Linear(24, 40), 8, 8, weight_scale="minmax"),
                       torch.randn(2, 9, 24)),
                "fc4": (QuantLinear.from_module(nn.Linear(40, 16), 4, 8, weight_scale="minmax"),
                        torch.randn(2, 9, 40)),
                "conv": (QuantConv2d.from_module(nn.Conv2d(16, 8, 3, 1, 1), 8, 8,
                                                 weight_scale="minmax"), torch.randn(1, 16, 6, 5)),
                "pw": (QuantConv2d.from_module(nn.Conv2d(8, 16, 1), 8, 8, weight_scale="minmax"),
                       torch.randn(1, 8, 6, 5))}
        for name, (sim, x) in sims.items():
            sim.set_act_range([(float(x.min()), float(x.max()))])
            self.add_module(name, build_integer_layer(sim.integer_form()))

    def forward(self, x, xc):
        return self.fc4(self.fc(x)), self.pw(self.conv(xc))


def _net_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(2, 9, 24, generator=g), "xc": torch.randn(1, 16, 6, 5, generator=g)}


@pytest.fixture(scope="module")
def w8a8(tiny_dir):
    from diffusers import UNet2DConditionModel

    fp = UNet2DConditionModel.from_pretrained(str(tiny_dir), subfolder="unet").eval()
    sim = quantize_unet(copy.deepcopy(fp), BitMap.uniform(quantizable_layers(fp), 8, 8),
                        [_batch(fp.config, 0)], weight_scale="minmax", progress=False)
    return convert(sim)


def _fake_timer(calls):
    def timer(fn, backend):
        fn()
        calls.append(backend)
        return PREFERENCE[backend]
    return timer


def test_tune_picks_fastest_and_caches(tmp_path):
    net = _Net()
    inputs = _net_inputs(1)
    with torch.no_grad():
        want = net(**inputs)
    calls = []
    cache = tmp_path / "backends.json"
    choice = kb.tune_backends(net, inputs, cache=cache, timer=_fake_timer(calls))
    assert set(choice.layers) == {"fc", "fc4", "conv", "pw"}
    expected = {"fc": "int_mm", "pw": "int_mm"}  # int8 pointwise: int_mm applies
    for name in ("fc4", "conv"):                  # int4 / 3x3: it does not
        expected[name] = "triton_fused" if HAS_TRITON else "kernels"
    assert {n: m.backend for n, m in net.named_children()} == expected
    assert {n: b for n, (_, b) in choice.layers.items()} == expected
    assert choice.measured == 4 and not choice.mismatches
    assert calls.count("int_mm") == 2 and calls.count("kernels") == 4
    with torch.no_grad():
        for a, b in zip(net(**inputs), want):
            assert torch.equal(a, b)  # every backend is exact
    text = choice.format()
    assert "int_mm" in text and "layers per backend" in text
    stored = json.loads(cache.read_text())
    assert set(stored[choice.device]) == set(choice.table)
    # a second load with the same shapes measures nothing
    second = kb.tune_backends(_Net(), inputs, cache=cache,
                              timer=lambda fn, b: pytest.fail("cached: nothing to time"))
    assert second.measured == 0 and second.layers == choice.layers


@pytest.mark.skipif(not HAS_TRITON, reason="Triton does not run on CPU tensors here")
def test_mismatching_backend_is_excluded(monkeypatch):
    original = _Gemm.linear

    def broken(self, x, *args):  # a planted bug in one backend: one unit in the last place
        y = original(self, x, *args)
        return torch.nextafter(y, torch.full_like(y, float("inf"))) \
            if self.backend == "triton_fused" else y

    monkeypatch.setattr(_Gemm, "linear", broken)
    calls = []
    choice = kb.tune_backends(_Net(), _net_inputs(2), cache=None, timer=_fake_timer(calls))
    # the linear and pointwise layers run _Gemm.linear; the 3x3 conv does not
    assert sorted(s.split("|")[0] for s, _ in choice.mismatches) == ["conv", "linear", "linear"]
    assert all(b == "triton_fused" for _, b in choice.mismatches)
    assert calls.count("triton_fused") == 1  # timed only on the 3x3 conv
    assert choice.layers["fc4"][1] == "kernels" and choice.layers["conv"][1] == "triton_fused"
    assert "MISMATCH" in choice.format()


def test_tiny_unet_report(w8a8, tmp_path):
    """On the converted tiny UNet: int_mm where it applies, and the report says so."""
    unet, report = copy.deepcopy(w8a8[0]), w8a8[1]
    batch = _batch(unet.config, 1)
    with torch.no_grad():
        want = unet(**batch, return_dict=False)[0]
    choice = kb.tune_backends(unet, batch, backends=["kernels", "int_mm"],
                              cache=tmp_path / "c.json", timer=_fake_timer([]))
    with torch.no_grad():
        assert torch.equal(unet(**batch, return_dict=False)[0], want)
    engines = {r.name: r.engine for r in report.refresh(unet).layers}
    layers = {n: m for n, m in unet.named_modules() if isinstance(m, (IntLinear, IntConv2d))}
    assert set(choice.layers) == set(layers)
    for name, module in layers.items():
        backend = "int_mm" if kb.applicable(module, "int_mm") else "kernels"
        assert module.backend == backend, name
        assert engines[name] == "torch reference (cpu)"  # what runs the ops on CPU


def test_auto_backend_and_errors(w8a8):
    assert kb.default_backend("cpu") == "kernels"
    assert kb.available_backends("cpu")[:2] == ["kernels", "int_mm"]
    assert DeployConfig(backend="auto").backend == "auto"
    assert kb.engine_name("triton_fused", torch.device("cuda"), False, True) == \
        "Triton: fused quantize + GEMM"
    assert kb.engine_name("triton", torch.device("cpu"), True, True).startswith(
        "Triton interpreter (cpu)")
    assert kb.engine_name("int_mm", torch.device("cuda"), False, True) is None
    with pytest.raises(MixDQError, match="unknown backends"):
        kb.tune_backends(_Net(), _net_inputs(1), backends=["cutlass"], cache=None)
    with pytest.raises(MixDQError, match="convert the UNet first"):
        kb.tune_backends(torch.nn.Linear(2, 2), {}, cache=None)
