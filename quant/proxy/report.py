"""The proxy's full-precision quality, measured: content accuracy, FID, and a captioned grid."""

from __future__ import annotations

from pathlib import Path

from .classifier import AttributeClassifier
from .grid import save_grid
from .metrics import content_scores, eval_captions, evaluate, real_images, classifier_fid
from .scenes import HELD_OUT, TRAIN, Scene


def fp_report(pipe, classifier: AttributeClassifier, steps: tuple[int, ...] = (1, 2, 4),
              repeats: int = 8, seed: int = 42) -> dict:
    """Content accuracy and FID of ``pipe`` on held-out and training captions.

    Args:
        pipe: the proxy pipeline.
        classifier: the judge.
        steps: step counts to measure.
        repeats: images per caption (seeds ``seed + i``).
        seed: first generator seed.

    Returns:
        ``{"real": {...}, "<split>/<n>step": {"content_acc", "fid", per-attribute...}}``; the
        ``real`` entry scores real dataset images the same way (the ceiling).
    """
    out = {}
    for split in ("heldout", "train"):
        captions = eval_captions(split, repeats)
        real = real_images(captions, seed=20_000)
        out[f"real/{split}"] = dict(content_scores(classifier, real, captions),
                                    fid=classifier_fid(classifier, real,
                                                       real_images(captions, 10_000)))
        for n in steps:
            res = evaluate(pipe, captions, seed=seed, steps=n, classifier=classifier)
            res.pop("images")
            out[f"{split}/{n}step"] = res
    return out


def save_fp_grid(pipe, classifier: AttributeClassifier, path: str | Path, seed: int = 7,
                 steps: int = 1) -> float:
    """A 6x4 grid: 12 held-out captions and 12 training captions, one step each.

    A caption whose image the classifier reads differently is titled in red.

    Returns:
        The content accuracy over the grid's 24 images.
    """
    from .metrics import generate_images

    captions = [s.caption for s in HELD_OUT[:12]] + [s.caption for s in TRAIN[::9][:12]]
    images = generate_images(pipe, captions, seed=seed, steps=steps)
    marks = [p == Scene.from_caption(c) for p, c in zip(classifier.predict(images), captions)]
    save_grid(images, captions, path, columns=6, marks=marks)
    return sum(marks) / len(marks)
