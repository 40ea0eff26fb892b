"""The precision policy, in one place.

- CPU: everything in float32. Half precision is slow there and several kernels (LayerNorm,
  GroupNorm, some convolutions) are missing for it, so a request for fp16/bf16 on CPU warns and
  falls back.
- CUDA: UNet and text encoders in fp16. The VAE stays fp16 too; the stock SDXL pipeline upcasts it
  to float32 for decoding when ``vae.config.force_upcast`` says so.
- Every UNet call gets its floating inputs cast to the UNet's dtype (prompt embeddings, added
  conditions, latents), so mixed dtypes between components can never reach a matmul.
- A NaN or Inf in the UNet output or the decoded image raises :class:`MixDQError` naming the
  component, instead of silently producing a black image.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from .errors import MixDQError

_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
           "float16": torch.float16, "half": torch.float16, "bf16": torch.bfloat16,
           "bfloat16": torch.bfloat16}


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """Turn ``"fp16"``-style names into torch dtypes; ``None`` stays ``None``."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise MixDQError(f"unknown dtype {dtype!r}; use one of fp32, fp16, bf16") from None


def resolve_dtype(device: str | torch.device,
                  requested: str | torch.dtype | None = None) -> torch.dtype:
    """The compute dtype for the UNet and text encoders on ``device``.

    Args:
        device: where the model runs.
        requested: what the user asked for, or ``None`` for the device default.

    Returns:
        float32 on CPU (with a warning if something else was asked for), fp16 by default on CUDA.
    """
    device = torch.device(device)
    requested = parse_dtype(requested)
    if device.type == "cpu":
        if requested not in (None, torch.float32):
            warnings.warn(f"{requested} on CPU is slow and partly unsupported; using float32",
                          stacklevel=2)
        return torch.float32
    return requested or torch.float16


def _cast_tree(obj: Any, dtype: torch.dtype) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(dtype) if obj.is_floating_point() and obj.dtype != dtype else obj
    if isinstance(obj, dict):
        return {k: _cast_tree(v, dtype) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cast_tree(v, dtype) for v in obj)
    return obj


def _first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output:
        return _first_tensor(output[0])
    sample = getattr(output, "sample", None)
    return sample if isinstance(sample, torch.Tensor) else None


def check_finite(tensor: torch.Tensor, component: str, model: str | None = None) -> None:
    """Raise :class:`MixDQError` if ``tensor`` holds a NaN or Inf.

    The message names ``model`` (the variant or checkpoint) when given, and suggests float32
    only when the tensor is not already float32 (in float32 a non-finite value means broken
    weights or inputs, not an overflow).
    """
    if not torch.isfinite(tensor).all():
        bad = "NaN" if torch.isnan(tensor).any() else "Inf"
        where = f" of {model}" if model else ""
        dtype = str(tensor.dtype).removeprefix("torch.")
        if tensor.dtype == torch.float32 or tensor.dtype == torch.float64:
            advice = (f"it already runs in {dtype}, so its weights or inputs are broken - "
                      f"check the checkpoint or model")
        else:
            advice = ("the model overflowed or its weights are broken - try float32 "
                      "(--dtype fp32) or check the checkpoint")
        raise MixDQError(f"{bad} in the {component} output{where} ({dtype}); {advice}")


class PrecisionGuard:
    """Hooks that enforce the policy on a pipeline: input casting and finite-output checks.

    Use as a context manager or call :meth:`remove`; :func:`quant.models.load_pipeline` attaches
    one for the pipeline's lifetime (``pipe.mixdq_guard``).
    """

    def __init__(self, pipe, name: str | None = None):
        self._handles = []
        self.name = name  # named in error messages (e.g. the benchmark variant)
        unet = pipe.unet
        self._handles.append(unet.register_forward_pre_hook(self._cast_inputs, with_kwargs=True))
        self._handles.append(unet.register_forward_hook(self._check("UNet")))
        vae = pipe.vae
        for module in (vae.post_quant_conv, vae.decoder):
            if module is not None:
                self._handles.append(module.register_forward_pre_hook(self._cast_inputs,
                                                                      with_kwargs=True))
        self._handles.append(vae.decoder.register_forward_hook(self._check("VAE decoder")))

    @staticmethod
    def _cast_inputs(module, args, kwargs):
        dtype = next(module.parameters()).dtype
        return _cast_tree(args, dtype), _cast_tree(kwargs, dtype)

    def _check(self, component: str):
        def hook(module, args, output):
            tensor = _first_tensor(output)
            if tensor is not None:
                check_finite(tensor, component, self.name)
        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> "PrecisionGuard":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
