"""prepare / quantize_unet on the tiny SDXL-shaped UNet and on the real SDXL configuration."""

import copy
import json
import time
from importlib import resources

import pytest
import torch
from torch import nn

from quant.bitmap import BitMap, LayerBits
from quant.errors import MixDQError
from quant.measure import Setting, format_sqnr_table, sqnr_table
from quant.qmodules import QuantConv2d, QuantLinear
from quant.quantize import concat_splits, output_sqnr, prepare, quantize_unet, run_unet
from quant.structure import is_cross_attention_kv, quantizable_layers


def sdxl_unet_meta():
    from diffusers import UNet2DConditionModel

    cfg = json.loads(resources.files("quant.configs").joinpath("sdxl_unet.json").read_text())
    with torch.device("meta"):
        return UNet2DConditionModel.from_config(cfg)


def _w8a8(unet):
    return BitMap.preset(quantizable_layers(unet), "W8A8")


def test_every_layer_is_swapped_under_w8a8(fp_unet):
    names = list(quantizable_layers(fp_unet))
    prepare(fp_unet, _w8a8(fp_unet))
    layers = quantizable_layers(fp_unet)
    assert list(layers) == names and len(names) == 263
    assert all(type(m) in (QuantLinear, QuantConv2d) for m in layers.values())
    assert not [n for n, m in fp_unet.named_modules()
                if type(m) in (nn.Linear, nn.Conv2d)]  # no float layer left anywhere
    assert {(m.active_w_bits, m.active_a_bits) for m in layers.values()} == {(8, 8)}
    bos = {n for n, m in layers.items() if m.bos}
    assert bos == {n for n in names if n.endswith(("attn2.to_k", "attn2.to_v"))}
    assert len(bos) == 34  # 17 cross-attention transformer blocks


def test_prepare_again_updates_in_place(fp_unet):
    prepare(fp_unet, _w8a8(fp_unet))
    before = dict(quantizable_layers(fp_unet))
    prepare(fp_unet, BitMap.preset(before, "W4A16"), bos=False, weight_scale="minmax")
    after = quantizable_layers(fp_unet)
    assert all(after[n] is before[n] for n in before)
    assert {(m.w_bits, m.a_bits, m.bos, m.weight_scale) for m in after.values()} == {
        (4, None, False, "minmax")}


def test_bad_bit_maps_are_one_line_errors(fp_unet):
    names = list(quantizable_layers(fp_unet))
    bm = BitMap.uniform(names, 8, 8)
    bm.layers["down_blocks.9.nope"] = LayerBits(8, 8)
    with pytest.raises(MixDQError, match=r"unknown layer 'down_blocks\.9\.nope'"):
        prepare(fp_unet, bm)
    bm = BitMap.uniform(names[1:], 8, 8)
    with pytest.raises(MixDQError, match="layer 'conv_in' is missing from the bit map"):
        prepare(fp_unet, bm)
    data = {"layers": {n: {"w": 8, "a": 8} for n in names}}
    data["layers"]["conv_out"] = {"w": 1, "a": 8}
    with pytest.raises(MixDQError, match="unsupported weight bit width 1 for layer conv_out"):
        prepare(fp_unet, BitMap.from_dict(data))
    with pytest.raises(MixDQError, match="no such file"):
        prepare(fp_unet, "/nonexistent/bits.json")
    assert not any(getattr(m, "is_quantized_module", False) for m in fp_unet.modules())


def test_concat_splits_match_what_the_model_concatenates(session_pipe, calib_batches):
    """Observed: each up-block resnet's input is [hidden, skip] with skip popped off the end."""
    unet = session_pipe.unet
    splits = concat_splits(unet)
    seen = {}
    handles = []
    for i, block in enumerate(unet.up_blocks):
        def block_hook(module, args, kwargs, i=i):
            seen[i] = [t.clone() for t in kwargs["res_hidden_states_tuple"]]
        handles.append(block.register_forward_pre_hook(block_hook, with_kwargs=True))
        for j, resnet in enumerate(block.resnets):
            def resnet_hook(module, args, kwargs, i=i, j=j):
                skip = seen[i][-(j + 1)]
                x = args[0] if args else kwargs["input_tensor"]
                seen[(i, j)] = (x.shape[1] - skip.shape[1],
                                torch.equal(x[:, x.shape[1] - skip.shape[1]:], skip))
            handles.append(resnet.register_forward_pre_hook(resnet_hook, with_kwargs=True))
    try:
        with torch.no_grad():
            run_unet(unet, calib_batches[0])
    finally:
        for h in handles:
            h.remove()
    expected = {}
    for (i, j), (hidden, skip_is_last) in ((k, v) for k, v in seen.items() if isinstance(k, tuple)):
        assert skip_is_last
        for leaf in ("conv1", "conv_shortcut"):
            expected[f"up_blocks.{i}.resnets.{j}.{leaf}"] = hidden
    assert splits == expected
    assert sorted(set(splits.values())) == [32, 64]  # read from the model, not a constant


