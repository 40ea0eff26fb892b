"""Merge integer projections that share their input into wide GEMMs.

- Self-attention: ``to_q``, ``to_k`` and ``to_v`` read the same hidden states: one GEMM of
  ``3 N`` columns (one quantize pass instead of three).
- Cross-attention: every ``to_k`` / ``to_v`` of the UNet reads the same text embedding: one
  GEMM per group of equal quantizers over all of them (SDXL: 140 layers), computed when the
  first of them is called and reused by the others, and across UNet calls while the same
  embedding tensor comes back unchanged (a pipeline passes one ``prompt_embeds`` tensor to
  every denoising step): the K/V projections run once per prompt.

Merging is exact: each output column depends only on its own weight row, weight sum, scale and
bias, and the wide layer stacks the members' rows in the kernels' layouts (int8, or packed int4
whose rows are independent), so every backend gives the members' outputs bit for bit. Layers
merge only when their activation quantizers (scale, zero point, bits), input width, weight
storage (int8 / int4), bias presence and BOS handling coincide; the calibration gives equal
quantizers to layers that observe the same tensor.

A member returns a slice (a view) of the wide output. The wide output is cached on the input
tensor's identity and version counter; it is dropped once every member has read it, except for
cross-attention groups, which keep it for the next call (in eager mode; during a CUDA graph
capture the GEMM is always recorded into the graph). Not for ``torch.compile`` (the cache is
Python state): compile an unmerged UNet.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .layout import unpack_int4
from .modules import IntLinear

MERGED_ATTR = "mixdq_merged"  # the UNet attribute holding the wide layers (one ModuleList)


def _key(layer: IntLinear) -> tuple:
    a = layer.gemm.act
    return (a.scale, a.zero_point, a.bits, layer.in_features, layer.gemm.int4,
            layer.bias is not None, layer.bos_row is not None, layer.backend)


def _int_weight(layer: IntLinear) -> torch.Tensor:
    w = layer.gemm.weight
    if layer.gemm.int4:
        return unpack_int4(w, layer.in_features)
    return w[:, :layer.in_features]


def _version(x: torch.Tensor) -> int | None:
    try:
        return x._version
    except RuntimeError:  # inference tensors have no version counter
        return None


class ProjectionGroup(nn.Module):
    """The wide integer layer of several projections of one input; serves their slices.

    Args:
        members: the :class:`IntLinear` layers (equal :func:`_key`), in output order.
        keep: keep the wide output for the next call with the same (unchanged) input tensor.
    """

    is_projection_group = True

    def __init__(self, members: list[IntLinear], keep: bool):
        super().__init__()
        first = members[0]
        q = torch.cat([_int_weight(m) for m in members])
        scale = torch.cat([m.weight_scale for m in members])
        bias = torch.cat([m.bias for m in members]) if first.bias is not None else None
        bos = torch.cat([m.bos_row for m in members]) if first.bos_row is not None else None
        self.wide = IntLinear(q, max(m.w_bits for m in members), scale, bias, first.gemm.act,
                              bos, first.backend).to(first.weight_scale.device)
        bounds, start = [], 0
        for m in members:
            bounds.append((start, start + m.out_features))
            start += m.out_features
        self.bounds = bounds
        self.keep = keep
        self.reset()

    def reset(self) -> None:
        """Forget the cached output."""
        self._x = self._out = self._version = None
        self._capturing = False
        self._served = 0

    def output(self, x: torch.Tensor) -> torch.Tensor:
        capturing = x.is_cuda and torch.cuda.is_current_stream_capturing()
        version = _version(x)
        hit = (self._x is x and self._version == version and self._capturing == capturing)
        if not hit:
            self._out = self.wide(x)
            self._x, self._version, self._capturing, self._served = x, version, capturing, 0
        self._served += 1
        out = self._out
        if self._served >= len(self.bounds) and (not self.keep or capturing or version is None):
            self.reset()
        return out


class MergedProjection(nn.Module):
    """Stands in for one member of a :class:`ProjectionGroup`: its slice of the wide output."""

    is_merged_projection = True

    def __init__(self, group: ProjectionGroup, index: int, name: str):
        super().__init__()
        object.__setattr__(self, "group", group)  # not a submodule: the UNet owns the group
        self.index = index
        self.member_name = name
        self.start, self.stop = group.bounds[index]
        self.out_features = self.stop - self.start
        self.in_features = group.wide.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.group.output(x)[..., self.start:self.stop]

    def extra_repr(self) -> str:
        return (f"columns [{self.start}, {self.stop}) of a merged {self.group.wide.out_features}-"
                f"wide GEMM ({len(self.group.bounds)} projections)")


@dataclasses.dataclass
class MergeReport:
    """What :func:`merge_projections` merged: group label -> member names."""

    groups: dict[str, list[str]]

    @property
    def group_of(self) -> dict[str, str]:
        return {n: g for g, names in self.groups.items() for n in names}

    def format(self) -> str:
        total = sum(len(v) for v in self.groups.values())
        lines = [f"{len(self.groups)} merged groups, {total} projections"]
        for g, names in self.groups.items():
            lines.append(f"  {g}: {len(names)} ({names[0]}, ...)")
        return "\n".join(lines)


def _attention_modules(unet: nn.Module):
    for name, module in unet.named_modules():
        if all(isinstance(getattr(module, p, None), nn.Module) for p in ("to_q", "to_k", "to_v")):
            cross = getattr(module, "is_cross_attention", None)
            if cross is None:
                cross = name.endswith("attn2")
            yield name, module, bool(cross)


def _partition(items: list[tuple[str, IntLinear]]) -> list[list[tuple[str, IntLinear]]]:
    parts: dict[tuple, list] = {}
    for name, layer in items:
        parts.setdefault(_key(layer), []).append((name, layer))
    return [p for p in parts.values() if len(p) > 1]


@torch.no_grad()
def merge_projections(unet: nn.Module, self_attention: bool = True,
                      cross_attention: bool = True) -> MergeReport:
    """Merge the integer q/k/v of each self-attention and all cross-attention k/v, in place.

    Projections still simulated or in float (not :class:`IntLinear`) are left alone.
    """
    from ..quantize import set_submodule

    def prefix(name):
        return f"{name}." if name else ""

    groups: list[tuple[str, list[tuple[str, IntLinear]], bool]] = []
    cross_items = []
    for name, attn, cross in _attention_modules(unet):
        p = prefix(name)
        if cross:
            cross_items += [(p + proj, getattr(attn, proj)) for proj in ("to_k", "to_v")
                            if isinstance(getattr(attn, proj), IntLinear)]
        elif self_attention:
            items = [(p + proj, getattr(attn, proj)) for proj in ("to_q", "to_k", "to_v")
                     if isinstance(getattr(attn, proj), IntLinear)]
            for i, part in enumerate(_partition(items)):
                groups.append((f"{name}.qkv" + (f"{i}" if i else ""), part, False))
    if cross_attention:
        for i, part in enumerate(_partition(cross_items)):
            groups.append((f"cross_kv{i}", part, True))
    holder = getattr(unet, MERGED_ATTR, None)
    if holder is None:
        holder = nn.ModuleList()
        unet.add_module(MERGED_ATTR, holder)
    report = MergeReport({})
    for label, part, keep in groups:
        group = ProjectionGroup([layer for _, layer in part], keep)
        holder.append(group)
        for i, (name, _) in enumerate(part):
            set_submodule(unet, name, MergedProjection(group, i, name))
        report.groups[label] = [name for name, _ in part]
    return report


def reset_merge_caches(unet: nn.Module) -> None:
    """Drop every cached wide output (e.g. before measuring, or to free memory)."""
    for m in unet.modules():
        if getattr(m, "is_projection_group", False):
            m.reset()
