"""One loader for calibration prompts.

Sources, told apart by their form:

- a COCO caption annotation JSON (``captions_val2014.json`` format): the first caption of each
  image, images in the order of their first appearance in ``annotations`` (what MixDQ calibrates
  on; ``coco_order="images"`` takes the ``images`` list's order instead); images without a caption
  come last and are reported as empty;
- a ``.csv`` / ``.tsv`` file with a header and a text column (default ``text``, as in the
  COCO-30k prompt list);
- a ``.txt`` file with one prompt per line;
- a ``datasets`` dataset: ``hf:NAME`` or ``hf:NAME:SPLIT`` (through ``datasets.load_dataset``), or
  a local folder written by ``save_to_disk`` (``load_from_disk``), with a text column.

Whitespace is normalized (runs of spaces and newlines become one space). Empty prompts (and
COCO images without a caption) and repeats of an earlier prompt are skipped and reported in the
returned :class:`PromptSet`, never fed to the model.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import random
from pathlib import Path

from ..errors import MixDQError

_FORMATS_HELP = ("use a COCO caption .json, a .csv/.tsv with a text column, a .txt with one "
                 "prompt per line, hf:NAME[:SPLIT], or a folder saved with datasets")


@dataclasses.dataclass
class PromptSet:
    """Prompts read from a source, with what was skipped on the way.

    Attributes:
        prompts: the selected prompts, in order.
        source: the source as given.
        kind: ``coco``, ``csv``, ``tsv``, ``text`` or ``datasets``.
        scanned: how many entries of the source were examined.
        empty: positions (0-based, in source order) of empty entries that were skipped.
        duplicates: positions of entries that repeat an earlier prompt and were skipped.
    """

    prompts: list[str]
    source: str
    kind: str
    scanned: int
    empty: list[int] = dataclasses.field(default_factory=list)
    duplicates: list[int] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        if not self.prompts:
            raise MixDQError(f"{self.source}: no usable prompts")

    def summary(self) -> str:
        """One line: how many prompts, and what was skipped."""
        line = (f"{len(self.prompts)} prompts from {self.source} ({self.kind}, "
                f"{self.scanned} entries read)")
        skipped = [f"{len(pos)} {what} (first at entry {pos[0]})"
                   for what, pos in (("empty", self.empty), ("duplicate", self.duplicates))
                   if pos]
        if skipped:
            line += "; skipped " + " and ".join(skipped)
        return line

    def describe(self) -> dict:
        """A JSON-able record of the source, for manifests."""
        return {"source": self.source, "kind": self.kind, "scanned": self.scanned,
                "skipped_empty": len(self.empty), "skipped_duplicates": len(self.duplicates)}


COCO_ORDERS = ("annotations", "images")


def _coco(path: Path, order: str = "annotations") -> list[str | None]:
    obj = _json(path)
    if not (isinstance(obj, dict) and isinstance(obj.get("images"), list)
            and isinstance(obj.get("annotations"), list)):
        raise MixDQError(f"{path}: not a COCO caption file (needs 'images' and 'annotations'); "
                         + _FORMATS_HELP)
    first: dict = {}
    try:
        for ann in obj["annotations"]:
            first.setdefault(ann["image_id"], ann["caption"])
        if order == "images":
            return [first.get(image["id"]) for image in obj["images"]]
        ids = {image["id"] for image in obj["images"]}
        # dicts keep insertion order: ``first`` is in order of first appearance in annotations
        return ([caption for image_id, caption in first.items() if image_id in ids]
                + [None for image in obj["images"] if image["id"] not in first])
    except (KeyError, TypeError):
        raise MixDQError(f"{path}: COCO entries lack 'id', 'image_id' or 'caption'") from None


def _json(path: Path):
    try:
        return json.loads(_text(path))
    except json.JSONDecodeError as e:
        raise MixDQError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise MixDQError(f"{path}: not UTF-8 text; " + _FORMATS_HELP) from None


def _table(path: Path, column: str, delimiter: str) -> list[str | None]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            if not reader.fieldnames:
                raise MixDQError(f"{path}: empty file, expected a header row")
            if column not in reader.fieldnames:
                raise MixDQError(f"{path}: no column {column!r} (columns: "
                                 f"{', '.join(reader.fieldnames)}); pick one with --column")
            return [row[column] for row in reader]
    except UnicodeDecodeError:
        raise MixDQError(f"{path}: not UTF-8 text; " + _FORMATS_HELP) from None
    except csv.Error as e:
        kind = "CSV" if delimiter == "," else "TSV"
        raise MixDQError(f"{path}: malformed {kind} ({e})") from None


def _datasets(source: str, column: str, split: str | None) -> list[str | None]:
    try:
        import datasets
    except ImportError:
        raise MixDQError(f"{source}: reading a datasets dataset needs the `datasets` package "
                         f"(pip install 'mixdq[data]')") from None
    try:
        if source.startswith("hf:"):
            name, _, named_split = source[3:].partition(":")
            data = datasets.load_dataset(name, split=named_split or split or "train")
        else:
            data = datasets.load_from_disk(source)
    except Exception as e:  # datasets raises many types (missing, offline, bad format)
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise MixDQError(f"{source}: could not load the dataset: {first}") from None
    if isinstance(data, datasets.DatasetDict):
        splits = list(data)
        chosen = split or ("train" if "train" in splits else splits[0] if len(splits) == 1
                           else None)
        if chosen not in data:
            raise MixDQError(f"{source}: pick a split with --split (splits: {', '.join(splits)})")
        data = data[chosen]
    if column not in data.column_names:
        raise MixDQError(f"{source}: no column {column!r} (columns: "
                         f"{', '.join(data.column_names)}); pick one with --column")
    return list(data[column])


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in
                                 ("dataset_info.json", "state.json", "dataset_dict.json"))


def _entries(source: str, column: str, split: str | None,
             coco_order: str = "annotations") -> tuple[str, list]:
    if source.startswith("hf:"):
        return "datasets", _datasets(source, column, split)
    path = Path(source).expanduser()
    if not path.exists():
        raise MixDQError(f"prompt source {source} does not exist")
    if path.is_dir():
        if not _is_saved_dataset(path):
            raise MixDQError(f"{source}: a folder, but not one saved with datasets; "
                             + _FORMATS_HELP)
        return "datasets", _datasets(str(path), column, split)
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "coco", _coco(path, coco_order)
    if suffix in (".csv", ".tsv"):
        return suffix[1:], _table(path, column, "," if suffix == ".csv" else "\t")
    if suffix == ".txt":
        return "text", _text(path).splitlines()
    raise MixDQError(f"{source}: unknown prompt file format {suffix or '(no suffix)'!r}; "
                     + _FORMATS_HELP)


def read_prompts(source: str, *, num_prompts: int | None = None, column: str = "text",
                 shuffle: bool = False, seed: int = 0, split: str | None = None,
                 coco_order: str = "annotations") -> PromptSet:
    """Read prompts from ``source``, skipping (and reporting) empty and repeated ones.

    Args:
        source: a file path, a saved dataset folder, or ``hf:NAME[:SPLIT]`` (see module doc).
        num_prompts: how many prompts to take; default all of them.
        column: the text column of a CSV/TSV file or a dataset.
        shuffle: take a random sample (seeded by ``seed``) instead of the first ``num_prompts``.
        seed: seed of the sample when ``shuffle`` is set.
        split: dataset split (default ``train``, or the only one).
        coco_order: image order of a COCO file: ``annotations`` (first appearance there, the
            original's; method ``paper``) or ``images`` (the ``images`` list).

    Returns:
        A :class:`PromptSet`.

    Raises:
        MixDQError: a missing source, an unknown format, a missing column, ``num_prompts < 1``,
            or fewer usable prompts than asked for.
    """
    if num_prompts is not None and num_prompts < 1:
        raise MixDQError(f"--num-prompts must be a positive integer, got {num_prompts}")
    if coco_order not in COCO_ORDERS:
        raise MixDQError(f"coco_order must be one of {', '.join(COCO_ORDERS)}, got {coco_order!r}")
    kind, entries = _entries(str(source), column, split, coco_order)
    # Without shuffling only the first num_prompts usable entries matter; stop there.
    wanted = None if shuffle else num_prompts
    prompts, seen, empty, duplicates = [], set(), [], []
    scanned = 0
    for pos, entry in enumerate(entries):
        if wanted is not None and len(prompts) == wanted:
            break
        scanned = pos + 1
        text = " ".join(str(entry).split()) if entry is not None else ""
        if not text:
            empty.append(pos)
        elif text in seen:
            duplicates.append(pos)
        else:
            seen.add(text)
            prompts.append(text)
    if num_prompts is not None and len(prompts) < num_prompts:
        raise MixDQError(f"{source} has {len(prompts)} usable prompts, fewer than "
                         f"--num-prompts {num_prompts}")
    if shuffle:
        rng = random.Random(seed)
        prompts = rng.sample(prompts, num_prompts or len(prompts))
    return PromptSet(prompts=prompts, source=str(source), kind=kind, scanned=scanned,
                     empty=empty, duplicates=duplicates)


def load_prompts(source: str, *, num_prompts: int | None = None, column: str = "text",
                 shuffle: bool = False, seed: int = 0, split: str | None = None,
                 coco_order: str = "annotations") -> list[str]:
    """The prompts of :func:`read_prompts` as a plain list (same arguments)."""
    return read_prompts(source, num_prompts=num_prompts, column=column, shuffle=shuffle,
                        seed=seed, split=split, coco_order=coco_order).prompts
