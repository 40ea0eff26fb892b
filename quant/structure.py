"""What the UNet's structure says about quantization, read from the model itself."""

from __future__ import annotations

from torch import nn

QUANTIZABLE = (nn.Linear, nn.Conv2d)


def quantizable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every ``nn.Linear`` and ``nn.Conv2d`` of ``model`` by qualified name, in module order.

    A quantized wrapper (a module whose ``is_quantized_module`` is true) counts as the layer it
    replaces; modules inside it are not listed again.
    """
    out = {}
    for name, module in model.named_modules():
        if getattr(module, "is_quantized_module", False):
            out[name] = module
        elif isinstance(module, QUANTIZABLE) and not _inside_quantized(model, name):
            out[name] = module
    return out


def _inside_quantized(model: nn.Module, name: str) -> bool:
    parts = name.split(".")
    for i in range(1, len(parts)):
        parent = model.get_submodule(".".join(parts[:i]))
        if getattr(parent, "is_quantized_module", False):
            return True
    return False


def is_cross_attention_kv(name: str, model: nn.Module | None = None) -> bool:
    """Whether ``name`` is a key/value projection of a cross-attention (text-conditioned).

    With ``model``, this is read from the attention module (``is_cross_attention``); without it,
    from diffusers' naming (``attn2.to_k`` / ``attn2.to_v``).
    """
    parent, _, leaf = name.rpartition(".")
    if leaf not in ("to_k", "to_v"):
        return False
    if model is not None:
        attn = model.get_submodule(parent)
        return bool(getattr(attn, "is_cross_attention", False))
    return parent.endswith("attn2")


#: Which layers reading ``concat(hidden, skip)`` get split quantizers: the original splits only
#: ``conv_shortcut`` (activation and weight; method ``paper``); switch ``conv1_split`` adds the
#: resnet's ``conv1`` (activation only).
SPLIT_LEAVES = ("conv_shortcut",)


def concat_splits(unet: nn.Module,
                  leaves: tuple[str, ...] = ("conv1", "conv_shortcut")) -> dict[str, int]:
    """Layers whose input is ``concat(hidden, skip)`` along channels, with ``hidden``'s width.

    Read from the model as diffusers builds it: each up-block resnet gets the running hidden
    state concatenated with a skip connection. The hidden state entering an up block has the
    width of the block before it (the mid block for the first); inside a block it has the
    previous resnet's output width. The resnet's ``conv1`` (after norm and SiLU, channel order
    kept) and ``conv_shortcut`` see that concatenation.

    Args:
        unet: the UNet.
        leaves: which of the resnet's layers to list (both by default).

    Returns:
        Layer name -> channel count of the first slice, for every such ``nn.Conv2d``.
    """
    up_blocks = getattr(unet, "up_blocks", None)
    if not up_blocks:
        return {}
    before = getattr(unet, "mid_block", None) or unet.down_blocks[-1]
    hidden = before.resnets[-1].out_channels
    splits = {}
    for i, block in enumerate(up_blocks):
        for j, resnet in enumerate(block.resnets):
            if resnet.in_channels > hidden:
                for leaf in leaves:
                    conv = getattr(resnet, leaf, None)
                    if isinstance(conv, nn.Conv2d) and conv.in_channels == resnet.in_channels:
                        splits[f"up_blocks.{i}.resnets.{j}.{leaf}"] = hidden
            hidden = resnet.out_channels
        upsamplers = getattr(block, "upsamplers", None)
        if upsamplers:
            hidden = upsamplers[-1].out_channels
    return splits
