"""The converter on the tiny UNet: integer layers against the simulated quantized UNet.

A quantized network is discontinuous: two exact implementations that differ only in float32
rounding of a layer's output can flip an activation's rounding in the next layer, and such flips
spread. So the converted UNet is checked layer by layer on the simulated UNet's own activations
(exact int32 accumulators, outputs equal to float rounding), and as a whole by its accuracy:
as close to the float UNet as the simulation, and closer to the simulation than quantization
noise.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from quant import quantizer
from quant.bitmap import BitMap, LayerBits
from quant.checkpoint import load_quantized, save_quantized
from quant.deploy import CudaGraphUNet, DeployConfig, convert
from quant.errors import MixDQError
from quant.quantize import quantize_unet
from quant.structure import quantizable_layers


def _batch(cfg, seed, batch=2):
    g = torch.Generator().manual_seed(seed)
    ehs = torch.randn(batch, 77, cfg.cross_attention_dim, generator=g)
    ehs[:, 0] = torch.linspace(-3, 3, cfg.cross_attention_dim)  # BOS: the same for all prompts
    time_ids = torch.tensor([64.0, 64.0, 0.0, 0.0, 64.0, 64.0]).repeat(batch, 1)
    return {"sample": torch.randn(batch, 4, cfg.sample_size, cfg.sample_size, generator=g),
            "timestep": torch.tensor(999), "encoder_hidden_states": ehs,
            "added_cond_kwargs": {"text_embeds": torch.randn(batch, 32, generator=g),
                                  "time_ids": time_ids}}


@pytest.fixture(scope="module")
def fp_unet(tiny_dir):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(str(tiny_dir), subfolder="unet").eval()


def _quantize(fp_unet, bit_map):
    calib = [_batch(fp_unet.config, s) for s in (0, 1)]
    # the paper method's layout: conv_shortcut with a weight scale per input slice ([out, 2])
    return quantize_unet(copy.deepcopy(fp_unet), bit_map, calib, weight_scale="minmax",
                         progress=False)


@pytest.fixture(scope="module")
def w8a8(fp_unet):
    return _quantize(fp_unet, BitMap.uniform(quantizable_layers(fp_unet), 8, 8))


def _run(unet, batch):
    with torch.no_grad():
        return unet(**batch, return_dict=False)[0]


def _record(unet, names, batch):
    rec = {}
    hooks = [unet.get_submodule(n).register_forward_hook(
        lambda m, a, o, n=n: rec.__setitem__(n, (a[0], o))) for n in names]
    try:
        _run(unet, batch)
    finally:
        for h in hooks:
            h.remove()
    return rec


def _exact_accumulators(sim, x):
    """The integer sums of a simulated layer, from its own quantizers (int64, channels last)."""
    if sim.bos and x.dim() == 3 and x.shape[1] > 1:
        x = x[:, 1:]
    bits = sim.active_a_bits
    q, _ = sim.quantized_weight(sim.active_w_bits)
    q = q.reshape(sim.weight.shape).double()
    width = sim.weight.shape[1]
    bounds = [(0, width)] if sim.split is None else [(0, sim.split), (sim.split, width)]
    out = []
    for (lo, hi), (scale, zp) in zip(bounds, sim.act_params(bits)):
        if sim.kind == "linear":
            xq = quantizer.quantize_act(x, scale, zp, bits).double() - zp
            out.append(xq @ q.t())
        else:
            xq = quantizer.quantize_act(x[:, lo:hi], scale, zp, bits).double() - zp
            out.append(F.conv2d(xq, q[:, lo:hi], None, sim.stride, sim.padding,
                                sim.dilation).permute(0, 2, 3, 1))
    return out


def test_w8a8_layer_by_layer(fp_unet, w8a8):
    unet, report = convert(copy.deepcopy(w8a8))
    assert report.counts() == {"int8": len(report.layers)}
    assert all(x.engine == "torch reference (cpu)" for x in report.layers)
    names = list(quantizable_layers(w8a8))
    rec = _record(w8a8, names, _batch(fp_unet.config, 5))
    for name in names:
        x, y_sim = rec[name]
        layer = unet.get_submodule(name)
        with torch.no_grad():
            accs, y = layer.accumulators(x), layer(x)
        for acc, want in zip(accs, _exact_accumulators(w8a8.get_submodule(name), x)):
            assert torch.equal(acc.double(), want), name
        assert quantizer.sqnr_db(y_sim, y) > 90, name


def _accuracy(fp_unet, sim, deployed, seed=7):
    batch = _batch(fp_unet.config, seed)
    y_fp, y_sim, y_int = _run(fp_unet, batch), _run(sim, batch), _run(deployed, batch)
    return (quantizer.sqnr_db(y_fp, y_sim), quantizer.sqnr_db(y_fp, y_int),
            quantizer.sqnr_db(y_sim, y_int))


def test_conv_shortcut_deploys_with_a_weight_scale_per_slice(fp_unet, w8a8):
    """Slice i of the split GEMM uses column i of the [out, 2] weight scale: exact integer sums
    per slice and the simulated layer's output, for W8 and W4 weights."""
    from quant.structure import concat_splits

    shortcuts = concat_splits(fp_unet, ("conv_shortcut",))
    assert shortcuts
    bits = {n: LayerBits(4 if i % 2 else 8, 8)
            for i, n in enumerate(quantizable_layers(fp_unet))}
    mixed = _quantize(fp_unet, BitMap(bits))
    for sim_unet in (w8a8, mixed):
        unet, report = convert(copy.deepcopy(sim_unet))
        rec = _record(sim_unet, list(shortcuts), _batch(fp_unet.config, 9))
        for name in shortcuts:
            sim, layer = sim_unet.get_submodule(name), unet.get_submodule(name)
            assert sim.split_weight and tuple(layer.weight_scale.shape) == (layer.out_channels, 2)
            assert not torch.equal(layer.weight_scale[:, 0], layer.weight_scale[:, 1])
            assert len(layer.parts) == 2
            x, y_sim = rec[name]
            with torch.no_grad():
                accs, y = layer.accumulators(x), layer(x)
            for acc, want in zip(accs, _exact_accumulators(sim, x)):
                assert torch.equal(acc.double(), want), name
            assert quantizer.sqnr_db(y_sim, y) > 90, name
            # one scale for both slices (the old layout) would not reproduce the simulation
            wrong = layer.weight_scale[:, :1].expand(-1, 2).contiguous()
            for i in range(2):
                setattr(layer, f"slice_scale_{i}", wrong[:, i].contiguous())
            with torch.no_grad():
                assert quantizer.sqnr_db(y_sim, layer(x)) < 60, name


