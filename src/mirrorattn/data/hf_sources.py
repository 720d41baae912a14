"""Text classification data as the Hugging Face ecosystem stores it: a ``save_to_disk`` folder or Parquet.

Needs the optional ``[hf]`` extra (``pip install 'mirrorattn[hf]'``: ``datasets`` and ``pyarrow``).
Both are imported only when such data is read; without them, reading it raises a one-line
:class:`~mirrorattn.data.paths.DataError` naming the command that installs them.

Accepted sources (:func:`resolve_hf_source` finds them, :func:`read_hf_source` reads them):

- a folder written by ``DatasetDict.save_to_disk``: its splits ``train``, ``validation`` / ``dev`` /
  ``val`` / ``valid`` and ``test`` (any case; other splits, such as IMDb's ``unsupervised``, are not
  used and a warning says so);
- a folder written by ``Dataset.save_to_disk``, or one ``.parquet`` file: one table, split by its
  ``split_column`` (values train / test / val / valid / validation / dev) if it has one, else all
  training rows;
- a folder of ``train.parquet`` / ``dev.parquet`` / ``test.parquet`` files is a split folder
  (:mod:`mirrorattn.data.text_splits`), whose ``.parquet`` files are read by :func:`read_parquet`.

Every split then goes through :func:`mirrorattn.data.text_splits.read_splits`: the same per-split
column detection, label numbering from the training split and error messages as a folder of split
files. A label column of type ``ClassLabel`` (in the saved features, or in the ``huggingface``
metadata that ``Dataset.to_parquet`` writes) keeps its integer ids and its names; a split whose
class-label values are all -1 (how Hugging Face marks unlabelled test splits) counts as unlabelled.
"""

from __future__ import annotations

import importlib
import json
import os
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from mirrorattn.data.paths import DataError, DataNotFoundError
from mirrorattn.data.text_files import SPLIT_NAMES
from mirrorattn.data.text_splits import SplitFiles, SplitTable, read_splits

PARQUET_SUFFIX = ".parquet"
INSTALL_HINT = "pip install 'mirrorattn[hf]'"


