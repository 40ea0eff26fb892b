"""What block caching saves, counted rather than timed.

Timing a block-cached evaluation against a full forward on a shared machine gave 0.34x on a busy
machine and 1.14x on an idle one for the same run. The work is fixed by the model's shapes, so
count it: the multiply-accumulates (MACs) of every Linear and Conv2d call in one full forward
(from the layer shapes and its output size), and for a perturbed layer the MACs of the layers
that are *not* inside a replayed unit (what the engine re-runs). Attention's own matrix
products (QK^T, AV) are not Linear/Conv2d calls and are left out of both counts.
"""

from __future__ import annotations

import torch
from torch import nn


def layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """MACs of one call of a Linear or Conv2d that produced ``output``."""
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    kh, kw = module.kernel_size
    return output.numel() * (module.in_channels // module.groups) * kh * kw


class MacCounter:
    """Counts the MACs of every Linear/Conv2d call while active, per layer name."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.macs: dict[str, int] = {}
        self._handles = []

    def __enter__(self) -> "MacCounter":
        for name, module in self.model.named_modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name: str):
        def hook(module, args, output):
            if isinstance(output, torch.Tensor):
                self.macs[name] = self.macs.get(name, 0) + layer_macs(module, output)
        return hook

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def rerun_macs(macs: dict[str, int], replayed: tuple[str, ...]) -> int:
    """MACs left to compute when the units ``replayed`` return cached outputs."""
    def inside(name: str) -> bool:
        return any(name == u or name.startswith(u + ".") for u in replayed)

    return sum(m for name, m in macs.items() if not inside(name))
