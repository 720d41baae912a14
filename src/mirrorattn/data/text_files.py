"""User text classification files: JSONL, CSV or TSV with a text column, a label column and an
optional split column (train / test / val). Used by :func:`mirrorattn.data.text.load_text_dataset`.

A file that cannot be used raises :class:`~mirrorattn.data.paths.DataError` (a ``ValueError``)
with one line naming the file, the line or row and the problem.
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from mirrorattn.data.paths import DataError, DataNotFoundError

BUILTIN_DATASETS = ("imdb", "polarity")
USER_FILE_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".tsv")
_INT_LABEL = re.compile(r"-?[0-9]{1,18}")
SPLIT_NAMES = {"train": "train", "test": "test", "val": "val", "valid": "val", "validation": "val", "dev": "val"}


def _json_array(path: Path) -> list[dict[str, Any]] | None:
    """The rows of a ``.json`` file holding one JSON array of objects; None if it is JSON Lines instead."""
    with open(path, encoding="utf-8-sig") as fh:
        head = fh.read(4096).lstrip()
        if not head.startswith("["):
            return None
        fh.seek(0)
        try:
            rows = json.load(fh)
        except ValueError as exc:
            raise DataError(f"{path}: not valid JSON ({getattr(exc, 'msg', exc)})") from None
    bad = next((r for r in rows if not isinstance(r, dict)), None)
    if bad is not None:
        raise DataError(f"{path}: expected an array of JSON objects, found a {type(bad).__name__}")
    return rows


def read_rows(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of a JSONL/CSV/TSV file as dicts, and the column names seen.

    ``.json`` is JSON Lines (what Hugging Face's ``Dataset.to_json`` writes) or one array of objects.
    """
    suffix = path.suffix.lower()
    try:
        array = _json_array(path) if suffix == ".json" else None
        if array is not None:
            rows = array
            columns = list(dict.fromkeys(k for r in rows for k in r))
        elif suffix in (".jsonl", ".ndjson", ".json"):
            rows = []
            with open(path, encoding="utf-8-sig") as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except ValueError as exc:  # JSONDecodeError, or an integer of more than 4300 digits
                        raise DataError(f"{path}, line {lineno}: not valid JSON ({getattr(exc, 'msg', exc)})") from None
                    if not isinstance(row, dict):
                        raise DataError(
                            f"{path}, line {lineno}: expected a JSON object per line, got {type(row).__name__}"
                        )
                    rows.append(row)
            columns = list(dict.fromkeys(k for r in rows for k in r))
        else:
            with open(path, encoding="utf-8-sig", newline="") as fh:
                reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
                rows = list(reader)
                columns = list(reader.fieldnames or [])
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc}); save it as UTF-8") from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed {suffix[1:].upper()} ({exc})") from None
    if not rows:
        raise DataError(f"{path} holds no rows")
    return rows, columns


def normalise_labels(values: list[Any], path: Path, column: str) -> list[int | str]:
    """Label values as ints (integers, integral floats, ASCII-digit strings) or stripped strings."""
    norm: list[Any] = []
    for v in values:
        if isinstance(v, bool):
            v = str(v).lower()
        elif isinstance(v, float) and v.is_integer():
            v = int(v)
        elif isinstance(v, str):
            v = v.strip()
            if _INT_LABEL.fullmatch(v):  # ASCII digits only: int() would also take "²"-like or 5000-digit text
                v = int(v)
        norm.append(v)
    if any(isinstance(v, (dict, list)) for v in norm):
        raise DataError(f"{path}: label column {column!r} holds lists or objects; labels must be strings or integers")
    return norm


def label_lookup(norm: list[int | str]) -> tuple[dict[int | str, int], list[str]]:
    """``{label value: class id}`` and the class names: integer labels 0..C-1 keep their ids; other
    integers are numbered in sorted order; otherwise the labels, as strings, are numbered in sorted order."""
    if all(isinstance(v, int) for v in norm):
        uniq = sorted(set(norm))
        return {v: i for i, v in enumerate(uniq)}, [str(v) for v in uniq]
    names = sorted({str(v) for v in norm})
    index = {n: i for i, n in enumerate(names)}
    return {v: index[str(v)] for v in set(norm)}, names


