"""Merged projections (q/k/v of self-attention, all cross-attention k/v) on the tiny UNet:
bit-identical to the unmerged integer UNet, and the cross-attention K/V computed once per prompt."""

import copy

import pytest
import torch

from quant.bitmap import BitMap, LayerBits
from quant.deploy import DeployConfig, convert
from quant.kernels.merge import MergedProjection, ProjectionGroup, merge_projections
from quant.quantize import quantize_unet
from quant.structure import quantizable_layers


def _batch(cfg, seed, batch=2):
    g = torch.Generator().manual_seed(seed)
    ehs = torch.randn(batch, 77, cfg.cross_attention_dim, generator=g)
    ehs[:, 0] = torch.linspace(-3, 3, cfg.cross_attention_dim)
    time_ids = torch.tensor([64.0, 64.0, 0.0, 0.0, 64.0, 64.0]).repeat(batch, 1)
    return {"sample": torch.randn(batch, 4, cfg.sample_size, cfg.sample_size, generator=g),
            "timestep": torch.tensor(999), "encoder_hidden_states": ehs,
            "added_cond_kwargs": {"text_embeds": torch.randn(batch, 32, generator=g),
                                  "time_ids": time_ids}}


@pytest.fixture(scope="module")
def fp_unet(tiny_dir):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(str(tiny_dir), subfolder="unet").eval()


def _quantized(fp_unet, bit_map):
    return quantize_unet(copy.deepcopy(fp_unet), bit_map, [_batch(fp_unet.config, 0)],
                         weight_scale="minmax", progress=False)


def _run(unet, batch):
    with torch.no_grad():
        return unet(**batch, return_dict=False)[0]


@pytest.mark.parametrize("w_bits", [8, 4])
def test_merged_unet_is_bit_identical(fp_unet, w_bits):
    sim = _quantized(fp_unet, BitMap.uniform(quantizable_layers(fp_unet), w_bits, 8))
    plain, _ = convert(copy.deepcopy(sim))
    merged, report = convert(copy.deepcopy(sim), DeployConfig(merge=True))
    groups = merged.mixdq_merged
    n_attn = sum(1 for n, _ in fp_unet.named_modules() if n.endswith(".attn1"))
    n_cross = sum(1 for n, _ in fp_unet.named_modules() if n.endswith(".attn2"))
    assert n_attn > 0 and n_cross > 0
    selfs = [g for g in groups if not g.keep]
    crosses = [g for g in groups if g.keep]
    assert len(selfs) == n_attn and all(len(g.bounds) == 3 for g in selfs)
    assert len(crosses) == 1 and len(crosses[0].bounds) == 2 * n_cross  # one wide K/V GEMM
    assert sum("merged: " in r.engine for r in report.layers) == 3 * n_attn + 2 * n_cross
    for seed in (1, 2):
        batch = _batch(fp_unet.config, seed)
        assert torch.equal(_run(merged, batch), _run(plain, batch))
    # each projection on its own: the merged slice equals the unmerged layer, bit for bit
    name = next(n for n, m in merged.named_modules() if isinstance(m, MergedProjection)
                and n.endswith("attn2.to_v"))
    x = torch.randn(2, 77, fp_unet.config.cross_attention_dim)
    with torch.no_grad():
        assert torch.equal(merged.get_submodule(name)(x), plain.get_submodule(name)(x))


def test_cross_kv_once_per_prompt(fp_unet):
    sim = _quantized(fp_unet, BitMap.uniform(quantizable_layers(fp_unet), 8, 8))
    plain, _ = convert(copy.deepcopy(sim))
    merged, _ = convert(copy.deepcopy(sim), DeployConfig(merge=True))
    cross = next(g for g in merged.mixdq_merged if g.keep)
    calls = []
    cross.wide.register_forward_hook(lambda *a: calls.append(1))
    batch = _batch(fp_unet.config, 3)
    want = _run(plain, batch)
    assert torch.equal(_run(merged, batch), want) and len(calls) == 1
    batch["sample"] = batch["sample"] + 0.5  # the next denoising step: same prompt embedding
    assert torch.equal(_run(merged, batch), _run(plain, batch)) and len(calls) == 1
    batch["encoder_hidden_states"].mul_(1.5)  # changed in place: recomputed
    assert torch.equal(_run(merged, batch), _run(plain, batch)) and len(calls) == 2
    batch["encoder_hidden_states"] = batch["encoder_hidden_states"].clone()  # a new prompt
    assert torch.equal(_run(merged, batch), _run(plain, batch)) and len(calls) == 3
    with torch.inference_mode():  # no version counters: recomputed per call, still exact
        b2 = _batch(fp_unet.config, 4)
        assert torch.equal(merged(**b2, return_dict=False)[0], plain(**b2, return_dict=False)[0])
        assert torch.equal(merged(**b2, return_dict=False)[0], plain(**b2, return_dict=False)[0])
    assert len(calls) == 5


def test_self_attention_cache_is_released(fp_unet):
    sim = _quantized(fp_unet, BitMap.uniform(quantizable_layers(fp_unet), 8, 8))
    merged, _ = convert(copy.deepcopy(sim), DeployConfig(merge=True))
    _run(merged, _batch(fp_unet.config, 5))
    for g in merged.mixdq_merged:
        assert (g._out is None) != g.keep  # self-attention outputs are not kept alive


def test_unequal_quantizers_do_not_merge(fp_unet):
    names = list(quantizable_layers(fp_unet))
    bits = {n: LayerBits(8, 8) for n in names}
    q = next(n for n in names if n.endswith("attn1.to_q"))
    k_cross = next(n for n in names if n.endswith("attn2.to_k"))
    bits[q] = LayerBits(4, 8)        # int4 storage: cannot share a GEMM with int8 k/v
    bits[k_cross] = LayerBits(8, 6)  # another activation quantizer
    sim = _quantized(fp_unet, BitMap(bits))
    plain, _ = convert(copy.deepcopy(sim))
    merged, _ = convert(copy.deepcopy(sim))
    report = merge_projections(merged)
    group_of = report.group_of
    assert q not in group_of and k_cross not in group_of
    assert q.replace("to_q", "to_k") in group_of and q.replace("to_q", "to_v") in group_of
    assert not isinstance(merged.get_submodule(q), MergedProjection)
    batch = _batch(fp_unet.config, 6)
    assert torch.equal(_run(merged, batch), _run(plain, batch))
    assert all(isinstance(g, ProjectionGroup) for g in merged.mixdq_merged)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_merged_unet_under_cuda_graphs(fp_unet):
    """The wide K/V GEMM is recorded in the graph: a new prompt embedding copied into the
    graph's input buffer gives the unmerged UNet's output, not a cached one."""
    from quant.deploy import CudaGraphUNet

    sim = _quantized(fp_unet, BitMap.uniform(quantizable_layers(fp_unet), 8, 8))
    plain, _ = convert(copy.deepcopy(sim).cuda().half())
    merged, _ = convert(copy.deepcopy(sim).cuda().half(), DeployConfig(merge=True))
    graphed = CudaGraphUNet(merged)

    def cuda(batch):
        return {k: ({kk: vv.cuda().half() for kk, vv in v.items()} if isinstance(v, dict) else
                    v.cuda().half() if v.is_floating_point() else v.cuda())
                for k, v in batch.items()}

    for seed in (7, 8):  # the second call replays with another embedding
        batch = cuda(_batch(fp_unet.config, seed))
        want = _run(plain, batch)
        assert torch.equal(_run(merged, batch), want)
        with torch.no_grad():
            assert torch.equal(graphed(**batch, return_dict=False)[0], want)
