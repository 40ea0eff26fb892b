"""Settings records compared between runs: the first difference, named by its key path."""

from __future__ import annotations

import hashlib
import json
from typing import Any

_ABSENT = object()


def first_difference(old: Any, new: Any, key: str = "") -> str | None:
    """The first place where two JSON-like records differ, as ``"a.b: X there, Y now"``.

    Mappings are walked key by key (sorted), lists item by item (``a[2]``); ``None`` when equal.
    """
    if old == new:
        return None
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new), key=str):
            found = first_difference(old.get(k, _ABSENT), new.get(k, _ABSENT),
                                     f"{key}.{k}" if key else str(k))
            if found:
                return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            found = first_difference(a, b, f"{key}[{i}]")
            if found:
                return found

    def show(value):
        text = "(absent)" if value is _ABSENT else repr(value)
        return text if len(text) <= 80 else text[:77] + "..."

    return f"{key or 'record'}: {show(old)} there, {show(new)} now"


def json_digest(obj: Any) -> str:
    """sha256 of a JSON value's canonical form (sorted keys, no spaces)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    return hashlib.sha256(blob).hexdigest()
