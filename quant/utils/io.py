"""Atomic file writes: a reader sees either the old file or the complete new one, never half."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    Works for files and folders. On an exception the temporary is removed and ``path`` is left
    as it was. Temporaries of the same ``path`` left by a killed process (``.<name>.*.tmp``) are
    removed first, so kills never accumulate files.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Temporaries of this same target that a killed run left behind: ours, and superseded now.
    clean_stale_temps(path.parent, f".{glob.escape(path.name)}.*.tmp")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    tmp = Path(tmp)
    try:
        yield tmp
        if path.is_dir() and tmp.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (fsynced before the rename).

    Raises:
        MixDQError: the write failed (disk full, file-size limit, no permission...): the message
            names ``path``; whatever was there before is kept.
    """
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    except OSError as e:
        raise write_error(path, e) from None


def write_error(path: str | os.PathLike, error: OSError):
    """The one-line error for a failed write of ``path`` (the older file is kept)."""
    from ..errors import MixDQError

    reason = error.strerror or type(error).__name__
    return MixDQError(f"could not write {path}: {reason}; the previous version (if any) is "
                      f"kept, free space or raise the limit and rerun")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_image(image, path: str | os.PathLike) -> None:
    """Save a PIL image atomically; the format comes from the suffix of ``path``."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            image.save(tmp, format=(path.suffix.lstrip(".") or "png").upper().replace("JPG",
                                                                                      "JPEG"))
    except OSError as e:
        raise write_error(path, e) from None


def clean_stale_temps(folder: str | os.PathLike, pattern: str = ".*.tmp") -> list[Path]:
    """Remove the temporaries that a killed :func:`atomic_path` left in ``folder``.

    Every writer of mixdq names its temporaries ``.<name>.<random>.tmp`` beside the target, so a
    run that finds them knows they are its own leftovers (files or folders). Call it when a stage
    starts, before it writes into ``folder``; a missing folder is fine.

    Args:
        folder: the folder to clean (not recursive).
        pattern: glob of the temporaries (default: every ``.*.tmp``).

    Returns:
        The paths removed.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for tmp in sorted(folder.glob(pattern)):
        try:
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp)
            else:
                tmp.unlink()
        except FileNotFoundError:  # another process of the same run removed it
            continue
        removed.append(tmp)
    return removed


def file_digest(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def safetensors_bytes(tensors: dict, metadata: dict[str, str] | None = None) -> bytes:
    """Serialise ``tensors`` in the safetensors format with a byte-reproducible header.

    ``safetensors.torch.save`` orders the ``__metadata__`` entries as a hash map does (differently
    from run to run); this writes the same format with every key sorted, tensors in name order, so
    the same tensors and metadata always give the same bytes. Any safetensors reader loads it.
    """
    import torch

    from safetensors.torch import _TYPES  # dtype name table of the installed safetensors

    names = {v: k for k, v in _TYPES.items()}
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in sorted(metadata.items())}
    chunks, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(chunks)
