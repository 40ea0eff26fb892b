import json

import numpy as np
import pytest
import torch

from quant.calib import CalibrationData
from quant.errors import MixDQError


def test_counts_settings_and_shapes(recorded, calib_prompts):
    data = CalibrationData(recorded)
    assert len(data) == 10 and data.count(steps=1) == 5 and data.count() == 10
    assert data.prompts == calib_prompts and data.model == "tiny"
    assert data.timesteps == [999.0, 499.0]
    assert data.generate_kwargs() == {"steps": 2, "guidance": 0.0, "resolution": 64, "seed": 7}
    assert not data.cfg
    shapes = data.shapes()
    assert shapes["sample"] == [4, 16, 16] and shapes["output"] == [4, 16, 16]
    assert shapes["encoder_hidden_states"] == [77, 96]
    assert shapes["added_cond_kwargs.text_embeds"] == [32]
    assert shapes["added_cond_kwargs.time_ids"] == [6]
    assert data.manifest["counts"] == {"prompts": 5, "steps": 2, "samples": 10, "shards": 3,
                                       "samples_per_prompt_step": 1}


def test_batches_cross_shards_in_a_fixed_order(recorded):
    data = CalibrationData(recorded)
    batches = list(data.batches(3))
    assert [len(b["step"]) for b in batches] == [3, 3, 3, 1]
    steps = torch.cat([b["step"] for b in batches]).tolist()
    index = torch.cat([b["prompt_index"] for b in batches]).tolist()
    # shard by shard (2 prompts each), step by step inside a shard
    assert steps == [0, 0, 1, 1, 0, 0, 1, 1, 0, 1]
    assert index == [0, 1, 0, 1, 2, 3, 2, 3, 4, 4]
    again = list(data.batches(3))
    for a, b in zip(batches, again):
        assert torch.equal(a["sample"], b["sample"])
    time_ids = torch.cat([b["added_cond_kwargs"]["time_ids"] for b in batches])
    assert time_ids[0].tolist() == [64, 64, 0, 0, 64, 64]
    assert torch.cat([b["timestep"] for b in batches]).tolist() == [
        999 if s == 0 else 499 for s in steps]


def test_batches_on_device_and_dtype(recorded, device):
    data = CalibrationData(recorded)
    full = next(data.batches(10))
    for batch in data.batches(4, device=device, dtype=torch.float16, steps=[1]):
        assert batch["sample"].dtype == torch.float16 and batch["sample"].device.type == device.type
        assert batch["output"].dtype == torch.float16
        assert batch["added_cond_kwargs"]["text_embeds"].dtype == torch.float16
        assert batch["timestep"].dtype == torch.float32 and batch["timestep"].shape == (
            len(batch["step"]),)
        assert batch["step"].dtype == torch.int64 and (batch["step"] == 1).all()
    one = torch.cat([b["sample"].cpu().float() for b in data.batches(4, steps=1)])
    assert torch.equal(one, full["sample"][full["step"] == 1])


def test_replaying_a_batch_reproduces_the_recorded_output(recorded, pipe):
    data = CalibrationData(recorded)
    batch = next(data.batches(4))
    assert set(data.unet_kwargs(batch)) == {"sample", "timestep", "encoder_hidden_states",
                                            "added_cond_kwargs"}
    with torch.no_grad():
        out = pipe.unet(**data.unet_kwargs(batch), return_dict=False)[0]
    err = (out - batch["output"]).pow(2).sum() / batch["output"].pow(2).sum()
    assert batch["output"].abs().mean() > 0.1
    assert 10 * torch.log10(1 / err.clamp_min(1e-30)) > 100  # dB: same numbers up to rounding


def test_reference_images_reproduce_with_the_recorded_seeds(recorded, pipe, calib_prompts):
    from quant.generate import generate

    data = CalibrationData(recorded)
    images = data.reference_images()
    assert len(images) == 5 and all(im.size == (64, 64) for im in images)
    assert [p.name for p in data.image_paths] == [f"{i:05d}.png" for i in range(5)]
    kwargs = data.generate_kwargs()
    kwargs["seed"] += 3
    again = generate(pipe, [calib_prompts[3]], **kwargs)[0]
    diff = np.abs(np.asarray(again, dtype=int) - np.asarray(images[3], dtype=int))
    assert diff.max() <= 1
    assert np.asarray(images[3]).std() > 1  # not a blank image
    assert not np.array_equal(np.asarray(images[3]), np.asarray(images[2]))


def test_bad_arguments(recorded):
    data = CalibrationData(recorded)
    with pytest.raises(MixDQError, match="out of range"):
        next(data.batches(2, steps=[2]))
    with pytest.raises(MixDQError, match="positive integer"):
        next(data.batches(0))


def test_missing_incomplete_and_malformed_folders(recorded, tmp_path):
    import shutil

    with pytest.raises(MixDQError, match="does not exist"):
        CalibrationData(tmp_path / "nope")
    with pytest.raises(MixDQError, match="not a calibration folder"):
        CalibrationData(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(recorded, copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(MixDQError, match="incomplete.*rerun `mixdq calibrate`"):
        CalibrationData(copy)
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(MixDQError, match="unreadable"):
        CalibrationData(copy)
    manifest = json.loads((recorded / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(MixDQError, match="version 99"):
        CalibrationData(copy)
    (copy / "manifest.json").write_text(json.dumps({**manifest, "shards": None}))
    with pytest.raises(MixDQError, match="malformed"):
        CalibrationData(copy)
    shutil.copy(recorded / "manifest.json", copy / "manifest.json")
    (copy / "shards" / "00001.safetensors").unlink()
    with pytest.raises(MixDQError, match="lacks shards/00001.safetensors"):
        CalibrationData(copy)
    (copy / "shards" / "00001.safetensors").write_bytes(b"garbage")
    with pytest.raises(MixDQError, match="00001.safetensors has 7 bytes, .* were written"):
        CalibrationData(copy)
    # without recorded sizes (an older folder) the shard itself is found unreadable
    (copy / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items()
                                                    if k != "files"}))
    with pytest.raises(MixDQError, match="unreadable calibration shard"):
        list(CalibrationData(copy).batches(4))


def test_changed_bytes_and_other_models_are_refused(recorded, pipe, tmp_path):
    import copy as copy_module
    import shutil

    from quant.quantize import output_sqnr

    copy = tmp_path / "copy"
    shutil.copytree(recorded, copy)
    shard = copy / "shards" / "00000.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF  # same size, one flipped byte
    shard.write_bytes(bytes(data))
    with pytest.raises(MixDQError, match="00000.safetensors does not match the sha256"):
        list(CalibrationData(copy).batches(4))
    image = copy / "images" / "00001.png"
    image.write_bytes(image.read_bytes()[:-1] + b"\x00")
    with pytest.raises(MixDQError, match="00001.png does not match the sha256"):
        CalibrationData(copy).reference_images()
    # the recorded model passes; the same architecture with other weights does not
    data = CalibrationData(recorded)
    data.check_model(pipe.unet)
    other = copy_module.deepcopy(pipe.unet)
    with torch.no_grad():
        other.conv_in.weight.mul_(1.01)
    with pytest.raises(MixDQError, match="recorded with another model .*UNet weights differ"):
        data.check_model(other)
    with pytest.raises(MixDQError, match="recorded with another model"):
        output_sqnr(other, data.batches(4))
