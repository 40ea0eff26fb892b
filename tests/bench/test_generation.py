import numpy as np
import pytest
from PIL import Image

from quant.utils.distributed import Shard
from quant.bench.generation import (GenerationSettings, generate_images, image_path,
                                    missing_images, select_prompts, shard_batches)
from quant.errors import MixDQError


class _Interrupt:
    """A UNet forward hook that stops generation (like Ctrl-C) on the call after ``calls``."""

    def __init__(self, unet, calls: int):
        self.left = calls
        self.handle = unet.register_forward_hook(self)

    def __call__(self, module, args, output):
        if self.left == 0:
            raise KeyboardInterrupt
        self.left -= 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


@pytest.mark.parametrize("batch_size", [1, 2])
def test_interrupted_generation_resumes_to_the_same_bytes(tiny_pipe, coco_prompts, tmp_path,
                                                          batch_size):
    prompts = coco_prompts[:5]
    settings = GenerationSettings(batch_size=batch_size, seed=7)
    clean, resumed = tmp_path / "clean", tmp_path / "resumed"
    assert generate_images(lambda: tiny_pipe, prompts, clean, settings) == 5

    with _Interrupt(tiny_pipe.unet, calls=1), pytest.raises(KeyboardInterrupt):
        generate_images(lambda: tiny_pipe, prompts, resumed, settings)
    done = len(_files(resumed))
    assert done == batch_size  # the first call's images were written before the interrupt
    assert not list(resumed.glob(".*.tmp"))  # no half-written files

    assert generate_images(lambda: tiny_pipe, prompts, resumed, settings) == 5 - done
    assert _files(resumed) == _files(clean)
    assert len(set(_files(clean).values())) == 5  # distinct images: seeds differ per prompt


def test_complete_folder_does_not_load_the_pipeline(tiny_pipe, coco_prompts, tmp_path):
    settings = GenerationSettings()
    generate_images(lambda: tiny_pipe, coco_prompts[:2], tmp_path, settings)

    def must_not_load():
        raise AssertionError("pipeline loaded although every image exists")

    assert generate_images(must_not_load, coco_prompts[:2], tmp_path, settings) == 0
    assert generate_images(must_not_load, coco_prompts[:1], tmp_path, settings) == 0


def test_rerun_with_other_settings_or_prompts_is_refused(tiny_pipe, coco_prompts, tmp_path):
    generate_images(lambda: tiny_pipe, coco_prompts[:2], tmp_path, GenerationSettings(seed=1),
                    source={"model": "tiny"})
    with pytest.raises(MixDQError, match="other settings or model"):
        generate_images(lambda: tiny_pipe, coco_prompts[:2], tmp_path,
                        GenerationSettings(seed=2), source={"model": "tiny"})
    with pytest.raises(MixDQError, match="other settings or model"):
        generate_images(lambda: tiny_pipe, coco_prompts[:2], tmp_path,
                        GenerationSettings(seed=1), source={"model": "other"})
    with pytest.raises(MixDQError, match="other prompts"):
        generate_images(lambda: tiny_pipe, coco_prompts[2:4], tmp_path,
                        GenerationSettings(seed=1), source={"model": "tiny"})
    # more prompts with the same prefix extend the set
    assert generate_images(lambda: tiny_pipe, coco_prompts[:3], tmp_path,
                           GenerationSettings(seed=1), source={"model": "tiny"}) == 1


def test_variants_share_noise(tiny_pipe, coco_prompts, tmp_path):
    """Image i depends on prompt i and seed + i only, not on which other prompts are run."""
    settings = GenerationSettings(seed=3)
    generate_images(lambda: tiny_pipe, coco_prompts[:3], tmp_path / "a", settings)
    generate_images(lambda: tiny_pipe, coco_prompts[:3], tmp_path / "b",
                    GenerationSettings(seed=3, batch_size=3))
    for i in range(3):
        a, b = image_path(tmp_path / "a", i), image_path(tmp_path / "b", i)
        diff = np.abs(np.asarray(Image.open(a), dtype=int) - np.asarray(Image.open(b), dtype=int))
        assert diff.max() <= 1  # batched math may differ in the last bit


@pytest.mark.parametrize("n,batch,world", [(10, 1, 3), (10, 4, 2), (3, 2, 4)])
def test_shards_partition_the_indices(n, batch, world):
    shards = [shard_batches(n, batch, Shard(r, world)) for r in range(world)]
    flat = [i for batches in shards for b in batches for i in b]
    assert sorted(flat) == list(range(n))
    if batch == 1:
        for r, batches in enumerate(shards):
            assert all(i % world == r for b in batches for i in b)


def test_missing_images_of_a_shard(tmp_path):
    for i in (0, 3):
        Image.new("RGB", (4, 4)).save(image_path(tmp_path, i))
    assert missing_images(tmp_path, 6) == [1, 2, 4, 5]
    assert missing_images(tmp_path, 6, Shard(1, 2)) == [1, 5]


def test_inline_prompt_errors():
    with pytest.raises(MixDQError, match="no prompts"):
        select_prompts([], None)
    with pytest.raises(MixDQError, match="non-empty"):
        select_prompts(["a red bus", "  "], None)
    assert select_prompts(["a red bus", "a cat"], 1) == ["a red bus"]
    with pytest.raises(MixDQError, match="asked for 3 prompts but only 2"):
        select_prompts(["a red bus", "a cat"], 3)


@pytest.mark.parametrize("kwargs", [dict(steps=0), dict(batch_size=0), dict(resolution=30),
                                    dict(guidance=-1.0)])
def test_bad_settings(kwargs):
    with pytest.raises(MixDQError):
        GenerationSettings(**kwargs)