def _need(module: str, path: Path, what: str) -> ModuleType:
    """``module`` imported, or a DataError saying which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"{path}: reading {what} needs the optional Hugging Face extra ({module.split('.')[0]} "
                        f"is not installed): {INSTALL_HINT}") from None


def is_saved_dataset(folder: Path) -> bool:
    """Whether ``folder`` was written by ``save_to_disk``: a ``dataset_dict.json`` listing its splits
    (a DatasetDict), or ``state.json`` beside ``dataset_info.json`` (one Dataset)."""
    if (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file():
        return True
    try:
        info = json.loads((folder / "dataset_dict.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and bool(info.get("splits"))


def resolve_hf_source(name: str | os.PathLike, root: Path) -> Path | None:
    """The ``save_to_disk`` folder or ``.parquet`` file ``name`` names (as given, then in the data root
    ``root``); None if it names neither. A ``.parquet`` name that exists nowhere is a DataNotFoundError."""
    raw = Path(name).expanduser()
    cands = [raw] if raw.is_absolute() else [raw, root / raw]
    for cand in cands:
        if (cand.is_dir() and is_saved_dataset(cand)) or (cand.is_file() and cand.suffix.lower() == PARQUET_SUFFIX):
            return cand
    if raw.suffix.lower() == PARQUET_SUFFIX:
        raise DataNotFoundError(f"Parquet file {str(name)!r} not found (looked at: {', '.join(map(str, cands))})")
    return None


def _class_names(features: dict[str, Any]) -> dict[str, list[str]]:
    """``{column: names}`` of the ClassLabel columns in a features mapping as ``Features.to_dict`` writes it."""
    return {c: [str(n) for n in f["names"]] for c, f in features.items()
            if isinstance(f, dict) and f.get("_type") == "ClassLabel" and isinstance(f.get("names"), list)}


def read_parquet(path: Path) -> SplitTable:
    """The rows, columns and ClassLabel names (from the ``huggingface`` schema metadata) of a Parquet file."""
    pq = _need("pyarrow.parquet", path, "a Parquet file")
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError
        raise DataError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    meta = (table.schema.metadata or {}).get(b"huggingface")
    try:
        features = json.loads(meta)["info"]["features"] if meta else {}
    except (ValueError, KeyError, TypeError):
        features = {}
    return table.to_pylist(), list(table.column_names), _class_names(features if isinstance(features, dict) else {})


def _unlabelled_dropped(table: SplitTable) -> SplitTable:
    """``table`` without its ClassLabel columns whose values are all -1 (an unlabelled split)."""
    rows, columns, names = table
    empty = {c for c in names if rows and all(r.get(c) == -1 for r in rows)}
    return rows, [c for c in columns if c not in empty], {c: n for c, n in names.items() if c not in empty}


def _by_split_column(path: Path, table: SplitTable, split_column: str) -> dict[Path, tuple[str, SplitTable]]:
    """One table as ``{source: (split, table)}``: grouped by ``split_column`` if it has one, else all train."""
    rows, columns, names = table
    if split_column not in columns:
        return {path: ("train", table)}
    groups: dict[str, list[dict[str, Any]]] = {}
    for i, row in enumerate(rows, 1):
        raw = str(row.get(split_column) or "").strip().lower()
        if raw not in SPLIT_NAMES:
            raise DataError(f"{path}, row {i}: split {row.get(split_column)!r} is not one of train, test, val "
                            "(or valid/validation/dev)")
        groups.setdefault(SPLIT_NAMES[raw], []).append(row)
    return {path.with_name(f"{path.name} ({s} rows)"): (s, (g, columns, names)) for s, g in groups.items()}


def _saved_splits(folder: Path, split_column: str) -> dict[Path, tuple[str, SplitTable]]:
    """The splits of a ``save_to_disk`` folder as ``{source: (split, table)}``."""
    datasets = _need("datasets", folder, "a Hugging Face save_to_disk folder")
    try:
        saved = datasets.load_from_disk(str(folder))
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{folder}: cannot load this save_to_disk folder ({str(exc).splitlines()[0]})") from None

    def table(ds: Any) -> SplitTable:
        return ds.to_list(), list(ds.column_names), _class_names(ds.features.to_dict())

    if isinstance(saved, datasets.Dataset):
        return _by_split_column(folder, table(saved), split_column)
    found: dict[Path, tuple[str, SplitTable]] = {}
    for key in saved:
        split = SPLIT_NAMES.get(key.lower())
        if split is None:
            warnings.warn(f"{folder}: split {key!r} is not used (not one of train, validation/dev/val/valid, test)",
                          stacklevel=3)
            continue
        twin = next((p.name for p, (s, _) in found.items() if s == split), None)
        if twin is not None:
            raise DataError(f"{folder}: 2 splits for the {split} split ({twin}, {key}); keep one of them")
        found[folder / key] = (split, table(saved[key]))
    return found


def read_hf_source(
    path: Path, *, text_column: str = "text", label_column: str = "label", split_column: str = "split"
) -> SplitFiles:
    """Read a ``save_to_disk`` folder or a ``.parquet`` file (module docstring) into labelled splits."""
    path = Path(path)
    if path.is_dir():
        found = _saved_splits(path, split_column)
    else:
        found = _by_split_column(path, read_parquet(path), split_column)
    tables = {source: _unlabelled_dropped(table) for source, (_, table) in found.items()}
    for source, (rows, _, _) in tables.items():
        if not rows:
            raise DataError(f"{source} holds no rows")
    return read_splits(path, {split: source for source, (split, _) in found.items()},
                       text_column=text_column, label_column=label_column, reader=tables.__getitem__)


__all__ = ["INSTALL_HINT", "PARQUET_SUFFIX", "is_saved_dataset", "read_hf_source", "read_parquet",
           "resolve_hf_source"]
