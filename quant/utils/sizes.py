"""The one byte counter and the one unit: MB = 10^6 bytes, sizes compared with fp16 weights.

Every size mixdq prints (quantize summary, benchmark report, deploy report, GPU benchmark)
goes through these: :func:`tensor_bytes` (tensors as they sit in memory),
:func:`weight_bytes` (a UNet as deployed: packed integers + scales for quantized layers),
:func:`fp16_bytes` (the baseline: every parameter as fp16) and :func:`format_mb`.
"""

from __future__ import annotations

from torch import nn

MB = 1_000_000
FP16_BYTES = 2
UNIT = "MB"  # printed in headers: "weights (MB)"


def megabytes(nbytes: int | float) -> float:
    return nbytes / MB


def format_mb(nbytes: int | float | None, digits: int = 2) -> str:
    """``nbytes`` in MB with ``digits`` decimals, ``—`` for unknown."""
    return "—" if nbytes is None else f"{nbytes / MB:.{digits}f}"


def percent_of(nbytes: int | float | None, baseline: int | float | None) -> str:
    """``nbytes`` as a percentage of ``baseline`` (``—`` if either is unknown)."""
    if nbytes is None or not baseline:
        return "—"
    return f"{100 * nbytes / baseline:.1f}%"


def _tensors(module: nn.Module, recurse: bool = True) -> list:
    return list(module.parameters(recurse=recurse)) + list(module.buffers(recurse=recurse))


def tensor_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers as stored, each tensor counted once."""
    tensors = {id(t): t for t in _tensors(module)}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def fp16_bytes(module: nn.Module) -> int:
    """The baseline: the module's parameters (each counted once) stored as fp16."""
    params = {id(p): p for p in module.parameters()}
    return FP16_BYTES * sum(p.numel() for p in params.values())


def _integer_form_nbytes(module: nn.Module) -> int:
    """Bytes of a quantized layer as a checkpoint stores it: packed integer weight (or the float
    weight where it stays float), float32 per-channel scales, bias in the layer's dtype, the
    activation scales and zero points, and the precomputed BOS row."""
    from ..packing import values_per_byte

    form = module.integer_form()
    item = module.weight.element_size()
    if form.w_bits is not None:
        out, k = form.qweight.shape
        total = out * -(-k // values_per_byte(form.w_bits)) + 4 * form.wscale.numel()
    else:
        total = form.weight.numel() * item
    if form.bias is not None:
        total += form.bias.numel() * item
    for extra in (form.act_scale, form.act_zero_point, form.bos_row):
        if extra is not None:
            total += extra.numel() * 4
    return total


def _module_nbytes(module: nn.Module) -> int | None:
    """A module's deployable size if it knows it (``quantized_nbytes()``, or a quantized layer
    with an integer form), else ``None``."""
    hook = getattr(module, "quantized_nbytes", None)
    if callable(hook):
        return int(hook())
    if getattr(module, "is_quantized_module", False) and callable(
            getattr(module, "integer_form", None)):
        return _integer_form_nbytes(module)
    return None


def weight_bytes(unet: nn.Module) -> int:
    """Bytes of the UNet's weights as deployed.

    Quantized layers count their packed integer weights plus scales (a module may say its own
    size through a ``quantized_nbytes()`` method); everything else counts its parameters and
    buffers as they are. Tensors shared between modules are counted once.
    """
    seen: set[int] = set()
    total = 0

    def visit(module: nn.Module) -> None:
        nonlocal total
        size = _module_nbytes(module)
        if size is not None:
            total += size
            seen.update(id(t) for t in _tensors(module))
            return
        for t in _tensors(module, recurse=False):
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
        for child in module.children():
            visit(child)

    visit(unet)
    return total
