"""CLIPScore through torchmetrics, with a local CLIP model and a transformers-5 adapter.

torchmetrics' ``CLIPScore`` calls ``model.get_image_features`` / ``get_text_features`` and
expects tensors. transformers 5 returns output objects from those methods (the projected
embedding is their ``pooler_output``); :class:`CLIPFeatureAdapter` turns them back into tensors
so the stock metric works with either major version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import MixDQError
from ..utils.quiet import quiet_libraries

DEFAULT_CLIP = "openai/clip-vit-large-patch14"
NO_WEIGHTS_HINT = ("pass --clip PATH (a folder with a transformers CLIPModel and CLIPProcessor, "
                   "e.g. a download of " + DEFAULT_CLIP + "), --clip tiny (random stand-in, for "
                   "trying things out) or --no-clip")


def _as_tensor(output: Any) -> torch.Tensor:
    """The embedding tensor in whatever ``get_*_features`` returned."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if isinstance(pooled, torch.Tensor):
        return pooled
    if isinstance(output, (tuple, list)) and len(output) > 1:
        return output[1]  # (last_hidden_state, pooler_output) with return_dict=False
    raise TypeError(f"cannot find the embedding in a {type(output).__name__}")


class CLIPFeatureAdapter(nn.Module):
    """A CLIP model whose ``get_image_features``/``get_text_features`` always return tensors.

    Args:
        model: a transformers ``CLIPModel`` (or anything with the same two methods).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def config(self):
        return self.model.config

    def get_image_features(self, *args, **kwargs) -> torch.Tensor:
        return _as_tensor(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args, **kwargs) -> torch.Tensor:
        return _as_tensor(self.model.get_text_features(*args, **kwargs))

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)


def _hub_snapshot(repo: str) -> str | None:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo, local_files_only=True)
    except Exception:  # not cached (the hub raises several kinds)
        return None


def load_clip(path: str | None = None) -> tuple[CLIPFeatureAdapter, Any]:
    """Load a CLIP model and processor from local files only.

    Args:
        path: a folder holding a transformers ``CLIPModel`` and ``CLIPProcessor``, ``"tiny"``
            for the built-in random stand-in (:mod:`quant.bench.tiny_nets`), or ``None`` for
            ``openai/clip-vit-large-patch14`` from the Hugging Face cache.

    Returns:
        ``(adapter, processor)``, the model in eval mode on the CPU.

    Raises:
        MixDQError: folder missing or not a CLIP model, or no model available offline (the
            message names ``--clip`` and ``--no-clip``).
    """
    from transformers import CLIPModel, CLIPProcessor

    if path == "tiny":
        from .tiny_nets import tiny_clip

        model, processor = tiny_clip()
        return CLIPFeatureAdapter(model).eval(), processor
    if path is None:
        folder = _hub_snapshot(DEFAULT_CLIP)
        if folder is None:
            raise MixDQError(f"CLIPScore: {DEFAULT_CLIP} is not in the local Hugging Face "
                             f"cache; {NO_WEIGHTS_HINT}")
        flag = DEFAULT_CLIP
    else:
        folder, flag = str(Path(path).expanduser()), f"--clip {path}"
        if not Path(folder).is_dir():
            raise MixDQError(f"{flag}: no such folder")
    try:
        with quiet_libraries():  # the fallback-to-PIL-processor notice is not news
            model = CLIPModel.from_pretrained(folder, local_files_only=True)
            processor = CLIPProcessor.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MixDQError(f"{flag}: not a CLIP model and processor folder ({first})") from e
    return CLIPFeatureAdapter(model).eval(), processor


class CLIPScorer:
    """Mean CLIPScore of image sets against their prompts, one torchmetrics metric per set.

    Args:
        model: a :class:`CLIPFeatureAdapter` (or a CLIP model returning tensors).
        processor: its ``CLIPProcessor``.
        device: where the CLIP model runs.
    """

    def __init__(self, model: nn.Module, processor: Any, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = torch.device(device)

    def new_metric(self):
        """A fresh torchmetrics ``CLIPScore`` sharing this model (no reload per variant)."""
        from torchmetrics.multimodal.clip_score import CLIPScore

        return CLIPScore(model_name_or_path=lambda: (self.model, self.processor))

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompts: list[str]) -> float:
        """CLIPScore of uint8 images ``[N, 3, H, W]`` against ``prompts`` (one each).

        ``max(100 * mean cosine similarity, 0)``, as torchmetrics defines it.
        """
        metric = self.new_metric()
        metric.update(images.to(self.device), list(prompts))
        return float(metric.compute())
