import pytest
import torch

from quant.errors import MixDQError
from quant.proxy.classifier import AttributeClassifier
from quant.proxy.metrics import classifier_fid, content_scores, eval_captions, real_images
from quant.proxy.scenes import ShapesDataset


def test_shipped_classifier_reads_unseen_images(proxy_classifier):
    images, captions = ShapesDataset(seed=4242, split="all").batch(0, 480)
    scores = content_scores(proxy_classifier, images, captions)
    assert scores["content_acc"] >= 0.99, scores
    # every held-out scene is read right too (the classifier saw all scenes; the generator not)
    held = eval_captions("heldout", 4)
    assert content_scores(proxy_classifier, real_images(held, seed=99), held)["content_acc"] == 1


def test_fid_separates_right_from_wrong_content(proxy_classifier):
    captions = eval_captions("all", 2)
    real_a, real_b = real_images(captions, 0), real_images(captions, 5000)
    same = classifier_fid(proxy_classifier, real_a, real_b)
    assert classifier_fid(proxy_classifier, real_a, real_a) < 1e-6
    shuffled = real_images(list(reversed(eval_captions("all", 1))) * 2, 5000)
    assert classifier_fid(proxy_classifier, real_a, shuffled) < 3 * same + 1  # same distribution
    wrong = real_images([c.replace("red", "blue") for c in captions], 5000)
    assert classifier_fid(proxy_classifier, real_a, wrong) > 5 * same + 1
    blurred = torch.nn.functional.avg_pool2d(real_b, 3, stride=1, padding=1,
                                             count_include_pad=False)
    assert classifier_fid(proxy_classifier, real_a, blurred) > same


def test_save_load_round_trip_and_errors(tmp_path, proxy_classifier):
    path = tmp_path / "c.safetensors"
    proxy_classifier.save(path)
    again = AttributeClassifier.load(path)
    x = torch.rand(3, 3, 32, 32)
    assert torch.equal(again.features(x), proxy_classifier.features(x))
    with pytest.raises(MixDQError, match="missing"):
        AttributeClassifier.load(tmp_path / "nope.safetensors")
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(MixDQError, match="not a proxy classifier"):
        AttributeClassifier.load(tmp_path / "other.safetensors")
