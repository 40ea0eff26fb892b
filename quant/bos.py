"""BOS-aware text-embedding quantization: the first token's row, observed and kept exact.

SDXL's CLIP text embedding has a huge outlier on its first (BOS) token, and that row is the same
for every prompt (CLIP is causal: the first token attends only to itself). So each
cross-attention key/value projection computes the BOS row's output once, in full precision, and
quantizes tokens 1.. only (see :class:`quant.qmodules.QuantLayer`). This module holds the two
pieces around that: checking during calibration that the row really is constant, and computing
its full-precision output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import MixDQError

# How far the BOS row may differ between calibration samples, relative to its largest entry:
# room for kernel-level float noise, far below what a prompt-dependent first token shows.
TOLERANCE = 1e-2


class BosObserver:
    """Tracks a layer's first-token input rows over calibration calls (no device sync per call)."""

    def __init__(self):
        self.reference: torch.Tensor | None = None
        self._deviation: torch.Tensor | None = None

    def update(self, rows: torch.Tensor) -> None:
        """Add the first-token rows ``[B, D]`` of one call."""
        rows = rows.detach().float()
        if self.reference is None:
            self.reference = rows[0].clone()
            self._deviation = torch.zeros((), device=rows.device)
        dev = (rows - self.reference).abs().amax()
        self._deviation = torch.maximum(self._deviation, dev)

    def constant_row(self, layer_name: str) -> torch.Tensor:
        """The observed BOS row, after checking it was the same in every sample.

        Raises:
            MixDQError: naming the layer, if the row changed between samples (a non-causal text
                encoder, or zeroed negative-prompt embeddings from classifier-free guidance).
        """
        if self.reference is None:
            raise MixDQError(f"layer {layer_name}: no BOS row was observed during calibration")
        dev = float(self._deviation)
        tol = TOLERANCE * max(float(self.reference.abs().max()), 1e-6)
        if not dev <= tol:
            raise MixDQError(
                f"layer {layer_name}: the first (BOS) token's text embedding differs between "
                f"calibration samples (max |diff| {dev:.4g} > {tol:.4g}); BOS-aware "
                f"quantization needs a causal text encoder and no zeroed negative prompts - "
                f"recalibrate without them or turn BOS handling off (--no-bos)")
        return self.reference


def full_precision_row(weight: torch.Tensor, bias: torch.Tensor | None,
                       row: torch.Tensor) -> torch.Tensor:
    """``row @ weight.T + bias`` in float32: the BOS token's output, ``[out]``."""
    b = None if bias is None else bias.detach().float()
    return F.linear(row.detach().float().reshape(1, -1), weight.detach().float(), b)[0]
