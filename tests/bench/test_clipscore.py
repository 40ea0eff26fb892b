import math
import pytest
import torch

from quant.bench.clipscore import CLIPFeatureAdapter, CLIPScorer, load_clip
from quant.errors import MixDQError


def _images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 48, 48), generator=g).to(torch.uint8)


def _hand_scores(model, processor, images, prompts) -> torch.Tensor:
    """100 * cosine similarity per pair, through CLIPModel.forward (not the feature methods)."""
    inputs = processor(text=prompts, images=list(images), return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**inputs)
    return 100 * (out.image_embeds * out.text_embeds).sum(-1)


def test_adapter_returns_tensors(tiny_clip_dir):
    adapter, processor = load_clip(str(tiny_clip_dir))
    assert isinstance(adapter, CLIPFeatureAdapter)
    pixels = processor(images=list(_images(2)), return_tensors="pt")["pixel_values"]
    text = processor(text=["a cat", "a dog on a mat"], return_tensors="pt", padding=True)
    with torch.no_grad():
        image_features = adapter.get_image_features(pixels)
        text_features = adapter.get_text_features(text["input_ids"], text["attention_mask"])
    assert isinstance(image_features, torch.Tensor) and image_features.shape == (2, 16)
    assert isinstance(text_features, torch.Tensor) and text_features.shape == (2, 16)
    with torch.no_grad():
        raw = adapter.model.get_image_features(pixels)
    raw = raw if isinstance(raw, torch.Tensor) else raw.pooler_output  # transformers 5: an object
    assert torch.equal(raw, image_features)


def test_clip_score_matches_hand_computation(tiny_clip_dir, coco_prompts):
    adapter, processor = load_clip(str(tiny_clip_dir))
    images, prompts = _images(4, seed=1), coco_prompts[:4]
    hand = _hand_scores(adapter.model, processor, images, prompts)
    assert hand.abs().mean() > 0.1  # not trivially zero
    score = CLIPScorer(adapter, processor).score(images, prompts)
    assert math.isfinite(score)
    assert score == pytest.approx(max(float(hand.mean()), 0.0), abs=1e-4)

    # Negating the image projection negates every cosine: one of the two runs is clamped at 0.
    with torch.no_grad():
        adapter.model.visual_projection.weight.neg_()
    flipped = CLIPScorer(adapter, processor).score(images, prompts)
    assert flipped == pytest.approx(max(-float(hand.mean()), 0.0), abs=1e-4)
    assert min(score, flipped) == 0.0 and max(score, flipped) > 0.0


def test_clip_score_streams_in_batches(tiny_clip_dir, coco_prompts):
    adapter, processor = load_clip(str(tiny_clip_dir))
    images, prompts = _images(5, seed=2), coco_prompts[:5]
    scorer = CLIPScorer(adapter, processor)
    metric = scorer.new_metric()
    metric.update(images[:2], prompts[:2])
    metric.update(images[2:], prompts[2:])
    hand = _hand_scores(adapter.model, processor, images, prompts)
    assert float(metric.compute()) == pytest.approx(max(float(hand.mean()), 0.0), abs=1e-4)


def test_missing_clip_folder_is_one_line(tmp_path):
    with pytest.raises(MixDQError, match="--clip .*no such folder"):
        load_clip(str(tmp_path / "nope"))


def test_folder_without_clip_model_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(MixDQError, match="--clip .*not a CLIP model") as exc:
        load_clip(str(tmp_path))
    assert "\n" not in str(exc.value)


def test_cli_without_local_clip_names_the_flags(tiny_dir, tmp_path, monkeypatch, capsys):
    """No CLIP model in an empty Hugging Face cache: one line naming --clip and --no-clip."""
    import huggingface_hub.constants

    from quant.cli import main

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    status = main(["benchmark", "--model", str(tiny_dir), "--prompt", "a cat", "--prompt",
                   "a dog", "--no-fid", "--out", str(tmp_path / "report")])
    assert status == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--clip" in lines[0] and "--no-clip" in lines[0]
    assert not (tmp_path / "report" / "images").exists()  # failed before generating anything


def test_tiny_stand_in_scores_in_a_positive_range(coco_prompts):
    adapter, processor = load_clip("tiny")
    scorer = CLIPScorer(adapter, processor)
    images = _images(3, seed=4)
    score = scorer.score(images, coco_prompts[:3])
    hand = _hand_scores(adapter.model, processor, images, coco_prompts[:3])
    assert 10 < score < 90 and score == pytest.approx(float(hand.mean()), abs=1e-4)
    assert len(set(hand.round(decimals=3).tolist())) == 3  # depends on image and prompt