def test_w8a8_whole_unet(fp_unet, w8a8):
    deployed, _ = convert(copy.deepcopy(w8a8))
    sim_db, int_db, agree_db = _accuracy(fp_unet, w8a8, deployed)
    assert abs(int_db - sim_db) < 1.0
    assert agree_db > sim_db + 3  # differences well below the quantization noise


def test_int_mm_backend_is_bit_identical(fp_unet, w8a8):
    batch = _batch(fp_unet.config, 3)
    a, _ = convert(copy.deepcopy(w8a8), DeployConfig(backend="int_mm"))
    b, _ = convert(copy.deepcopy(w8a8), DeployConfig(backend="kernels"))
    assert torch.equal(_run(a, batch), _run(b, batch))


def test_mixed_bits_paths_and_fallbacks(fp_unet):
    names = list(quantizable_layers(fp_unet))
    bits = {n: LayerBits(4, 8) for n in names}
    bits["conv_in"] = LayerBits(8, None)       # a protected activation
    bits["conv_out"] = LayerBits(None, None)   # left in floating point
    kv = next(n for n in names if n.endswith("attn2.to_k"))
    bits[kv] = LayerBits(2, 8)                 # 2-bit weights ride the int4 kernel
    ff = next(n for n in names if n.endswith("ff.net.2"))
    bits[ff] = LayerBits(6, 6)                 # 6-bit weights in int8, 6-bit activations
    sim = _quantize(fp_unet, BitMap(bits))
    deployed, report = convert(copy.deepcopy(sim))
    rows = {x.name: x for x in report.layers}
    assert rows["conv_in"].path == "simulated" and "input kept in floating point" in \
        rows["conv_in"].reason
    assert rows["conv_out"].path == "float"
    assert rows[kv].path == "int4" and rows[ff].path == "int8"
    assert report.counts()["int4"] == len(names) - 3
    assert type(deployed.get_submodule("conv_in")) is type(sim.get_submodule("conv_in"))
    sim_db, int_db, agree_db = _accuracy(fp_unet, sim, deployed)
    assert abs(int_db - sim_db) < 1.0 and agree_db > sim_db + 3
    text = report.format()
    assert "conv_in" in text and "int4: " in text.splitlines()[-1]


