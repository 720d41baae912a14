"""Text classification data sets with train / validation / test splits, and their tokenisation.

:func:`load_text_dataset` reads ``"imdb"``, ``"polarity"`` (Pang & Lee sentence polarity), a
user file (``.jsonl``, ``.csv``, ``.tsv``; ``"file:PATH"`` also works), a folder of GLUE /
Hugging Face style split files (``train.tsv``, ``dev.tsv``, ``test.tsv`` ...), or a Hugging Face
``save_to_disk`` folder or ``.parquet`` file (:mod:`mirrorattn.data.hf_sources`, the ``[hf]`` extra)
and returns a :class:`TextDataset`. The validation split is carved from the training split (seeded,
stratified), never from the test split, unless the data gives one (a split column's val rows, a
dev file). Tokenisation lives in :mod:`mirrorattn.data.tokenize`
and is re-exported here (:func:`build_tokenizer`, :func:`encode_texts`, ``PAD_ID``, ``CLS_ID`` ...).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from mirrorattn.checks import check_fraction, check_int
from mirrorattn.data.hf_sources import read_hf_source, resolve_hf_source
from mirrorattn.data.paths import DataError
from mirrorattn.data.paths import data_root as _data_root
from mirrorattn.data.text_files import BUILTIN_DATASETS, read_text_file, resolve_user_file
from mirrorattn.data.text_sources import (
    IMDB_LABEL_NAMES,
    IMDB_MD5,
    IMDB_URL,
    POLARITY_LABEL_NAMES,
    download_imdb,
    read_imdb,
    read_polarity,
)
from mirrorattn.data.text_splits import SplitFiles, read_split_folder, resolve_split_folder
from mirrorattn.data.tokenize import (
    CLS_ID,
    CLS_TOKEN,
    PAD_ID,
    PAD_TOKEN,
    SEP_ID,
    SEP_TOKEN,
    SPECIAL_TOKENS,
    UNK_ID,
    UNK_TOKEN,
    EncodedTexts,
    build_tokenizer,
    encode_texts,
)


@dataclass
class TextSplit:
    """Texts and their labels. ``labels``: (N,) int64 class ids in 0..C-1."""

    texts: list[str]
    labels: np.ndarray

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: np.ndarray) -> TextSplit:
        """The rows at ``index`` (an int array), in that order."""
        index = np.asarray(index, dtype=np.int64)
        return TextSplit([self.texts[i] for i in index.tolist()], self.labels[index])

    def class_counts(self, num_classes: int) -> np.ndarray:
        """(C,) int64 number of examples per class."""
        return np.bincount(self.labels, minlength=num_classes)


@dataclass
class TextDataset:
    """A text classification data set: train (minus validation), validation and test splits."""

    name: str
    train: TextSplit
    val: TextSplit
    test: TextSplit
    label_names: list[str]
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def summary(self) -> dict[str, Any]:
        """Sizes and class counts, JSON-ready (for a run's record)."""
        c = self.num_classes
        return {
            "name": self.name,
            "source": self.source,
            "label_names": list(self.label_names),
            **{f"n_{s}": len(getattr(self, s)) for s in ("train", "val", "test")},
            **{f"class_counts_{s}": getattr(self, s).class_counts(c).tolist() for s in ("train", "val", "test")},
        }


# ------------------------------------------------------------------------------------ splitting
def stratified_take(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``n`` rows drawn without replacement, each class in proportion to its size.

    Per-class counts are ``n * n_c / N`` rounded by largest remainder (they sum to exactly ``n``).
    """
    labels = np.asarray(labels)
    total = len(labels)
    if not 0 <= n <= total:
        raise ValueError(f"cannot take {n} of {total} examples")
    classes, counts = np.unique(labels, return_counts=True)
    quota = n * counts / max(total, 1)
    take = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: n - int(take.sum())]] += 1
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def stratified_split(
    split: TextSplit, fraction: float, rng: np.random.Generator, name: str | None = None
) -> tuple[TextSplit, TextSplit]:
    """Split into (rest, held out) with ``round(fraction * N)`` held-out rows, stratified by label.

    With ``name`` (the fraction's name, e.g. ``"val_fraction"``), a fraction > 0 that rounds to an
    empty held-out split, or leaves nothing else, raises ValueError saying what to change.
    """
    n_hold = int(round(fraction * len(split)))
    if name is not None and fraction > 0 and not 0 < n_hold < len(split):
        held = name.removesuffix("_fraction")
        problem = f"rounds to an empty {held} split" if n_hold == 0 else "leaves no other examples"
        raise DataError(
            f"{name}={fraction:g} of a pool of {len(split)} examples {problem}; use a "
            f"{'larger' if n_hold == 0 else 'smaller'} {name}"
            + (f" (at least {1 / len(split):.3g})" if n_hold == 0 and len(split) else "")
            + " or more data (a larger max_train, or more rows in the file)"
        )
    hold = stratified_take(split.labels, n_hold, rng)
    rest = np.setdiff1d(np.arange(len(split)), hold)
    return split.subset(rest), split.subset(hold)


def _finish(
    name: str,
    train_pool: TextSplit,
    test: TextSplit,
    val: TextSplit | None,
    label_names: list[str],
    source: str,
    *,
    val_fraction: float,
    split_seed: int,
    max_train: int | None,
    max_test: int | None,
) -> TextDataset:
    """Subsample (max_train on the train pool incl. validation, max_test), carve validation, check."""
    if max_train is not None and int(max_train) < len(train_pool):
        train_pool = train_pool.subset(
            stratified_take(train_pool.labels, int(max_train), np.random.default_rng([split_seed, 2]))
        )
    if max_test is not None and int(max_test) < len(test):
        test = test.subset(stratified_take(test.labels, int(max_test), np.random.default_rng([split_seed, 3])))
    if val is None:
        train, val = stratified_split(train_pool, val_fraction, np.random.default_rng([split_seed, 1]), "val_fraction")
    else:
        train = train_pool
    if len(train) == 0 or len(test) == 0:
        raise DataError(
            f"data set {name!r} has {len(train)} training and {len(test)} test examples after splitting; "
            "it needs at least one of each (use more data, or smaller val_fraction/test_fraction)"
        )
    return TextDataset(name=name, train=train, val=val, test=test, label_names=list(label_names), source=source)


def _from_splits(name: str, got: SplitFiles, test_fraction: float, common: dict[str, Any]) -> TextDataset:
    """Labelled splits (:mod:`mirrorattn.data.text_splits`, :mod:`~mirrorattn.data.hf_sources`); missing
    splits are held out."""
    train = TextSplit(*got.parts["train"])
    if "test" in got.parts:
        test = TextSplit(*got.parts["test"])
    else:
        train, test = stratified_split(train, test_fraction, np.random.default_rng([common["split_seed"], 0]),
                                       "test_fraction")
    val = TextSplit(*got.parts["val"]) if "val" in got.parts else None
    return _finish(name, train, test, val, got.label_names, got.describe(), **common)


# ------------------------------------------------------------------------------------ entry point
def load_text_dataset(
    name: str,
    *,
    data_root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    download: bool = False,
    text_column: str = "text",
    label_column: str = "label",
    split_column: str = "split",
    max_train: int | None = None,
    max_test: int | None = None,
    progress: bool = True,
) -> TextDataset:
    """Load a text classification data set with seeded, stratified train/val/test splits.

    ``name``: ``"imdb"`` (official 25k/25k split), ``"polarity"`` (10,662 snippets; ``test_fraction``
    of them held out as test), a ``.jsonl``/``.csv``/``.tsv`` file (``"file:PATH"`` also works;
    ``test_fraction`` applies unless the file's ``split_column`` marks test rows), or a folder of
    ``train.*`` / ``dev.*`` / ``test.*`` files (:mod:`mirrorattn.data.text_splits`: columns found per
    file while ``text_column`` / ``label_column`` are the defaults; ``test_fraction`` applies when it
    has neither a labelled test file nor a validation file), or a Hugging Face ``save_to_disk`` folder
    or ``.parquet`` file (:mod:`mirrorattn.data.hf_sources`; needs the ``[hf]`` extra).
    ``val_fraction`` of the training pool becomes the validation split (unless a user file marks
    validation rows). ``max_train`` caps the training pool (train + val) and ``max_test`` the test
    split, both by seeded stratified subsampling. ``download``: fetch IMDb if it is missing
    (``progress``: with a progress bar). A fraction > 0 that rounds to an empty split is an error.
    Raises :class:`DataNotFoundError` if data is missing/corrupt, ``ValueError`` for bad arguments.
    """
    val_fraction = check_fraction(val_fraction, "val_fraction", allow_zero=True)
    test_fraction = check_fraction(test_fraction, "test_fraction")
    for arg, v in (("max_train", max_train), ("max_test", max_test)):
        check_int(v, arg, optional=True)
    root = _data_root(data_root)
    common = dict(val_fraction=val_fraction, split_seed=int(split_seed), max_train=max_train, max_test=max_test)
    key = name.strip().lower()
    if key == "imdb":
        reviews, path = read_imdb(root, cache_dir=cache_dir, download=download, progress=progress)
        train, test = (TextSplit(*reviews[s]) for s in ("train", "test"))
        return _finish("imdb", train, test, None, IMDB_LABEL_NAMES, str(path), **common)
    if key in ("polarity", "sentence_polarity", "rt-polarity"):
        texts, labels, path = read_polarity(root)
        rest, test = stratified_split(
            TextSplit(texts, labels), test_fraction, np.random.default_rng([split_seed, 0]), "test_fraction"
        )
        return _finish("polarity", rest, test, None, POLARITY_LABEL_NAMES, str(path), **common)
    source = resolve_hf_source(name, root)
    if source is not None:
        got = read_hf_source(source, text_column=text_column, label_column=label_column, split_column=split_column)
        return _from_splits(source.name if source.is_dir() else source.stem, got, test_fraction, common)
    folder = resolve_split_folder(name, root)
    if folder is not None:
        got = read_split_folder(folder, text_column=text_column, label_column=label_column)
        return _from_splits(folder.name, got, test_fraction, common)
    path = resolve_user_file(name, root)
    texts, labels, splits, names = read_text_file(
        path, text_column=text_column, label_column=label_column, split_column=split_column
    )
    whole = TextSplit(texts, labels)
    where = np.asarray(splits if splits is not None else ["train"] * len(texts))
    parts = {s: whole.subset(np.flatnonzero(where == s)) for s in ("train", "val", "test") if (where == s).any()}
    if "test" in parts:
        rest, test = parts.get("train", TextSplit([], [])), parts["test"]
    else:
        rest, test = stratified_split(
            parts.get("train", TextSplit([], [])), test_fraction, np.random.default_rng([split_seed, 0]),
            "test_fraction",
        )
    return _finish(path.stem, rest, test, parts.get("val"), names, str(path), **common)


__all__ = [
    "BUILTIN_DATASETS",
    "CLS_ID",
    "CLS_TOKEN",
    "IMDB_MD5",
    "IMDB_URL",
    "PAD_ID",
    "PAD_TOKEN",
    "SEP_ID",
    "SEP_TOKEN",
    "SPECIAL_TOKENS",
    "UNK_ID",
    "UNK_TOKEN",
    "EncodedTexts",
    "TextDataset",
    "TextSplit",
    "build_tokenizer",
    "download_imdb",
    "encode_texts",
    "load_text_dataset",
    "read_text_file",
    "stratified_split",
    "stratified_take",
]
