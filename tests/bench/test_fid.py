import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from quant.bench.fid import (FeatureStats, TorchScriptExtractor, fid_from_stats,
                             frechet_distance, load_inception)
from quant.errors import MixDQError


def _images(seed: int, n: int = 40, shift: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 200, (n, 3, 32, 32), generator=g)
    # low-frequency structure so the conv features vary between images
    ramp = torch.linspace(0, 55, 32).view(1, 1, 1, 32) * torch.rand(n, 3, 1, 1, generator=g)
    return (base + ramp + shift).clamp(0, 255).to(torch.uint8)


def _stats(extractor, images) -> FeatureStats:
    stats = FeatureStats()
    with torch.no_grad():
        for chunk in images.split(16):
            stats.update(extractor(chunk))
    return stats


def test_frechet_distance_of_known_gaussians():
    # 1-d: (0 - 3)^2 + 1 + 4 - 2 * sqrt(1 * 4) = 10
    one = frechet_distance(torch.zeros(1), torch.eye(1), torch.full((1,), 3.0), 4 * torch.eye(1))
    assert one == pytest.approx(10.0, abs=1e-12)
    # diagonal: sum (m1 - m2)^2 + (sqrt(a) - sqrt(b))^2
    a, b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 9.0])
    m1, m2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    expected = float(((m1 - m2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum())
    assert frechet_distance(m1, torch.diag(a), m2, torch.diag(b)) == pytest.approx(expected,
                                                                                 abs=1e-10)


def test_frechet_distance_matches_scipy_sqrtm_on_full_rank_covariances():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 8)), rng.normal(size=(200, 8)) @ rng.normal(size=(8, 8)) + 0.5
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    got = frechet_distance(*(torch.from_numpy(t) for t in (mu1, s1, mu2, s2)))
    assert got == pytest.approx(expected, rel=1e-9)


def test_identical_image_sets_have_fid_zero(extractor):
    images = _images(1)
    fid = fid_from_stats(_stats(extractor, images), _stats(extractor, images))
    assert abs(fid) < 1e-8


@pytest.mark.parametrize("n", [40, 6])  # 6 < 16 features: singular covariances
def test_toolkit_fid_equals_torchmetrics_fid(extractor, n):
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = _images(2, n), _images(3, n, shift=30)
    metric = FrechetInceptionDistance(feature=extractor)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    reference = float(metric.compute())
    ours = fid_from_stats(_stats(extractor, real), _stats(extractor, fake))
    assert reference > 1e-3  # the sets differ, so the comparison is not 0 == 0
    # torchmetrics accumulates in float64 and returns float32
    assert ours == pytest.approx(reference, rel=1e-5, abs=1e-7)


def test_feature_stats_mean_and_covariance():
    x = torch.randn(50, 5, dtype=torch.float64)
    stats = FeatureStats()
    stats.update(x[:20])
    stats.update(x[20:])
    mean, cov = stats.mean_cov()
    assert torch.allclose(mean, x.mean(0))
    assert torch.allclose(cov, torch.cov(x.T))


def test_fid_needs_two_images(extractor):
    stats = _stats(extractor, _images(4, 1))
    with pytest.raises(MixDQError, match="at least 2 images"):
        stats.mean_cov()


def test_missing_inception_file_is_one_line(tmp_path):
    with pytest.raises(MixDQError, match="--inception .*no such file"):
        load_inception(str(tmp_path / "nope.pth"))


def test_no_cached_inception_names_the_flags(tmp_path):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        with pytest.raises(MixDQError) as exc:
            load_inception(None)
    finally:
        torch.hub.set_dir(old)
    message = str(exc.value)
    assert "--inception" in message and "--no-fid" in message and "\n" not in message


def test_state_dict_without_torch_fidelity_says_what_to_install(tmp_path):
    pytest.importorskip("torchmetrics")
    try:
        import torch_fidelity  # noqa: F401
        pytest.skip("torch-fidelity is installed")
    except ImportError:
        pass
    path = tmp_path / "weights-inception.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, path)
    with pytest.raises(MixDQError, match="torch-fidelity"):
        load_inception(str(path))


class _ScriptedFeatures(nn.Module):
    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        pooled = x.float().mean((2, 3))
        return pooled if return_features else -pooled


def test_torchscript_extractor_is_asked_for_features(tmp_path):
    path = tmp_path / "extractor.pt"
    torch.jit.save(torch.jit.script(_ScriptedFeatures()), str(path))
    module = load_inception(str(path))
    assert isinstance(module, TorchScriptExtractor)
    images = _images(5, 4)
    assert torch.allclose(module(images), images.float().mean((2, 3)))


def test_tiny_stand_in_is_deterministic():
    images = _images(6, 3)
    a, b = load_inception("tiny"), load_inception("tiny")
    features = a(images)
    assert features.shape == (3, 64) and torch.equal(features, b(images))
    assert features.std(0).min() > 0  # features vary with the image
