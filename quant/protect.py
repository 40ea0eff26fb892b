"""The protect list: activation layers kept in floating point, one name per line.

Written by the sensitivity stage (``SENS.protect.txt``), read by the allocate stage. A leaf
module: the one reader of the format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from .errors import MixDQError


def read_protect_list(path: str | Path, known: Iterable[str] | None = None) -> list[str]:
    """Read a protect list: one layer name per line, ``#`` starts a comment, blanks ignored.

    Args:
        path: the text file.
        known: the layer names the list may use (e.g. a sensitivity table's); ``None``: any.

    Returns:
        The names, in file order, without duplicates.

    Raises:
        MixDQError: a missing or unreadable file, or a name not in ``known`` (with its line).
    """
    path = Path(path)
    if not path.is_file():
        raise MixDQError(f"protect list {path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise MixDQError(f"protect list {path}: not UTF-8 text") from None
    except OSError as e:
        raise MixDQError(f"protect list {path}: cannot read it ({type(e).__name__})") from None
    known = None if known is None else set(known)
    names: dict[str, None] = {}
    for number, line in enumerate(text.splitlines(), 1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if known is not None and name not in known:
            raise MixDQError(f"protect list {path} line {number}: layer {name!r} is not in the "
                             f"sensitivity table")
        names[name] = None
    return list(names)