def _label_ids(values: list[Any], path: Path, column: str) -> tuple[np.ndarray, list[str]]:
    """Class ids and names (:func:`label_lookup` of the :func:`normalise_labels` values)."""
    norm = normalise_labels(values, path, column)
    lookup, names = label_lookup(norm)
    return np.asarray([lookup[v] for v in norm], dtype=np.int64), names


def column_values(
    rows: list[dict[str, Any]], path: Path, text_column: str, label_column: str
) -> tuple[list[str], list[Any]]:
    """(texts, raw label values) of ``rows``; DataError naming the row that lacks one."""
    texts, values = [], []
    for i, row in enumerate(rows, 1):
        text, value = row.get(text_column), row.get(label_column)
        if text is None or value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{path}, row {i}: missing {text_column!r} or {label_column!r} value")
        texts.append(str(text))
        values.append(value)
    return texts, values


def read_text_file(
    path: str | os.PathLike, *, text_column: str = "text", label_column: str = "label", split_column: str = "split"
) -> tuple[list[str], np.ndarray, list[str] | None, list[str]]:
    """Read a JSONL/CSV/TSV file: ``(texts, labels, splits, label_names)``.

    ``labels``: (N,) int64 class ids. Labels may be strings (sorted and numbered from 0) or
    integers (kept if they are exactly 0..C-1, else numbered in sorted order); ``label_names``
    names the classes. ``splits``: per row ``"train"``, ``"test"`` or ``"val"`` (from the values
    train/test/val/valid/validation/dev of ``split_column``), or None if the file has no such column.
    Raises DataError naming the file's columns if a column is missing.
    """
    path = Path(path)
    rows, columns = read_rows(path)
    missing = [c for c in (text_column, label_column) if c not in columns]
    if missing:
        raise DataError(
            f"{path}: no column named {' or '.join(repr(c) for c in missing)}; the file has the columns "
            f"{', '.join(repr(c) for c in columns)}. Choose them with the text/label column options."
        )
    texts, values = column_values(rows, path, text_column, label_column)
    splits = []
    has_split = split_column in columns
    for i, row in enumerate(rows if has_split else [], 1):
        raw = str(row.get(split_column) or "").strip().lower()
        if raw not in SPLIT_NAMES:
            raise DataError(
                f"{path}, row {i}: split {row.get(split_column)!r} is not one of train, test, val "
                "(or valid/validation/dev)"
            )
        splits.append(SPLIT_NAMES[raw])
    labels, names = _label_ids(values, path, label_column)
    return texts, labels, (splits if has_split else None), names


def resolve_user_file(name: str, root: Path) -> Path:
    """The file ``name`` ("PATH" or "file:PATH") names: tried as given, then relative to ``root``."""
    raw = name[5:] if name.startswith("file:") else name
    cand = [Path(raw).expanduser()]
    if not cand[0].is_absolute():
        cand.append(root / raw)
    for p in cand:
        if p.is_file():
            if p.suffix.lower() not in USER_FILE_SUFFIXES:
                raise DataError(f"{p}: unsupported file type {p.suffix!r}; use one of {', '.join(USER_FILE_SUFFIXES)}")
            return p
    if not name.startswith("file:") and Path(raw).suffix.lower() not in USER_FILE_SUFFIXES:
        raise DataError(
            f"unknown data set {name!r}: use one of {', '.join(BUILTIN_DATASETS)}, or a path to a "
            f"{'/'.join(USER_FILE_SUFFIXES)} file (optionally written as file:PATH)"
        )
    raise DataNotFoundError(
        f"data file {raw!r} not found (looked at: {', '.join(map(str, cand))}). Give an existing "
        ".jsonl/.csv/.tsv path (relative paths are tried in the working folder, then in the data root)."
    )


__all__ = [
    "BUILTIN_DATASETS",
    "SPLIT_NAMES",
    "USER_FILE_SUFFIXES",
    "column_values",
    "label_lookup",
    "normalise_labels",
    "read_rows",
    "read_text_file",
    "resolve_user_file",
]
