"""Hugging Face ``save_to_disk`` folders and Parquet files as text data (mirrorattn.data.hf_sources).

Tests that need the optional ``[hf]`` extra (datasets, pyarrow) skip with a reason without it; the
missing-extra error and the lazy import are tested either way.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from mirrorattn.data.paths import DataError
from mirrorattn.data.text import load_text_dataset

POS = ["a wonderful moving film", "great acting and a clever plot", "funny and warm"]
NEG = ["a dull tedious mess", "the plot makes no sense", "boring and far too long"]
SKIP = "{} is not installed (the optional 'hf' extra: pip install 'mirrorattn[hf]')"


@pytest.fixture()
def hf() -> ModuleType:
    """The ``datasets`` module (the test skips without the extra), progress bars off."""
    datasets = pytest.importorskip("datasets", reason=SKIP.format("datasets"))
    pytest.importorskip("pyarrow.parquet", reason=SKIP.format("pyarrow"))
    datasets.disable_progress_bars()
    return datasets


def _texts(n: int, start: int = 0) -> list[str]:
    """``n`` unique sentences; sentence ``i`` is positive for odd ``i``."""
    return [f"{(POS if i % 2 else NEG)[i % 3]} number {i}" for i in range(start, start + n)]


def _labels(n: int, start: int = 0) -> list[int]:
    return [i % 2 for i in range(start, start + n)]


def test_dataset_dict_keeps_class_label_ids_and_names(tmp_path: Path, cache: Path, hf: ModuleType) -> None:
    # names deliberately not in sorted order: "neg" is id 1, so sorting the names would swap the classes
    features = hf.Features({"sentence": hf.Value("string"), "label": hf.ClassLabel(names=["pos", "neg"])})

    def part(n: int, start: int) -> object:
        return hf.Dataset.from_dict({"sentence": _texts(n, start), "label": _labels(n, start)}, features=features)

    extra = hf.Dataset.from_dict({"sentence": _texts(3, 300), "label": [-1] * 3}, features=features)
    saved = tmp_path / "sst2"
    hf.DatasetDict(train=part(20, 0), validation=part(6, 100), test=part(4, 200), unsupervised=extra).save_to_disk(
        str(saved))
    with pytest.warns(UserWarning, match=r"split 'unsupervised' is not used"):
        ds = load_text_dataset(str(saved))
    assert ds.name == "sst2" and ds.label_names == ["pos", "neg"]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (20, 6, 4)  # validation is the validation split
    assert ds.train.texts == _texts(20) and ds.train.labels.tolist() == _labels(20)
    assert ds.val.texts == _texts(6, 100) and ds.test.labels.tolist() == [0, 1, 0, 1]
    assert ds.source == (f"{saved} (train: train [sentence, label], val: validation [sentence, label], "
                         "test: test [sentence, label])")
    assert ds.summary()["class_counts_train"] == [10, 10]


def test_unlabelled_test_split_of_minus_ones_is_not_used(tmp_path: Path, cache: Path, hf: ModuleType) -> None:
    features = hf.Features({"text": hf.Value("string"), "label": hf.ClassLabel(names=["negative", "positive"])})
    parts = {"train": (_texts(20), _labels(20)), "dev": (_texts(6, 50), _labels(6, 50)),
             "test": (_texts(4, 80), [-1] * 4)}  # how the hub's GLUE test splits come
    hf.DatasetDict({k: hf.Dataset.from_dict({"text": t, "label": y}, features=features)
                    for k, (t, y) in parts.items()}).save_to_disk(str(tmp_path / "glue"))
    with pytest.warns(UserWarning, match=r"test has no label column .*the test split is the validation file"):
        ds = load_text_dataset(str(tmp_path / "glue"), val_fraction=0.2)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (16, 4, 6)  # dev is the test split, val from train
    assert ds.test.texts == _texts(6, 50) and ds.label_names == ["negative", "positive"]
    assert ds.source.endswith("test: dev [text, label], test unlabelled: not used)")


def test_single_dataset_with_string_labels_and_a_split_column(tmp_path: Path, cache: Path, hf: ModuleType) -> None:
    n = 24
    splits = ["test" if i % 6 == 0 else "Dev" if i % 6 == 1 else "train" for i in range(n)]
    words = ["yes" if y else "no" for y in _labels(n)]
    hf.Dataset.from_dict({"review": _texts(n), "Sentiment": words, "split": splits}).save_to_disk(
        str(tmp_path / "one"))
    ds = load_text_dataset(str(tmp_path / "one"))
    assert ds.label_names == ["no", "yes"]  # string labels: sorted, as the file loaders number them
    assert ds.test.texts == [t for t, s in zip(_texts(n), splits) if s == "test"]
    assert ds.val.texts == [t for t, s in zip(_texts(n), splits) if s == "Dev"]
    assert ds.train.labels.tolist() == [y for y, s in zip(_labels(n), splits) if s == "train"]
    assert "train: one (train rows) [review, Sentiment]" in ds.source
    # without a split column, test and validation are held out of the one table
    hf.Dataset.from_dict({"text": _texts(40), "label": _labels(40)}).save_to_disk(str(tmp_path / "plain"))
    ds = load_text_dataset(str(tmp_path / "plain"), test_fraction=0.25, val_fraction=0.1)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (27, 3, 10) and ds.label_names == ["0", "1"]


def test_parquet_file_and_parquet_split_folder(tmp_path: Path, cache: Path, hf: ModuleType) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Dataset.to_parquet records the ClassLabel feature in the file's metadata
    features = hf.Features({"text": hf.Value("string"), "label": hf.ClassLabel(names=["spam", "ham"]),
                            "split": hf.Value("string")})
    splits = ["test" if i % 5 == 0 else "train" for i in range(30)]
    hf.Dataset.from_dict({"text": _texts(30), "label": _labels(30), "split": splits},
                         features=features).to_parquet(str(tmp_path / "mail.parquet"))
    ds = load_text_dataset(str(tmp_path / "mail.parquet"), val_fraction=0.0)
    assert ds.name == "mail" and ds.label_names == ["spam", "ham"] and (len(ds.train), len(ds.test)) == (24, 6)
    assert ds.test.texts == _texts(30)[::5] and ds.test.labels.tolist() == _labels(30)[::5]
    # a folder of split files in Parquet, written by pyarrow alone (no metadata); columns per file
    folder = tmp_path / "task"
    folder.mkdir()
    pq.write_table(pa.table({"sentence": _texts(20), "label": [3 + y for y in _labels(20)]}), folder / "train.parquet")
    pq.write_table(pa.table({"content": _texts(6, 40), "labels": [str(3 + y) for y in _labels(6, 40)]}),
                   folder / "dev.parquet")
    pq.write_table(pa.table({"idx": list(range(4)), "sentence": _texts(4, 60)}), folder / "test.parquet")
    with pytest.warns(UserWarning, match=r"test\.parquet has no label column"):
        ds = load_text_dataset(str(folder), val_fraction=0.25)
    assert ds.label_names == ["3", "4"] and (len(ds.train), len(ds.val), len(ds.test)) == (15, 5, 6)
    assert ds.test.texts == _texts(6, 40) and ds.test.labels.tolist() == _labels(6, 40)
    assert "test: dev.parquet [content, labels], test.parquet unlabelled: not used" in ds.source


def test_missing_columns_and_bad_values_name_the_split(tmp_path: Path, cache: Path, hf: ModuleType) -> None:
    train = hf.Dataset.from_dict({"text": _texts(10), "label": _labels(10)})
    dev = hf.Dataset.from_dict({"text": _texts(4, 20), "score": [0.5] * 4})
    hf.DatasetDict(train=train, validation=dev).save_to_disk(str(tmp_path / "nolabel"))
    with pytest.raises(DataError, match=r"nolabel/validation: no label column \(any of label, labels, sentiment, "
                                        r".*\); the file has the columns 'text', 'score'\. Name it with "
                                        r"--label-column COLUMN") as err:
        load_text_dataset(str(tmp_path / "nolabel"))
    assert "\n" not in str(err.value)
    nli = tmp_path / "nli.parquet"
    hf.Dataset.from_dict({"premise": ["a"], "hypothesis": ["b"], "label": [0]}).to_parquet(str(nli))
    with pytest.raises(DataError, match=r"nli\.parquet: no text column \(any of text, sentence, .*\); the file has "
                                        r"the columns 'premise', 'hypothesis', 'label'\. Name it with --text-column"):
        load_text_dataset(str(nli))
    hf.Dataset.from_dict({"text": _texts(4), "label": _labels(4), "split": ["train", "train", "holdout", "test"]}
                         ).to_parquet(str(tmp_path / "odd.parquet"))
    with pytest.raises(DataError, match=r"odd\.parquet, row 3: split 'holdout' is not one of train, test, val"):
        load_text_dataset(str(tmp_path / "odd.parquet"))
    hf.DatasetDict(test=dev).save_to_disk(str(tmp_path / "notrain"))
    with pytest.raises(DataError, match=r"notrain: no training split; the splits found are test"):
        load_text_dataset(str(tmp_path / "notrain"))


def test_without_the_extra_the_error_says_what_to_install(tmp_path: Path, cache: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "saved"  # what save_to_disk writes first; no datasets needed to build it
    folder.mkdir()
    (folder / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    (tmp_path / "data.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets now raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    for source, what in ((folder, "a Hugging Face save_to_disk folder"), (tmp_path / "data.parquet", "a Parquet file")):
        with pytest.raises(DataError) as err:
            load_text_dataset(str(source))
        module = "datasets" if source.is_dir() else "pyarrow"
        assert str(err.value) == (f"{source}: reading {what} needs the optional Hugging Face extra ({module} is not "
                                  "installed): pip install 'mirrorattn[hf]'")


def test_datasets_and_pyarrow_are_imported_only_for_such_data(tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"text": t, "label": y}) + "\n"
                                              for t, y in zip(_texts(20), _labels(20))))
    code = ("import sys; from mirrorattn.data.text import load_text_dataset; "
            f"load_text_dataset({str(tmp_path / 't.jsonl')!r}); "
            "print(sorted(m for m in ('datasets', 'pyarrow', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_cli_end_to_end_on_a_saved_dataset_dict(tmp_path: Path, cache: Path, hf: ModuleType) -> None:
    from mirrorattn.cli import main

    features = hf.Features({"sentence": hf.Value("string"), "label": hf.ClassLabel(names=["negative", "positive"])})
    hf.DatasetDict({k: hf.Dataset.from_dict({"sentence": _texts(n, s), "label": _labels(n, s)}, features=features)
                    for k, n, s in (("train", 30, 0), ("validation", 8, 100), ("test", 6, 200))}
                   ).save_to_disk(str(tmp_path / "sst"))
    out = tmp_path / "out"
    argv = ["text", "--dataset", str(tmp_path / "sst"), "--epochs", "1", "--seeds", "1", "--optimizers", "adam",
            "--max-length", "16", "--vocab-size", "200", "--min-frequency", "1", "--width", "16", "--heads", "2",
            "--analysis-samples", "6", "--no-progress", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    data = json.loads((out / "results.json").read_text())["data"]
    assert (data["n_train"], data["n_val"], data["n_test"]) == (30, 8, 6)
    assert data["label_names"] == ["negative", "positive"] and data["class_counts_test"] == [3, 3]
    summary = json.loads((out / "runs" / "adam-seed0" / "summary.json").read_text())
    assert 0.0 <= summary["test_acc"] <= 1.0
