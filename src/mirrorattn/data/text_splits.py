"""A folder of split files, as GLUE and Hugging Face exports store a text classification task.

The folder holds ``train.*``, optionally ``dev.*`` / ``val.*`` / ``valid.*`` / ``validation.*``
and ``test.*``, each a ``.tsv``, ``.csv``, ``.jsonl`` / ``.ndjson`` or ``.json`` file (JSON Lines,
as ``Dataset.to_json`` writes, or one array of objects), or a ``.parquet`` file (read by
:mod:`mirrorattn.data.hf_sources`, with the optional ``[hf]`` extra); names are matched case-insensitively.

Columns are found per file: the text column is ``text_column`` if the file has it, else the first
of :data:`TEXT_COLUMNS` it has (exact name, then any case); the label column likewise from
:data:`LABEL_COLUMNS`. Detection applies while the option is at its default (``text`` /
``label``); a name of your own must be in every labelled file. A file lacking a column raises
:class:`~mirrorattn.data.paths.DataError` naming the file and its columns.

Labels are strings or integers (:func:`mirrorattn.data.text_files.normalise_labels`), numbered
from the training file (integers 0..C-1 keep their ids, other labels are numbered in sorted
order; a Hugging Face ``ClassLabel`` column keeps its ids and names), the same in every file; a
validation or test label not seen in training is an error.

Roles: ``train`` is the training pool; the validation file is the validation split and the test
file the test split. A test file without any label column (GLUE's test files are unlabelled) is
not used (a warning says so). Without a (labelled) test file, the validation file becomes the
test split - GLUE results are reported on dev - and the validation split is carved from the
training pool; with neither, :func:`mirrorattn.data.text.load_text_dataset` holds out both.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mirrorattn.data.paths import DataError
from mirrorattn.data.text_files import column_values, label_lookup, normalise_labels, read_rows

SPLIT_FILE_SUFFIXES = (".tsv", ".csv", ".jsonl", ".ndjson", ".json", ".parquet")
#: file stem -> split
SPLIT_STEMS = {"train": "train", "dev": "val", "val": "val", "valid": "val", "validation": "val", "test": "test"}
#: text columns tried, in order, when ``text_column`` is the default
TEXT_COLUMNS = ("text", "sentence", "review", "content", "document", "comment", "tweet", "body", "utterance", "passage")
#: label columns tried, in order, when ``label_column`` is the default
LABEL_COLUMNS = ("label", "labels", "sentiment", "class", "category", "target", "y")
DEFAULT_TEXT_COLUMN, DEFAULT_LABEL_COLUMN = "text", "label"
#: one split's rows (dicts), its column names and ``{column: class names}`` of its ClassLabel columns
SplitTable = tuple[list[dict[str, Any]], list[str], dict[str, list[str]]]


@dataclass
class SplitFiles:
    """The labelled splits read from a folder: ``parts[split] = (texts, class ids)``, the class names,
    and per split the file, text column and label column used (``files``)."""

    folder: Path
    parts: dict[str, tuple[list[str], np.ndarray]]
    label_names: list[str]
    files: dict[str, tuple[Path, str, str]] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)  #: files not used (an unlabelled test file)

    def describe(self) -> str:
        """``FOLDER (train: train.tsv [sentence, label], test: dev.tsv [...])``: where each split came from."""
        shown = ", ".join(f"{s}: {p.name} [{t}, {lab}]" for s, (p, t, lab) in self.files.items())
        unused = "".join(f", {name} unlabelled: not used" for name in self.unused)
        return f"{self.folder} ({shown}{unused})"


def resolve_split_folder(name: str | os.PathLike, root: Path) -> Path | None:
    """The folder ``name`` names (as given, then in the data root ``root``) if it holds split files, else None."""
    raw = Path(name).expanduser()
    for cand in ([raw] if raw.is_absolute() else [raw, root / raw]):
        if cand.is_dir() and find_split_files(cand, strict=False):
            return cand
    return None


def find_split_files(folder: Path, *, strict: bool = True) -> dict[str, Path]:
    """``{split: path}`` of the split files in ``folder``. ``strict``: DataError for two files of one split,
    or no training file."""
    found: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in SPLIT_FILE_SUFFIXES and p.stem.lower() in SPLIT_STEMS:
            found.setdefault(SPLIT_STEMS[p.stem.lower()], []).append(p)
    if not strict:
        return {s: ps[0] for s, ps in found.items()}
    for split, paths in found.items():
        if len(paths) > 1:
            raise DataError(f"{folder}: {len(paths)} files for the {split} split ({', '.join(p.name for p in paths)}); "
                            "keep one of them")
    if "train" not in found:
        hf = any((folder / n).is_file() for n in ("dataset_dict.json", "dataset_info.json", "state.json"))
        hint = (" (this looks like a Hugging Face save_to_disk folder: export each split with "
                "ds['train'].to_csv('train.csv') ...)" if hf else "")
        raise DataError(f"{folder}: no training file train.tsv/.csv/.jsonl/.json{hint}; the folder holds "
                        f"{', '.join(sorted(p.name for ps in found.values() for p in ps)) or 'no split files'}")
    return {s: ps[0] for s, ps in found.items()}


def pick_column(columns: list[str], wanted: str, default: str, candidates: tuple[str, ...]) -> str | None:
    """The column to use: ``wanted`` if present; while ``wanted`` is ``default``, the first candidate present
    (exact name first, then any case); None if none is."""
    if wanted in columns:
        return wanted
    if wanted != default:
        return None
    lower = {c.lower(): c for c in reversed(columns)}
    for cand in candidates:
        if cand in columns:
            return cand
        if cand.lower() in lower:
            return lower[cand.lower()]
    return None


def _missing(path: Path, columns: list[str], what: str, wanted: str, default: str, candidates: tuple[str, ...],
             option: str) -> DataError:
    tried = repr(wanted) if wanted != default else f"any of {', '.join(candidates)}"
    return DataError(f"{path}: no {what} column ({tried}); the file has the columns "
                     f"{', '.join(repr(c) for c in columns)}. Name it with {option} COLUMN")


def read_split_table(path: Path) -> SplitTable:
    """The rows, columns and ClassLabel names of a split file (:func:`read_rows`; ``.parquet`` files through
    :func:`mirrorattn.data.hf_sources.read_parquet`, imported only for them)."""
    if path.suffix.lower() == ".parquet":
        from mirrorattn.data.hf_sources import read_parquet

        return read_parquet(path)
    rows, columns = read_rows(path)
    return rows, columns, {}


def _read_split(
    path: Path, text_column: str, label_column: str, split: str, read: Callable[[Path], SplitTable]
) -> tuple[list[str], list[Any], str, str, list[str] | None] | None:
    """(texts, raw labels, text column, label column, its ClassLabel names or None) of one file; None for an
    unlabelled test file."""
    rows, columns, class_names = read(path)
    text = pick_column(columns, text_column, DEFAULT_TEXT_COLUMN, TEXT_COLUMNS)
    if text is None:
        raise _missing(path, columns, "text", text_column, DEFAULT_TEXT_COLUMN, TEXT_COLUMNS, "--text-column")
    label = pick_column(columns, label_column, DEFAULT_LABEL_COLUMN, LABEL_COLUMNS)
    if label is None and split == "test":
        return None
    if label is None:
        raise _missing(path, columns, "label", label_column, DEFAULT_LABEL_COLUMN, LABEL_COLUMNS, "--label-column")
    texts, values = column_values(rows, path, text, label)
    return texts, values, text, label, class_names.get(label)


def read_split_folder(
    folder: str | os.PathLike, *, text_column: str = DEFAULT_TEXT_COLUMN, label_column: str = DEFAULT_LABEL_COLUMN
) -> SplitFiles:
    """Read a folder of split files (module docstring): the labelled splits, with one class numbering.

    ``parts`` has ``"train"`` and, when given, ``"val"`` and ``"test"``; a validation file without a
    test file comes back as ``"test"`` (GLUE's dev set as the evaluation set).
    """
    folder = Path(folder)
    return read_splits(folder, find_split_files(folder), text_column=text_column, label_column=label_column)


def read_splits(
    folder: Path,
    paths: dict[str, Path],
    *,
    text_column: str = DEFAULT_TEXT_COLUMN,
    label_column: str = DEFAULT_LABEL_COLUMN,
    reader: Callable[[Path], SplitTable] = read_split_table,
) -> SplitFiles:
    """:func:`read_split_folder` of the splits ``{split: source}`` (``"train"`` required), each read by
    ``reader(source)``; ``folder`` is the data set, for messages. A training label column of ClassLabel type
    keeps its ids (its names are the class names)."""
    if "train" not in paths:
        raise DataError(f"{folder}: no training split; the splits found are {', '.join(paths) or 'none'}")
    paths = dict(paths)
    read: dict[str, tuple[list[str], list[Any], str, str, list[str] | None]] = {}
    unused = []
    for split in ("train", "val", "test"):
        if split in paths:
            got = _read_split(paths[split], text_column, label_column, split, reader)
            if got is None:
                fallback = "the validation file" if "val" in paths else "a held-out share of the training file"
                warnings.warn(f"{paths[split]} has no label column (GLUE's test files are unlabelled): it is not "
                              f"used; the test split is {fallback}", stacklevel=3)
                unused.append(paths.pop(split).name)
            else:
                read[split] = got
    if "test" not in read and "val" in read:
        read["test"], paths["test"] = read.pop("val"), paths.pop("val")
    norm = {s: normalise_labels(r[1], paths[s], r[3]) for s, r in read.items()}
    class_names = read["train"][4]
    lookup, names = label_lookup(norm["train"]) if class_names is None else (
        {i: i for i in range(len(class_names))}, list(class_names))
    parts: dict[str, tuple[list[str], np.ndarray]] = {}
    for split in read:
        unknown = next(((i, v) for i, v in enumerate(norm[split], 1) if v not in lookup), None)
        if unknown is not None:
            raise DataError(f"{paths[split]}, row {unknown[0]}: label {unknown[1]!r} is not among the training "
                            f"labels ({', '.join(names)}); fix the label or add training examples of it")
        parts[split] = (read[split][0], np.asarray([lookup[v] for v in norm[split]], dtype=np.int64))
    files = {s: (paths[s], read[s][2], read[s][3]) for s in read}
    return SplitFiles(folder, parts, names, files, unused)


__all__ = [
    "LABEL_COLUMNS",
    "SPLIT_FILE_SUFFIXES",
    "SPLIT_STEMS",
    "TEXT_COLUMNS",
    "SplitFiles",
    "SplitTable",
    "find_split_files",
    "pick_column",
    "read_split_folder",
    "read_split_table",
    "read_splits",
    "resolve_split_folder",
]
