"""Which metric judges a layer (its group), and which block a layer belongs to (for plots)."""

from __future__ import annotations

import dataclasses

from ..errors import MixDQError

CONTENT = "content"
QUALITY = "quality"
# METHOD section 4: cross-attention and feed-forward layers shape what is drawn.
DEFAULT_CONTENT_PATTERNS = ("attn2", "ff")


@dataclasses.dataclass(frozen=True)
class GroupRule:
    """Layers whose name contains any of ``content`` are content-related, the rest quality-related.

    Args:
        content: substrings of module names that mark a content-related layer (MixDQ's rule:
            ``attn2`` for cross-attention and ``ff`` for feed-forward: 420 of SDXL's 794 layers).
    """

    content: tuple[str, ...] = DEFAULT_CONTENT_PATTERNS

    def __post_init__(self):
        content = tuple(self.content)
        if any(not isinstance(p, str) or not p for p in content):
            raise MixDQError(f"content-group patterns must be non-empty strings, got {content!r}")
        object.__setattr__(self, "content", content)

    def group(self, name: str) -> str:
        """``"content"`` or ``"quality"`` for the layer called ``name``."""
        return CONTENT if any(p in name for p in self.content) else QUALITY

    def to_dict(self) -> dict:
        return {"content": list(self.content)}

    @classmethod
    def from_dict(cls, data: dict) -> "GroupRule":
        return cls(tuple(data.get("content", DEFAULT_CONTENT_PATTERNS)))


def block_of(name: str) -> str:
    """The top-level block of a layer: ``down_blocks.1``, ``mid_block``, ``up_blocks.0``...

    Layers outside the numbered blocks are their own row (``conv_in``, ``time_embedding``,
    ``add_embedding``, ``conv_out``).
    """
    parts = name.split(".")
    if parts[0] in ("down_blocks", "up_blocks") and len(parts) > 1:
        return ".".join(parts[:2])
    return parts[0]


def block_order(blocks: list[str]) -> list[str]:
    """``blocks`` in the order the UNet runs them: the inputs and embeddings, the down blocks,
    the mid block, the up blocks, then the output layers (module order puts up before mid)."""
    def key(item):
        index, block = item
        parts = block.split(".")
        if parts[0] == "down_blocks":
            return (1, int(parts[1]), 0)
        if parts[0] == "mid_block":
            return (2, 0, 0)
        if parts[0] == "up_blocks":
            return (3, int(parts[1]), 0)
        return (4 if block.startswith("conv_norm_out") or block.startswith("conv_out") else 0,
                0, index)
    return [block for _, block in sorted(enumerate(dict.fromkeys(blocks)), key=key)]
