import numpy as np
import pytest
import torch

from quant.errors import MixDQError
from quant.proxy.scenes import (ATTRIBUTES, HELD_OUT, TRAIN, Scene, ShapesDataset, all_scenes,
                                render, render_caption)


def test_every_caption_round_trips():
    scenes = all_scenes()
    assert len(scenes) == 4 * 3 * 2 * 5
    assert len({s.caption for s in scenes}) == len(scenes)
    for s in scenes:
        assert Scene.from_caption(s.caption) == s
        assert Scene.from_labels(s.labels()) == s
    assert Scene.from_caption("  A large RED circle at the top left ") == Scene(
        "red", "circle", "large", "top left")
    assert Scene("blue", "square", "small", "center").caption == "a small blue square in the center"


@pytest.mark.parametrize("bad", ["a large red circle", "a huge red circle in the center",
                                 "a large red circle at the top middle", ""])
def test_bad_captions_raise_one_line(bad):
    with pytest.raises(MixDQError) as exc:
        Scene.from_caption(bad)
    assert "\n" not in str(exc.value)


def test_held_out_split():
    assert len(HELD_OUT) == 14 and len(TRAIN) == 106
    assert not set(HELD_OUT) & set(TRAIN)
    for name, values in ATTRIBUTES.items():  # every word is still seen in training
        assert {getattr(s, name) for s in TRAIN} == set(values)


def test_dataset_is_deterministic_and_random_access():
    a = ShapesDataset(seed=3)
    images, captions = a.batch(10, 6)
    again, captions2 = ShapesDataset(seed=3).batch(10, 6)
    assert captions == captions2 and torch.equal(images, again)
    single, cap = a[12]
    assert cap == captions[2] and torch.equal(single, images[2])
    other, _ = ShapesDataset(seed=4).batch(10, 6)
    assert not torch.equal(images, other)
    assert images.shape == (6, 3, 32, 32) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1
    held = {c for _, c in (ShapesDataset(seed=0, split="heldout")[i] for i in range(50))}
    assert held <= {s.caption for s in HELD_OUT}
    train = {ShapesDataset(seed=0).scene(i) for i in range(300)}
    assert train <= set(TRAIN) and len(train) > 90


def test_image_shows_the_caption():
    rng = np.random.default_rng(0)
    img = render(Scene("red", "square", "large", "top left"), rng, 32)
    r, g, b = img[:, 8, 8].tolist()  # inside the shape
    assert r > 0.8 and g < 0.3 and b < 0.3
    assert img[:, 25, 25].max() < 0.25  # background in the opposite corner
    small = render_caption("a small green circle at the bottom right", seed=1)
    big = render_caption("a large green circle at the bottom right", seed=1)
    green = lambda im: int(((im[1] > 0.5) & (im[0] < 0.4)).sum())  # noqa: E731
    assert 1.8 < green(big) / green(small) < 4.0
    assert green(small) > 0 and small[1, :16].max() < 0.3  # nothing in the top half
    tri = render_caption("a large blue triangle in the center", seed=1)
    sq = render_caption("a large blue square in the center", seed=1)
    blue = lambda im: int((im[2] > 0.5).sum())  # noqa: E731
    assert blue(tri) < 0.8 * blue(sq)


def test_bad_dataset_arguments():
    with pytest.raises(MixDQError):
        ShapesDataset(split="test")
    with pytest.raises(MixDQError):
        Scene("purple", "circle", "large", "center")
