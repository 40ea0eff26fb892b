"""Quantized checkpoints: bit-exact round trips, packing, metadata, and every bad input."""

import copy
import json
import random

import pytest
import torch

from quant.bitmap import BitMap, LayerBits
from quant.checkpoint import (BITMAP_FILE, CONFIG_FILE, WEIGHTS_FILE, load_quantized,
                              save_quantized, unet_hash)
from quant.errors import MixDQError
from quant.quantize import quantize_unet, run_unet
from quant.structure import quantizable_layers


def _mixed_bit_map(unet, seed=0):
    rng = random.Random(seed)
    return BitMap({n: LayerBits(rng.choice([2, 3, 4, 5, 8, None]), rng.choice([4, 6, 8, None]))
                   for n in quantizable_layers(unet)})


@pytest.fixture(scope="module")
def mixed(session_pipe, calib_batches, tmp_path_factory):
    """A tiny UNet quantized with a random mix of bits, and its checkpoint folder."""
    unet = copy.deepcopy(session_pipe.unet)
    quantize_unet(unet, _mixed_bit_map(unet), calib_batches, progress=False)
    out = save_quantized(unet, tmp_path_factory.mktemp("ckpt") / "mixed", base_model="tiny",
                         metadata={"note": "test"})
    return unet, out


def _outputs(unet, batches):
    with torch.no_grad():
        return [run_unet(unet, b) for b in batches]


def test_round_trip_is_bit_exact(mixed, fp_unet, calib_batches):
    unet, out = mixed
    loaded = load_quantized(fp_unet, out)
    assert all(torch.equal(a, b) for a, b in
               zip(_outputs(unet, calib_batches), _outputs(loaded, calib_batches)))
    src, dst = quantizable_layers(unet), quantizable_layers(loaded)
    for name, layer in src.items():
        a, b = layer.integer_form(), dst[name].integer_form()
        assert (a.w_bits, a.a_bits, a.split) == (b.w_bits, b.a_bits, b.split)
        for field in ("qweight", "wscale", "act_scale", "act_zero_point", "bos_row"):
            x, y = getattr(a, field), getattr(b, field)
            assert (x is None and y is None) or torch.equal(x.cpu(), y.cpu()), (name, field)


