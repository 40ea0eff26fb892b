"""Training checkpoints as safetensors: nested state (module and optimizer state dicts, step
counters) without pickle.

A state is any nest of dicts (string or integer keys), lists and tuples whose leaves are tensors
or JSON values. The tensors go into the safetensors file under their path in the nest; the nest
itself, with each tensor replaced by a reference, goes into the file's metadata as JSON. Loading
therefore never runs code from the file (``torch.load`` of a ``.pt`` would unpickle it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..errors import MixDQError
from ..utils.io import atomic_path

FORMAT = "mixdq-proxy-train-state"


def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous().clone()
        return {"tensor": prefix}
    if isinstance(obj, dict):
        items = []
        for key, value in obj.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise MixDQError(f"train state key {key!r} at {prefix!r} is not a str or int")
            items.append([key, _flatten(value, f"{prefix}.{key}", tensors)])
        return {"dict": items}
    if isinstance(obj, (list, tuple)):
        kind = "list" if isinstance(obj, list) else "tuple"
        return {kind: [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"value": obj}
    raise MixDQError(f"train state value at {prefix!r} has unsupported type {type(obj).__name__}")


def _unflatten(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    (kind, value), = node.items()
    if kind == "tensor":
        return tensors[value]
    if kind == "dict":
        return {key: _unflatten(v, tensors) for key, v in value}
    if kind == "list":
        return [_unflatten(v, tensors) for v in value]
    if kind == "tuple":
        return tuple(_unflatten(v, tensors) for v in value)
    if kind == "value":
        return value
    raise KeyError(kind)


def save_state(path: str | Path, state: dict) -> None:
    """Write ``state`` to one safetensors file, atomically."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    tree = _flatten(state, "s", tensors)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "tree": json.dumps(tree)})


def load_state(path: str | Path) -> dict | None:
    """The state saved by :func:`save_state`, or ``None`` when ``path`` does not exist.

    Raises:
        MixDQError: the file is unreadable or is not a proxy training state.
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise MixDQError(f"{path} is not a proxy training checkpoint (format "
                             f"{meta.get('format')!r}); delete it to start over")
        return _unflatten(json.loads(meta["tree"]), load_file(str(path)))
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
        # truncated or corrupt file: one line, not a traceback
        raise MixDQError(f"proxy training checkpoint {path} is unreadable ({exc}); delete it "
                         f"to start that stage over") from None