def test_int4_storage_is_packed(w8a8, fp_unet):
    names = list(quantizable_layers(fp_unet))
    w4 = _quantize(fp_unet, BitMap.uniform(names, 4, 8))
    _, r8 = convert(copy.deepcopy(w8a8), DeployConfig(channels_last=False))
    _, r4 = convert(w4, DeployConfig(channels_last=False))
    weights = sum(m.weight.numel() for m in quantizable_layers(fp_unet).values())
    fp16 = 2 * weights
    b8, b4 = sum(x.bytes for x in r8.layers), sum(x.bytes for x in r4.layers)
    # the tiny model's narrow layers pay relatively more for padding and per-channel vectors
    assert b8 < 0.6 * fp16 and b4 < 0.7 * b8


def test_from_checkpoint(fp_unet, w8a8, tmp_path):
    save_quantized(w8a8, tmp_path / "ckpt", base_model="tiny")
    loaded = load_quantized(copy.deepcopy(fp_unet), tmp_path / "ckpt")
    a, _ = convert(loaded)
    b, _ = convert(copy.deepcopy(w8a8))
    batch = _batch(fp_unet.config, 9)
    assert torch.equal(_run(a, batch), _run(b, batch))


def test_errors(fp_unet, tmp_path):
    with pytest.raises(MixDQError, match="no quantized layers"):
        convert(copy.deepcopy(fp_unet))
    with pytest.raises(MixDQError, match="unknown deploy backend"):
        DeployConfig(backend="cutlass")
    if not torch.cuda.is_available():
        with pytest.raises(MixDQError, match="CUDA"):
            CudaGraphUNet(fp_unet)


def test_report_save(w8a8, tmp_path):
    _, report = convert(copy.deepcopy(w8a8))
    report.save(tmp_path / "deploy.json")
    import json

    data = json.loads((tmp_path / "deploy.json").read_text())
    assert data["counts"] == {"int8": len(report.layers)}
    assert {"name", "path", "engine", "reason", "bytes"} <= set(data["layers"][0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_graph_matches_eager(fp_unet, w8a8):
    deployed, _ = convert(copy.deepcopy(w8a8).cuda().half())
    graphed = CudaGraphUNet(deployed)
    for seed in (1, 2):
        batch = {k: (v.cuda().half() if torch.is_tensor(v) and v.is_floating_point() else
                     {kk: vv.cuda().half() for kk, vv in v.items()} if isinstance(v, dict) else
                     v.cuda()) for k, v in _batch(fp_unet.config, seed).items()}
        eager = _run(deployed, batch)
        assert torch.equal(graphed(**batch, return_dict=False)[0], eager)
    assert graphed.config is deployed.config and len(graphed._graphs) == 1