def test_w8a8_round_trip(fp_unet, session_pipe, calib_batches, tmp_path):
    unet = copy.deepcopy(session_pipe.unet)
    quantize_unet(unet, BitMap.preset(quantizable_layers(unet), "W8A8"), calib_batches,
                  progress=False)
    save_quantized(unet, tmp_path / "q", base_model="tiny")
    loaded = load_quantized(fp_unet, tmp_path / "q")
    assert all(torch.equal(a, b) for a, b in
               zip(_outputs(unet, calib_batches), _outputs(loaded, calib_batches)))
    # a checkpoint saved from the loaded UNet is the same checkpoint
    save_quantized(loaded, tmp_path / "again", base_model="tiny")
    from safetensors.torch import load_file
    a, b = load_file(tmp_path / "q" / WEIGHTS_FILE), load_file(tmp_path / "again" / WEIGHTS_FILE)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_files_are_packed_safetensors(mixed):
    from safetensors import safe_open

    unet, out = mixed
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [WEIGHTS_FILE, CONFIG_FILE, BITMAP_FILE, "report.txt"])
    config = json.loads((out / CONFIG_FILE).read_text())
    assert config["format"] == "mixdq-quantized-unet" and config["version"] == 2
    assert config["base_model"] == "tiny" and config["note"] == "test"
    assert config["unet_hash"] == unet.mixdq_base_hash and config["toolkit_version"]
    assert BitMap.load(out / BITMAP_FILE).to_dict() == _mixed_bit_map(unet).to_dict()
    with safe_open(str(out / WEIGHTS_FILE), framework="pt") as f:
        assert f.metadata()["unet_hash"] == config["unet_hash"]
        keys = set(f.keys())
        for name, layer in quantizable_layers(unet).items():
            w, a = layer.active_w_bits, layer.active_a_bits
            out_ch, k = layer.weight.shape[0], layer.weight[0].numel()
            if w is None:
                assert f"{name}.qweight" not in keys
            else:
                packed = f.get_tensor(f"{name}.qweight")
                per = {2: 4, 4: 2}.get(w, 1)
                assert packed.dtype == (torch.uint8 if per > 1 else torch.int8)
                assert tuple(packed.shape) == (out_ch, -(-k // per))
                assert f.get_tensor(f"{name}.wscale").dtype == torch.float32
            assert (f"{name}.act_scale" in keys) == (a is not None)
            assert (f"{name}.bos_row" in keys) == (layer.bos and layer.bos_row is not None)
            if layer.split is not None and a is not None:
                assert f.get_tensor(f"{name}.act_scale").shape == (2,)


def test_wrong_base_model_fails_clearly(mixed, fp_unet):
    _, out = mixed
    with torch.no_grad():
        fp_unet.conv_in.weight[0, 0, 0, 0] += 0.5
    with pytest.raises(MixDQError, match="was made from a different UNet"):
        load_quantized(fp_unet, out)


def test_hash_ignores_dtype_but_not_weights(fp_unet):
    h = unet_hash(fp_unet)
    assert unet_hash(copy.deepcopy(fp_unet).half().float()) == h
    other = copy.deepcopy(fp_unet)
    with torch.no_grad():
        other.up_blocks[1].resnets[0].conv1.bias[3] += 1e-2
    assert unet_hash(other) != h


def test_already_quantized_unet_is_refused(mixed):
    unet, out = mixed
    with pytest.raises(MixDQError, match="needs a fresh float UNet"):
        load_quantized(unet, out)


def _broken_copy(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


def test_bad_checkpoints(mixed, fp_unet, tmp_path):
    _, out = mixed
    with pytest.raises(MixDQError, match="no such folder"):
        load_quantized(fp_unet, tmp_path / "nope")
    bad = _broken_copy(out, tmp_path / "no_weights")
    (bad / WEIGHTS_FILE).unlink()
    with pytest.raises(MixDQError, match=f"missing {WEIGHTS_FILE}"):
        load_quantized(fp_unet, bad)
    bad = _broken_copy(out, tmp_path / "bad_json")
    (bad / CONFIG_FILE).write_text("{not json")
    with pytest.raises(MixDQError, match=f"malformed {CONFIG_FILE}"):
        load_quantized(fp_unet, bad)
    bad = _broken_copy(out, tmp_path / "wrong_format")
    (bad / CONFIG_FILE).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(MixDQError, match="is not a mixdq-quantized-unet"):
        load_quantized(fp_unet, bad)
    bad = _broken_copy(out, tmp_path / "version")
    config = json.loads((out / CONFIG_FILE).read_text())
    (bad / CONFIG_FILE).write_text(json.dumps({**config, "version": 99}))
    with pytest.raises(MixDQError, match="format version 99 is not supported"):
        load_quantized(fp_unet, bad)
    bad = _broken_copy(out, tmp_path / "corrupt")
    (bad / WEIGHTS_FILE).write_bytes(b"\x00" * 20)
    with pytest.raises(MixDQError, match="not a readable safetensors file"):
        load_quantized(fp_unet, bad)


def test_bad_layer_entries(mixed, fp_unet, tmp_path):
    _, out = mixed
    config = json.loads((out / CONFIG_FILE).read_text())
    name = next(n for n, e in config["layers"].items() if e["w"] is not None)

    def variant(tag, edit):
        bad = _broken_copy(out, tmp_path / tag)
        c = copy.deepcopy(config)
        edit(c)
        (bad / CONFIG_FILE).write_text(json.dumps(c))
        return bad

    checks = [
        ("unknown", lambda c: c["layers"].__setitem__("down_blocks.7.x", c["layers"][name]),
         "layer down_blocks.7.x is not a Linear/Conv2d of this UNet"),
        ("missing", lambda c: c["layers"].pop(name), f"layer {name} of the UNet is missing"),
        ("bits", lambda c: c["layers"][name].__setitem__("w", 9),
         f"unsupported weight bit width 9 for layer {name}"),
        ("shape", lambda c: c["layers"][name].__setitem__("shape", [1, 2]),
         f"layer {name} is a .* of weight shape"),
        ("entry", lambda c: c["layers"][name].pop("kind"), f"malformed entry for layer {name}"),
    ]
    for tag, edit, message in checks:
        with pytest.raises(MixDQError, match=message.replace(".", r"\.").replace(r"\.*", ".*")):
            load_quantized(copy.deepcopy(fp_unet), variant(tag, edit))
    bad = _broken_copy(out, tmp_path / "tensor")
    from safetensors.torch import load_file, save_file
    tensors = load_file(bad / WEIGHTS_FILE)
    del tensors[f"{name}.wscale"]
    save_file(tensors, bad / WEIGHTS_FILE)
    with pytest.raises(MixDQError, match=f"tensor {name}.wscale listed in .* is missing"):
        load_quantized(fp_unet, bad)


def test_save_refuses_to_clobber_other_folders(mixed, tmp_path, fp_unet):
    unet, out = mixed
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(MixDQError, match="is not a mixdq checkpoint; refusing to overwrite"):
        save_quantized(unet, tmp_path, base_model="tiny")
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    with pytest.raises(MixDQError, match="no quantized layers"):
        save_quantized(fp_unet, tmp_path / "x", base_model="tiny")
    again = save_quantized(unet, tmp_path / "ckpt", base_model="tiny")
    save_quantized(unet, again, base_model="tiny")  # the same checkpoint again is a no-op
    assert (again / CONFIG_FILE).is_file()


def test_load_on_device(mixed, fp_unet, calib_batches, device):
    unet, out = mixed
    loaded = load_quantized(fp_unet.to(device), out)
    y = _outputs(loaded, calib_batches[:1])[0]
    assert y.device.type == device.type
    if device.type == "cpu":
        assert torch.equal(y, _outputs(unet, calib_batches[:1])[0])
    else:
        assert torch.allclose(y.cpu(), _outputs(unet, calib_batches[:1])[0], atol=1e-3)


def _rewrite(folder, edit):
    """Apply ``edit(tensors)`` to a checkpoint's tensors and save them back (config untouched)."""
    from safetensors.torch import load_file, save_file
    tensors = load_file(folder / WEIGHTS_FILE)
    edit(tensors)
    save_file(tensors, folder / WEIGHTS_FILE)


def test_tensor_dtype_bits_and_hash_are_checked(mixed, fp_unet, tmp_path):
    _, out = mixed
    config = json.loads((out / CONFIG_FILE).read_text())
    w8 = next(n for n, e in config["layers"].items() if e["w"] in (5, 8))
    w4 = next(n for n, e in config["layers"].items() if e["w"] == 4)
    act = next(n for n, e in config["layers"].items() if e["a"] is not None)
    cases = {
        # a scale stored as I32 instead of F32
        "i32": (lambda t: t.__setitem__(f"{w8}.wscale", t[f"{w8}.wscale"].to(torch.int32)),
                f"tensor {w8}.wscale is stored as I32, expected F32"),
        # a 4-bit layer holding 8-bit values (one int8 per value)
        "bits": (lambda t: t.__setitem__(f"{w4}.qweight", torch.zeros(
                    (t[f"{w4}.qweight"].shape[0], 2 * t[f"{w4}.qweight"].shape[1]),
                    dtype=torch.int8)),
                 f"tensor {w4}.qweight is stored as I8, expected U8"),
        # flipped weight bytes
        "flip": (lambda t: t.__setitem__(f"{w8}.qweight", t[f"{w8}.qweight"] ^ 1),
                 f"tensor {w8}.qweight does not match its recorded sha256"),
        "zp": (lambda t: t.__setitem__(f"{act}.act_zero_point",
                                        t[f"{act}.act_zero_point"].to(torch.int64)),
               f"tensor {act}.act_zero_point is stored as I64, expected I32"),
        "extra": (lambda t: t.__setitem__("conv_in.smuggled", torch.zeros(1)),
                  "tensor conv_in.smuggled of unet_quant.safetensors is not listed"),
    }
    for tag, (edit, message) in cases.items():
        bad = _broken_copy(out, tmp_path / tag)
        _rewrite(bad, edit)
        with pytest.raises(MixDQError, match=message.replace(".", r"\.")) as info:
            load_quantized(copy.deepcopy(fp_unet), bad)
        assert "\n" not in str(info.value)
    # an 8-bit-stored 5-bit layer whose config claims 5 bits but whose codes use 8 bits
    w5 = next((n for n, e in config["layers"].items() if e["w"] == 5), None)
    if w5 is not None:
        bad = _broken_copy(out, tmp_path / "range")
        c = copy.deepcopy(config)

        def widen(t):
            q = t[f"{w5}.qweight"].clone()
            q.view(-1)[0] = 100
            t[f"{w5}.qweight"] = q
            from quant.checkpoint import _tensor_record
            c["tensors"][f"{w5}.qweight"] = _tensor_record(q)
        _rewrite(bad, widen)
        (bad / CONFIG_FILE).write_text(json.dumps(c))
        with pytest.raises(MixDQError, match=f"{w5}.qweight holds values in .* outside the "
                                             f"5-bit range"):
            load_quantized(copy.deepcopy(fp_unet), bad)


def test_checkpoint_bytes_are_reproducible_and_0644(mixed, tmp_path):
    import os
    unet, out = mixed
    again = save_quantized(unet, tmp_path / "again", base_model="tiny", metadata={"note": "test"})
    for name in (WEIGHTS_FILE, CONFIG_FILE, BITMAP_FILE, "report.txt"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    umask = os.umask(0)
    os.umask(umask)
    for name in (WEIGHTS_FILE, CONFIG_FILE, BITMAP_FILE, "report.txt"):
        assert (again / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_save_onto_existing_checkpoint(mixed, tmp_path):
    unet, out = mixed
    ckpt = _broken_copy(out, tmp_path / "ckpt")
    (ckpt / "notes.txt").write_text("mine")
    before = {p.name: p.stat().st_mtime_ns for p in ckpt.iterdir()}
    # same settings: nothing rewritten, the user's file kept
    save_quantized(unet, ckpt, base_model="tiny", metadata={"note": "test"})
    assert {p.name: p.stat().st_mtime_ns for p in ckpt.iterdir()} == before
    # same settings but a damaged file: only the checkpoint's files are restored
    (ckpt / WEIGHTS_FILE).write_bytes(b"junk")
    save_quantized(unet, ckpt, base_model="tiny", metadata={"note": "test"})
    assert (ckpt / WEIGHTS_FILE).read_bytes() == (out / WEIGHTS_FILE).read_bytes()
    assert (ckpt / "notes.txt").read_text() == "mine"
    # other settings: refused, nothing touched
    with pytest.raises(MixDQError, match="made with other settings \\(note: 'test' there, "
                                         "'other' now\\)"):
        save_quantized(unet, ckpt, base_model="tiny", metadata={"note": "other"})
    with pytest.raises(MixDQError, match="other settings \\(base_model"):
        save_quantized(unet, ckpt, base_model="elsewhere", metadata={"note": "test"})
    assert (ckpt / CONFIG_FILE).read_bytes() == (out / CONFIG_FILE).read_bytes()
    assert (ckpt / "notes.txt").read_text() == "mine"


def test_stale_temporaries_are_cleaned(mixed, tmp_path):
    unet, _ = mixed
    (tmp_path / ".ckpt.abc123.tmp").mkdir()           # a killed save of a new checkpoint
    (tmp_path / ".ckpt.abc123.tmp" / WEIGHTS_FILE).write_bytes(b"half")
    (tmp_path / ".other.x.tmp").write_text("not ours")
    save_quantized(unet, tmp_path / "ckpt", base_model="tiny")
    (tmp_path / "ckpt" / ".unet_quant.safetensors.zz.tmp").write_bytes(b"half")
    save_quantized(unet, tmp_path / "ckpt", base_model="tiny")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.x.tmp", "ckpt"]
    assert not list((tmp_path / "ckpt").glob(".*"))
