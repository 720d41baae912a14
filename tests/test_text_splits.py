"""Folders of GLUE / Hugging Face style split files (mirrorattn.data.text_splits through load_text_dataset)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from mirrorattn.data.paths import DataError
from mirrorattn.data.text import load_text_dataset
from mirrorattn.data.text_splits import pick_column, read_split_folder

POS = ["a wonderful moving film", "great acting and a clever plot", "i loved every minute", "funny and warm"]
NEG = ["a dull tedious mess", "the plot makes no sense", "boring and far too long", "i hated it"]


def _rows(n: int, start: int = 0) -> list[tuple[str, int]]:
    """``n`` (sentence, label) rows alternating 0 / 1, each sentence made unique by its number."""
    return [(f"{(POS if i % 2 else NEG)[i % 4]} number {i}", i % 2) for i in range(start, start + n)]


def _table(path: Path, header: list[str], rows: list[tuple]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter="\t" if path.suffix == ".tsv" else ",")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _glue(folder: Path, *, test_labelled: bool = True) -> Path:
    _table(folder / "train.tsv", ["sentence", "label"], _rows(30))
    _table(folder / "dev.tsv", ["sentence", "label"], _rows(8, 100))
    if test_labelled:
        _table(folder / "test.tsv", ["sentence", "label"], _rows(6, 200))
    else:  # as GLUE ships it: an index and no label
        _table(folder / "test.tsv", ["index", "sentence"], [(i, t) for i, (t, _) in enumerate(_rows(6, 200))])
    return folder


def test_glue_folder_train_dev_test(tmp_path: Path, cache: Path) -> None:
    ds = load_text_dataset(str(_glue(tmp_path / "sst")))
    assert ds.name == "sst" and ds.label_names == ["0", "1"]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (30, 8, 6)  # dev.tsv is the validation split
    assert ds.val.texts[0] == "a dull tedious mess number 100" and ds.test.labels.tolist() == [0, 1] * 3
    assert "train.tsv [sentence, label]" in ds.source and "test: test.tsv" in ds.source
    relative = load_text_dataset("sst", data_root=tmp_path)  # found in the data root too
    assert relative.train.texts == ds.train.texts


def test_unlabelled_test_file_is_skipped_and_dev_is_the_test_split(tmp_path: Path, cache: Path) -> None:
    folder = _glue(tmp_path / "sst", test_labelled=False)
    with pytest.warns(UserWarning, match=r"test\.tsv has no label column .*the test split is the validation file"):
        ds = load_text_dataset(str(folder), val_fraction=0.2, split_seed=1)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (24, 6, 8)  # validation carved from train
    assert ds.test.texts == [t for t, _ in _rows(8, 100)]
    assert ds.source.endswith("test: dev.tsv [sentence, label], test.tsv unlabelled: not used)")
    with pytest.warns(UserWarning, match="no label column"):
        again = load_text_dataset(str(folder), val_fraction=0.2, split_seed=1)
    assert again.val.texts == ds.val.texts and np.bincount(ds.val.labels).tolist() == [3, 3]


def test_train_only_and_train_plus_test(tmp_path: Path, cache: Path) -> None:
    only = tmp_path / "only"
    _table(only / "train.csv", ["text", "label"], _rows(40))
    ds = load_text_dataset(str(only), test_fraction=0.25, val_fraction=0.1, split_seed=2)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (27, 3, 10)
    assert np.bincount(ds.test.labels).tolist() == [5, 5]  # stratified
    other = load_text_dataset(str(only), test_fraction=0.25, val_fraction=0.1, split_seed=3)
    assert other.test.texts != ds.test.texts
    both = tmp_path / "both"
    _table(both / "train.csv", ["text", "label"], _rows(20))
    _jsonl(both / "test.jsonl", [{"text": t, "label": y} for t, y in _rows(4, 50)])
    ds = load_text_dataset(str(both), val_fraction=0.2)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (16, 4, 4)


def test_columns_found_per_file_and_string_labels_one_numbering(tmp_path: Path, cache: Path) -> None:
    folder = tmp_path / "hf"
    names = {0: "negative", 1: "positive"}
    _table(folder / "train.csv", ["idx", "Review", "Sentiment"],
           [(i, t, names[y]) for i, (t, y) in enumerate(_rows(20))])
    _jsonl(folder / "validation.jsonl", [{"content": t, "labels": names[y]} for t, y in _rows(4, 30)])
    (folder / "test.json").write_text(json.dumps([{"text": t, "class": names[y]} for t, y in _rows(4, 40)]))
    got = read_split_folder(folder)
    assert got.label_names == ["negative", "positive"]
    assert {s: cols for s, (_, *cols) in got.files.items()} == {
        "train": ["Review", "Sentiment"], "val": ["content", "labels"], "test": ["text", "class"]}
    assert got.parts["test"][1].tolist() == [0, 1, 0, 1] and got.parts["val"][0][1] == _rows(4, 30)[1][0]
    # integer labels written as ints in one file and as text in another are the same classes
    mixed = tmp_path / "mixed"
    _table(mixed / "train.tsv", ["sentence", "label"], [(t, 3 + y) for t, y in _rows(10)])
    _jsonl(mixed / "dev.jsonl", [{"sentence": t, "label": 3 + y} for t, y in _rows(4, 20)])
    got = read_split_folder(mixed)
    assert got.label_names == ["3", "4"] and got.parts["test"][1].tolist() == [0, 1, 0, 1]


def test_column_options_override_detection(tmp_path: Path, cache: Path) -> None:
    folder = tmp_path / "own"
    _table(folder / "train.csv", ["text", "body", "kind"], [("ignored", t, y) for t, y in _rows(20)])
    _table(folder / "test.csv", ["body", "kind"], _rows(4, 40))
    ds = load_text_dataset(str(folder), text_column="body", label_column="kind", val_fraction=0.2)
    assert ds.train.texts[0].startswith(("a dull", "i loved", "great", "funny", "the plot", "boring", "i hated"))
    assert "ignored" not in ds.train.texts
    _table(folder / "dev.csv", ["text", "kind"], _rows(4, 60))
    with pytest.raises(DataError, match=r"dev\.csv: no text column \('body'\); the file has the columns 'text', "
                                        r"'kind'\. Name it with --text-column COLUMN"):
        load_text_dataset(str(folder), text_column="body", label_column="kind")
    assert pick_column(["Sentence", "Label"], "text", "text", ("text", "sentence")) == "Sentence"
    assert pick_column(["sentence"], "body", "text", ("text", "sentence")) is None  # an own name is required


def _error_case(folder: Path, case: str) -> None:
    folder.mkdir(parents=True)
    if case == "no train file":
        _table(folder / "dev.tsv", ["sentence", "label"], _rows(4))
        (folder / "dataset_dict.json").write_text("{}")
    elif case == "two train files":
        _table(folder / "train.tsv", ["sentence", "label"], _rows(4))
        _table(folder / "train.csv", ["sentence", "label"], _rows(4))
    elif case == "no text column":
        _table(folder / "train.tsv", ["sentence1", "sentence2", "label"], [("a", "b", 0), ("c", "d", 1)])
    elif case == "no label column in dev":
        _table(folder / "train.tsv", ["sentence", "label"], _rows(10))
        _table(folder / "dev.tsv", ["sentence", "score"], [(t, 0.5) for t, _ in _rows(4)])
    elif case == "test label not in train":
        _table(folder / "train.tsv", ["sentence", "label"], [(t, ("neg", "pos")[y]) for t, y in _rows(10)])
        _table(folder / "test.tsv", ["sentence", "label"], [("fine", "pos"), ("meh", "neutral")])
    elif case == "a row without a label":
        _table(folder / "train.tsv", ["sentence", "label"], [*_rows(4), ("no label here", "")])


TEXT_ERRORS = {
    "no train file": r"no training file train\.tsv/\.csv/\.jsonl/\.json \(this looks like a Hugging Face save_to_disk "
                     r"folder: export each split .*\); the folder holds dev\.tsv",
    "two train files": r"2 files for the train split \(train\.csv, train\.tsv\); keep one of them",
    "no text column": r"train\.tsv: no text column \(any of text, sentence, review, .*\); the file has the columns "
                      r"'sentence1', 'sentence2', 'label'\. Name it with --text-column COLUMN",
    "no label column in dev": r"dev\.tsv: no label column \(any of label, labels, sentiment, .*\); the file has the "
                              r"columns 'sentence', 'score'\. Name it with --label-column COLUMN",
    "test label not in train": r"test\.tsv, row 2: label 'neutral' is not among the training labels \(neg, pos\)",
    "a row without a label": r"train\.tsv, row 5: missing 'sentence' or 'label' value",
}


@pytest.mark.parametrize("case", list(TEXT_ERRORS))
def test_every_error_names_the_file_and_what_to_do(tmp_path: Path, cache: Path, case: str) -> None:
    folder = tmp_path / "task"
    _error_case(folder, case)
    with pytest.raises(DataError, match=TEXT_ERRORS[case]) as err:
        load_text_dataset(str(folder))
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value) and str(folder) in str(err.value)


def test_cli_end_to_end_on_a_generated_glue_folder(tmp_path: Path, cache: Path) -> None:
    from mirrorattn.cli import main

    folder = _glue(tmp_path / "sst")
    out = tmp_path / "out"
    argv = ["text", "--dataset", str(folder), "--epochs", "1", "--seeds", "1", "--optimizers", "adam",
            "--max-length", "16", "--vocab-size", "200", "--min-frequency", "1", "--width", "16", "--heads", "2",
            "--analysis-samples", "6", "--no-progress", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert (results["data"]["n_train"], results["data"]["n_val"], results["data"]["n_test"]) == (30, 8, 6)
    summary = json.loads((out / "runs" / "adam-seed0" / "summary.json").read_text())
    assert 0.0 <= summary["test_acc"] <= 1.0
