import math

import pytest
import torch
from PIL import Image

from quant.bench.metrics import (PSNR_CAP_DB, ImageRewardModel, list_images, load_image,
                                 psnr_per_image, ssim_per_image)
from quant.errors import MixDQError


def _images(seed: int, n: int = 3, side: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(torch.rand(n, 3, side // 8, side // 8, generator=g),
                                             size=(side, side), mode="bilinear")
    return (smooth * 255).round().to(torch.uint8)


def test_identical_images_have_ssim_one_and_capped_psnr():
    images = _images(0)
    assert torch.allclose(ssim_per_image(images, images), torch.ones(3), atol=1e-6)
    assert torch.equal(psnr_per_image(images, images), torch.full((3,), PSNR_CAP_DB))


def test_psnr_of_a_known_error():
    target = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    preds = torch.full_like(target, 51)  # 0.2 in [0, 1]: MSE 0.04
    assert psnr_per_image(preds, target).tolist() == pytest.approx([10 * math.log10(25)] * 2,
                                                                   abs=1e-4)


def test_ssim_falls_with_noise_and_is_per_image():
    images = _images(1)
    g = torch.Generator().manual_seed(2)
    noisy = images.clone()
    noisy[1] = (images[1].float() + torch.randn(images[1].shape, generator=g) * 40).clamp(0, 255)
    ssim = ssim_per_image(noisy, images)
    assert ssim[0] == pytest.approx(1.0, abs=1e-6) and ssim[2] == pytest.approx(1.0, abs=1e-6)
    assert 0.0 < ssim[1] < 0.9
    psnr = psnr_per_image(noisy, images)
    assert psnr[0] == PSNR_CAP_DB and 10 < psnr[1] < 25


def test_ssim_works_on_images_smaller_than_its_window():
    images = torch.randint(0, 256, (3, 3, 8, 8), generator=torch.Generator().manual_seed(3))
    images = images.to(torch.uint8)
    assert torch.allclose(ssim_per_image(images, images), torch.ones(3), atol=1e-6)


def test_load_image_resizes_and_center_crops(tmp_path):
    array = torch.zeros(40, 80, 3, dtype=torch.uint8)
    array[:, 20:60] = 255  # a white band in the middle of a wide image
    Image.fromarray(array.numpy()).save(tmp_path / "wide.png")
    image = load_image(tmp_path / "wide.png", size=20)
    assert image.shape == (3, 20, 20) and image.dtype == torch.uint8
    assert image.float().mean() > 200  # the center crop is the white band


def test_list_images_errors(tmp_path):
    with pytest.raises(MixDQError, match="no such folder"):
        list_images(tmp_path / "nope")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(MixDQError, match="at least 2 images"):
        list_images(tmp_path)
    Image.new("RGB", (8, 8)).save(tmp_path / "b.jpg")
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "b.jpg"]


def test_unreadable_image_is_one_line(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(MixDQError, match="broken.png: not a readable image"):
        load_image(tmp_path / "broken.png")


def test_image_reward_without_package_says_so():
    try:
        import ImageReward  # noqa: F401
        pytest.skip("ImageReward is installed")
    except ImportError:
        pass
    model = ImageRewardModel.load()
    assert not model.available and model.note == "n/a (package not installed)"
    assert ImageRewardModel.load(enabled=False).note == "n/a (disabled)"