def test_sdxl_prepare_is_fast_and_complete():
    unet = sdxl_unet_meta()
    splits = concat_splits(unet)
    assert len(splits) == 18  # conv1 + conv_shortcut of the 9 up-block resnets
    assert all(0 < s < unet.get_submodule(n).in_channels for n, s in splits.items())
    start = time.perf_counter()
    prepare(unet, _w8a8(unet))
    elapsed = time.perf_counter() - start
    layers = quantizable_layers(unet)
    assert len(layers) == 794 and all(getattr(m, "is_quantized_module", False)
                                      for m in layers.values())
    assert sum(m.bos for m in layers.values()) == 140
    split = [n for n, m in layers.items() if m.split is not None]
    assert len(split) == 9 and all(n.endswith(".conv_shortcut") for n in split)
    assert all(layers[n].split_weight for n in split)  # the original's: weight split too
    prepare(unet, _w8a8(unet), conv1_split=True)  # the switch, on an already prepared UNet
    split = [n for n, m in layers.items() if m.split is not None]
    assert len(split) == 18 and sum(layers[n].split_weight for n in split) == 9
    prepare(unet, _w8a8(unet), shortcut_weight_split=False)
    assert sum(m.split is not None for m in layers.values()) == 9
    assert not any(m.split_weight for m in layers.values())
    assert elapsed < 20, f"prepare took {elapsed:.1f} s on the meta SDXL UNet"


def test_quantize_unet_errors(fp_unet, calib_batches):
    with pytest.raises(MixDQError, match="calibration set is empty"):
        quantize_unet(copy.deepcopy(fp_unet), _w8a8(fp_unet), [], progress=False)
    bad = {k: v for k, v in calib_batches[0].items() if k != "encoder_hidden_states"}
    with pytest.raises(MixDQError, match="calibration batch lacks encoder_hidden_states"):
        quantize_unet(copy.deepcopy(fp_unet), _w8a8(fp_unet), [bad], progress=False)
    changed = dict(calib_batches[1])
    changed["encoder_hidden_states"] = changed["encoder_hidden_states"].clone()
    changed["encoder_hidden_states"][:, 0] = 0.0  # a zeroed (negative) prompt
    with pytest.raises(MixDQError, match="BOS.*differs between calibration samples"):
        quantize_unet(copy.deepcopy(fp_unet), _w8a8(fp_unet), [calib_batches[0], changed],
                      progress=False)
    quantize_unet(fp_unet, _w8a8(fp_unet), [calib_batches[0], changed], bos=False,
                  progress=False)  # fine without BOS handling
    with pytest.raises(MixDQError, match="no recorded 'output'"):
        output_sqnr(fp_unet, [{k: v for k, v in calib_batches[0].items() if k != "output"}])


def test_float_bit_map_reproduces_the_float_unet(fp_unet, calib_batches):
    quantize_unet(fp_unet, BitMap.preset(quantizable_layers(fp_unet), "W16A16"),
                  calib_batches, progress=False)
    ref = [b["output"] for b in calib_batches]
    with torch.no_grad():
        out = [run_unet(fp_unet, b) for b in calib_batches]
    assert all(torch.allclose(o, r, atol=1e-5) for o, r in zip(out, ref))


def test_sqnr_table_orderings(session_pipe, calib_batches, outlier_batches):
    """W8A8 beats W4A8; BOS handling beats none when the BOS embedding has CLIP's outlier."""
    rows = sqnr_table(session_pipe.unet, lambda: outlier_batches)
    print("\ntiny UNet with a CLIP-like BOS outlier, UNet-output SQNR on the calibration inputs")
    print(format_sqnr_table(rows))
    table = {s.label: v for s, v in rows}
    assert table["W8A8 BOS"] > table["W4A8 BOS"] + 6
    assert table["W8A8 no BOS"] > table["W4A8 no BOS"] + 6
    assert table["W8A8 BOS"] > table["W8A8 no BOS"]
    assert table["W4A8 BOS"] > table["W4A8 no BOS"]
    (_, plain), = sqnr_table(session_pipe.unet, lambda: calib_batches, [Setting("W8A8")])
    assert plain > 25


def test_bos_handling_isolated(session_pipe, outlier_batches, calib_batches):
    """Only the cross-attention k/v inputs quantized (A8): BOS handling removes the outlier's
    harm."""
    unet = session_pipe.unet
    names = list(quantizable_layers(unet))
    bm = BitMap({n: LayerBits(None, 8 if is_cross_attention_kv(n, unet) else None)
                 for n in names})
    result = {}
    for label, batches in (("outlier", outlier_batches), ("plain", calib_batches)):
        for bos in (True, False):
            q = quantize_unet(copy.deepcopy(unet), bm, batches, bos=bos, progress=False)
            result[label, bos] = output_sqnr(q, batches)
    print({k: round(v, 2) for k, v in result.items()})
    assert result["outlier", True] > result["outlier", False] + 20
    assert result["outlier", True] > 60 and result["plain", True] > 60
