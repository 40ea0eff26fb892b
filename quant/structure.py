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
