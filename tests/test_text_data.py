"""Text data: IMDb / polarity / user-file loaders, seeded splits, tokenizer training, caching, encoding."""

from __future__ import annotations

import csv
import io
import json
import tarfile
import time
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from mirrorattn.data import text_sources, tokenize
from mirrorattn.data.paths import DataNotFoundError
from mirrorattn.data.text import (
    CLS_ID,
    PAD_ID,
    SEP_ID,
    UNK_ID,
    TextSplit,
    build_tokenizer,
    encode_texts,
    load_text_dataset,
    stratified_take,
)
from mirrorattn.data.text_sources import decode_text


# ---------------------------------------------------------------------------------------- helpers
def _all(ds) -> list[str]:
    return ds.train.texts + ds.val.texts + ds.test.texts


def _review(split: str, pol: str, i: int) -> str:
    return f"review {split} {pol} {i}: a {'great' if pol == 'pos' else 'awful'} film.<br /><br />The end."


def make_imdb_tar(path: Path, n: int = 6, *, unsup: bool = True, truncate: bool = False) -> Path:
    """A tiny IMDb archive with the official layout (n reviews per split and class), plus unsup/feat noise."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))

        add("aclImdb/README", b"readme")
        for split in ("train", "test"):
            for pol in ("neg", "pos"):
                for i in range(n):
                    add(f"aclImdb/{split}/{pol}/{i}_{8 if pol == 'pos' else 2}.txt", _review(split, pol, i).encode())
            add(f"aclImdb/{split}/labeledBow.feat", b"0 0:1\n")
            add(f"aclImdb/{split}/urls_pos.txt", b"http://x\n")
        if unsup:
            for i in range(3):
                add(f"aclImdb/train/unsup/{i}_0.txt", b"unlabelled review")
    data = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 2] if truncate else data)
    return path


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# --------------------------------------------------------------------------------------- polarity
def test_polarity_counts_and_content(shared_data: Path, cache: Path) -> None:
    ds = load_text_dataset("polarity", data_root=shared_data)
    assert ds.num_classes == 2 and ds.label_names == ["neg", "pos"]
    # independent read of the archive: one snippet per line, 5331 per class
    with zipfile.ZipFile(shared_data / "sentence_polarity" / "sentence_polarity.zip") as zf:
        want = {
            pol: [ln.strip() for ln in zf.read(f"sentence_polarity/rt-polarity.{pol}").decode("utf-8").split("\n")]
            for pol in ("neg", "pos")
        }

    # the copy is UTF-8 holding C1 controls (U+0080-U+009F) where the original had cp1252 quotes and dashes;
    # the loader maps them back: re-implement that here with a plain character loop
    def fix(s: str) -> str:
        return "".join(bytes([ord(c)]).decode("cp1252", errors="replace") if 0x80 <= ord(c) < 0xA0 else c for c in s)

    n_c1 = sum(any(0x80 <= ord(c) < 0xA0 for c in s) for v in want.values() for s in v)
    assert n_c1 > 10
    want = {k: [fix(s) for s in v if s] for k, v in want.items()}
    assert len(want["neg"]) == len(want["pos"]) == 5331
    assert len(ds.train) + len(ds.val) + len(ds.test) == 10662
    assert len(ds.test) == round(0.2 * 10662) and len(ds.val) == round(0.1 * (10662 - len(ds.test)))
    for split in (ds.train, ds.val, ds.test):
        assert split.labels.dtype == np.int64
    got = {
        pol: Counter(t for s in (ds.train, ds.val, ds.test) for t, y in zip(s.texts, s.labels) if y == lab)
        for lab, pol in enumerate(("neg", "pos"))
    }
    assert got["neg"] == Counter(want["neg"]) and got["pos"] == Counter(want["pos"])
    # stratified: each split within one example of half-half
    for split in (ds.train, ds.val, ds.test):
        counts = split.class_counts(2)
        assert abs(int(counts[0]) - int(counts[1])) <= 1


def test_polarity_split_deterministic_disjoint_and_val_from_train(shared_data: Path, cache: Path) -> None:
    a = load_text_dataset("polarity", data_root=shared_data, split_seed=3)
    b = load_text_dataset("polarity", data_root=shared_data, split_seed=3)
    c = load_text_dataset("polarity", data_root=shared_data, split_seed=4)
    assert a.train.texts == b.train.texts and a.val.texts == b.val.texts and a.test.texts == b.test.texts
    assert np.array_equal(a.test.labels, b.test.labels)
    assert a.test.texts != c.test.texts
    # disjoint as positions of the original list (texts may repeat, so use a multiset check)
    whole = Counter(_all(a))
    assert sum(whole.values()) == 10662
    assert Counter(a.train.texts) + Counter(a.val.texts) + Counter(a.test.texts) == whole
    # validation carved from the training split only: the test split does not depend on val_fraction,
    # and train + val of one run equals the training pool of a run without validation
    no_val = load_text_dataset("polarity", data_root=shared_data, split_seed=3, val_fraction=0.0)
    big_val = load_text_dataset("polarity", data_root=shared_data, split_seed=3, val_fraction=0.3)
    assert len(no_val.val) == 0
    assert no_val.test.texts == a.test.texts == big_val.test.texts
    assert Counter(a.train.texts) + Counter(a.val.texts) == Counter(no_val.train.texts)
    assert Counter(big_val.train.texts) + Counter(big_val.val.texts) == Counter(no_val.train.texts)
    assert len(big_val.val) == round(0.3 * len(no_val.train))


def test_polarity_subsample(shared_data: Path, cache: Path) -> None:
    ds = load_text_dataset("polarity", data_root=shared_data, max_train=401, max_test=100, val_fraction=0.25)
    assert len(ds.train) + len(ds.val) == 401 and len(ds.test) == 100
    assert len(ds.val) == 100
    assert list(ds.test.class_counts(2)) == [50, 50]
    full = load_text_dataset("polarity", data_root=shared_data)
    assert set(ds.test.texts) <= set(full.test.texts)  # subsample of the same test split
    assert set(ds.train.texts) | set(ds.val.texts) <= set(full.train.texts) | set(full.val.texts)


def test_stratified_take_counts() -> None:
    labels = np.array([0] * 70 + [1] * 20 + [2] * 10)
    idx = stratified_take(labels, 15, np.random.default_rng(0))
    assert len(idx) == len(set(idx.tolist())) == 15
    # largest remainder of 15 * (0.7, 0.2, 0.1) = (10.5, 3, 1.5) -> (11, 3, 1) or (10, 3, 2)
    counts = np.bincount(labels[idx], minlength=3)
    assert counts.sum() == 15 and counts[1] == 3 and sorted([counts[0], counts[2]]) in ([1, 11], [2, 10])
    with pytest.raises(ValueError, match="cannot take"):
        stratified_take(labels, 101, np.random.default_rng(0))


def test_decode_text_fallbacks() -> None:
    assert decode_text("café".encode()) == "café"
    assert decode_text("café – ok".encode("cp1252")) == "café – ok"
    # Latin-1 read of Windows-1252 text leaves C1 controls; they map back to the intended characters
    assert decode_text("\x93quoted\x94 \x96 dash".encode()) == "\u201cquoted\u201d \u2013 dash"
    assert decode_text(b"\x81\xe9") == "\x81é"  # undefined in cp1252: Latin-1, never an error


# ------------------------------------------------------------------------------------------- IMDb
def test_imdb_synthetic_archive_and_cache(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    make_imdb_tar(root / "aclImdb_v1.tar.gz", n=10)
    before = _listing(root)
    ds = load_text_dataset("imdb", data_root=root, val_fraction=0.2)
    assert _listing(root) == before  # nothing written beside the archive
    assert ds.source == str(root / "aclImdb_v1.tar.gz")
    assert len(ds.test) == 20 and len(ds.train) + len(ds.val) == 20 and len(ds.val) == 4
    assert list(ds.test.class_counts(2)) == [10, 10] and list(ds.val.class_counts(2)) == [2, 2]
    for split, name in ((ds.train, "train"), (ds.val, "train"), (ds.test, "test")):
        for t, y in zip(split.texts, split.labels):
            assert t.startswith(f"review {name} {'pos' if y == 1 else 'neg'} ")
    assert not any("unlabelled" in t or t == "0 0:1\n" for t in _all(ds))
    assert "<br />" in ds.train.texts[0]  # raw texts; the tokenizer removes line breaks
    # second load comes from the parsed cache: the archive is not read again
    assert any(p.name.startswith("parsed-") for p in (cache / "imdb").iterdir())

    def boom(*a, **k):
        raise AssertionError("archive parsed again")

    monkeypatch.setattr(text_sources, "_imdb_from_tar", boom)
    again = load_text_dataset("imdb", data_root=root, val_fraction=0.2)
    assert again.train.texts == ds.train.texts and again.test.texts == ds.test.texts
    assert np.array_equal(again.test.labels, ds.test.labels)


def test_imdb_forms_labelled_archive_and_folder(tmp_path: Path, cache: Path) -> None:
    root = tmp_path / "a"
    make_imdb_tar(root / "imdb" / "aclImdb_v1_labeled.tar.gz", n=4, unsup=False)
    ds = load_text_dataset("imdb", data_root=root)
    assert ds.source.endswith("imdb/aclImdb_v1_labeled.tar.gz") and len(ds.test) == 8
    # extracted folder
    folder_root = tmp_path / "b"
    with tarfile.open(root / "imdb" / "aclImdb_v1_labeled.tar.gz") as tf:
        tf.extractall(folder_root, filter="data")
    ds2 = load_text_dataset("imdb", data_root=folder_root)
    assert ds2.source == str(folder_root / "aclImdb")
    assert ds2.test.texts == ds.test.texts and ds2.train.texts == ds.train.texts


def test_imdb_missing_message(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MIRRORATTN_IMDB_URL", raising=False)
    root = tmp_path / "empty"
    root.mkdir()
    (root / "aclImdb_v1.tar.gz.part").write_bytes(b"abc")
    with pytest.raises(DataNotFoundError) as err:
        load_text_dataset("imdb", data_root=root)
    msg = str(err.value)
    for want in (
        "IMDb",
        str(root / "aclImdb_v1.tar.gz"),
        str(root / "imdb" / "aclImdb"),
        str(root / "imdb" / "aclImdb*.tar.gz"),
        "--download",
        text_sources.IMDB_URL,
        "MIRRORATTN_DATA",
        "partial download",
    ):
        assert want in msg, want
    assert "\n" not in msg


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not-imdb"])
def test_imdb_corrupt_archive_message(tmp_path: Path, cache: Path, damage: str) -> None:
    path = tmp_path / "aclImdb_v1.tar.gz"
    if damage == "truncated":
        make_imdb_tar(path, n=200, truncate=True)
    elif damage == "garbage":
        path.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 10)
    else:
        with tarfile.open(path, "w:gz") as tf:
            info = tarfile.TarInfo("something/else.txt")
            tf.addfile(info, io.BytesIO(b""))
    with pytest.raises(DataNotFoundError) as err:
        load_text_dataset("imdb", data_root=tmp_path)
    msg = str(err.value)
    assert str(path) in msg and "--download" in msg
    assert ("damaged" in msg) if damage != "not-imdb" else ("not the IMDb archive" in msg)


def test_polarity_falls_back_to_the_embedded_copy(tmp_path: Path, shared_data: Path, cache: Path) -> None:
    """With no copy under the data root the package's own copy is read: the same texts as the shared archive."""
    import hashlib

    embedded = text_sources.EMBEDDED_POLARITY
    assert hashlib.sha256(embedded.read_bytes()).hexdigest() == text_sources.EMBEDDED_POLARITY_SHA256
    licences = (embedded.parent / "DATA_LICENSES.md").read_text()
    assert "Pang" in licences and "CC BY 4.0" in licences
    texts, labels, path = text_sources.read_polarity(tmp_path)
    assert path == embedded and len(texts) == 10662 and sum(labels) == 5331
    shared = load_text_dataset("polarity", data_root=shared_data, split_seed=5)
    mine = load_text_dataset("polarity", data_root=tmp_path, split_seed=5)
    assert list(mine.train.texts) == list(shared.train.texts)
    assert np.array_equal(mine.test.labels, shared.test.labels)
    assert mine.source == str(embedded)


def test_polarity_missing_and_corrupt(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_sources, "EMBEDDED_POLARITY", tmp_path / "no-embedded-copy.zip")
    with pytest.raises(DataNotFoundError) as err:
        load_text_dataset("polarity", data_root=tmp_path)
    msg = str(err.value)
    assert "sentence polarity" in msg and str(tmp_path / "sentence_polarity" / "sentence_polarity.zip") in msg
    assert text_sources.POLARITY_URL in msg and "MIRRORATTN_DATA" in msg
    bad = tmp_path / "sentence_polarity" / "sentence_polarity.zip"
    bad.parent.mkdir()
    bad.write_bytes(b"PK\x03\x04 this is not a zip file")
    with pytest.raises(DataNotFoundError, match="damaged"):
        load_text_dataset("polarity", data_root=tmp_path)


def test_polarity_from_extracted_files_latin1(tmp_path: Path, cache: Path) -> None:
    folder = tmp_path / "rt-polaritydata"
    folder.mkdir()
    (folder / "rt-polarity.pos").write_bytes("a charming caf\xe9 film . \nfun \x96 really\n".encode("latin-1"))
    (folder / "rt-polarity.neg").write_bytes(b"dull .\nboring\n\nawful\n")
    ds = load_text_dataset("polarity", data_root=tmp_path, test_fraction=0.4, val_fraction=0.0)
    assert sorted(_all(ds)) == sorted(["a charming café film .", "fun – really", "dull .", "boring", "awful"])


def test_polarity_official_tarball(tmp_path: Path, cache: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for pol, lines in (
            ("pos", [f"good {i} \u201cfine\u201d" for i in range(10)]),
            ("neg", [f"bad {i}" for i in range(10)]),
        ):
            body = "".join(line + " \n" for line in lines).encode("cp1252")
            info = tarfile.TarInfo(f"rt-polaritydata/rt-polarity.{pol}")
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
    (tmp_path / "rt-polaritydata.tar.gz").write_bytes(buf.getvalue())
    ds = load_text_dataset("polarity", data_root=tmp_path, test_fraction=0.3, val_fraction=0.0)
    assert ds.source == str(tmp_path / "rt-polaritydata.tar.gz")
    assert len(ds.test) == 6 and list(ds.test.class_counts(2)) == [3, 3]
    assert all(
        t == f"good {t.split()[1]} \u201cfine\u201d"
        for s in (ds.train, ds.test)
        for t, y in zip(s.texts, s.labels)
        if y
    )


# ------------------------------------------------------------------------------------- user files
def _write(path: Path, rows: list[dict], fmt: str) -> Path:
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="\t" if fmt == "tsv" else ",")
            w.writeheader()
            w.writerows(rows)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "tsv"])
def test_user_file_string_labels(tmp_path: Path, cache: Path, fmt: str) -> None:
    names = ["spam", "ham", "eggs"]
    rows = [{"body": f"message {i}, with a comma\tand tab", "kind": names[i % 3]} for i in range(60)]
    path = _write(tmp_path / f"data.{fmt}", rows, fmt)
    ds = load_text_dataset(str(path), text_column="body", label_column="kind", test_fraction=0.25, val_fraction=0.2)
    assert ds.label_names == ["eggs", "ham", "spam"] and ds.num_classes == 3
    assert ds.name == "data" and ds.source == str(path)
    assert len(ds.test) == 15 and len(ds.val) == 9 and len(ds.train) == 36
    lookup = {r["body"]: sorted(names).index(r["kind"]) for r in rows}
    for s in (ds.train, ds.val, ds.test):
        assert [lookup[t] for t in s.texts] == s.labels.tolist()
    assert sorted(_all(ds)) == sorted(lookup)
    assert list(ds.test.class_counts(3)) == [5, 5, 5]


def test_user_file_int_labels_split_column_and_prefix(tmp_path: Path, cache: Path) -> None:
    rows = [{"text": f"t{i}", "label": i % 2, "split": "test" if i < 10 else "train"} for i in range(40)]
    path = _write(tmp_path / "d.csv", rows, "csv")
    ds = load_text_dataset(f"file:{path}", val_fraction=0.1)
    assert ds.label_names == ["0", "1"]
    assert sorted(ds.test.texts) == sorted(f"t{i}" for i in range(10))  # the file's own test split
    assert len(ds.val) == 3 and len(ds.train) == 27
    assert all(int(t[1:]) % 2 == y for s in (ds.train, ds.val, ds.test) for t, y in zip(s.texts, s.labels))
    # non-contiguous integer labels are numbered in sorted order; a val split in the file is used as is
    rows = [{"text": f"t{i}", "label": [-1, 1][i % 2], "split": ["train", "dev", "test"][i % 3]} for i in range(30)]
    ds = load_text_dataset(str(_write(tmp_path / "e.jsonl", rows, "jsonl")))
    assert ds.label_names == ["-1", "1"]
    assert sorted(ds.val.texts) == sorted(f"t{i}" for i in range(30) if i % 3 == 1)
    assert all(y == (int(t[1:]) % 2) for t, y in zip(ds.train.texts, ds.train.labels))


def test_user_file_errors(tmp_path: Path, cache: Path) -> None:
    path = _write(tmp_path / "d.tsv", [{"review": "x", "stars": "1"}], "tsv")
    with pytest.raises(ValueError) as err:
        load_text_dataset(str(path))
    assert "'text' or 'label'" in str(err.value) and "'review', 'stars'" in str(err.value)
    with pytest.raises(ValueError, match="no column named 'lab'"):
        load_text_dataset(str(path), text_column="review", label_column="lab")
    bad_split = _write(tmp_path / "s.jsonl", [{"text": "a", "label": 0, "split": "holdout"}], "jsonl")
    with pytest.raises(ValueError, match="'holdout' is not one of train, test"):
        load_text_dataset(str(bad_split))
    bad_json = tmp_path / "b.jsonl"
    bad_json.write_text('{"text": "a", "label": 1}\n{oops\n')
    with pytest.raises(ValueError, match="line 2: not valid JSON"):
        load_text_dataset(str(bad_json))
    with pytest.raises(DataNotFoundError, match="not found"):
        load_text_dataset(str(tmp_path / "nope.csv"))
    with pytest.raises(ValueError, match="unknown data set 'mnist'"):
        load_text_dataset("mnist")
    with pytest.raises(ValueError, match="val_fraction"):
        load_text_dataset("polarity", val_fraction=1.0)


# -------------------------------------------------------------------------------------- tokenizer
CORPUS = [
    "The movie was great.<br /><br />Great acting, great story!",
    "An awful film.<br/>Awful acting and a boring story.",
    "I loved the CAFÉ scene; the acting was superb<BR>really superb.",
    "Boring, boring, boring. The worst movie of the year.",
] * 10


def test_tokenizer_special_ids_html_and_normalisation(cache: Path) -> None:
    tok = build_tokenizer(CORPUS, vocab_size=300, min_frequency=2)
    assert [tok.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]")] == [PAD_ID, UNK_ID, CLS_ID, SEP_ID]
    assert (PAD_ID, UNK_ID, CLS_ID, SEP_ID) == (0, 1, 2, 3)
    vocab = tok.get_vocab()
    assert "br" not in vocab and "<" not in vocab and ">" not in vocab  # line breaks removed before training
    assert "great" in vocab and "cafe" in vocab and "Great" not in vocab  # lower-cased, accents stripped
    a = tok.encode("Great<br />story").ids
    assert a == tok.encode("great story").ids and a[0] == CLS_ID and len(a) == 3


def test_tokenizer_cache_hit(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = tokenize._train_tokenizer
    monkeypatch.setattr(tokenize, "_train_tokenizer", lambda *a, **k: calls.append(1) or real(*a, **k))
    tok = build_tokenizer(CORPUS, vocab_size=200)
    files = list((cache / "tokenizers").glob("wordpiece-200-*.json"))
    assert len(calls) == 1 and len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    tok2 = build_tokenizer(list(CORPUS), vocab_size=200)
    assert len(calls) == 1 and files[0].stat().st_mtime_ns == mtime  # loaded from the file, not retrained
    assert tok2.get_vocab() == tok.get_vocab() and tok2.encode(CORPUS[0]).ids == tok.encode(CORPUS[0]).ids
    build_tokenizer(CORPUS[:-1], vocab_size=200)  # other texts -> other key
    build_tokenizer(CORPUS, vocab_size=200, lowercase=False)  # other settings -> other key
    assert len(calls) == 3 and len(list((cache / "tokenizers").glob("*.json"))) == 3


def test_vocab_from_training_split_only(tmp_path: Path, cache: Path) -> None:
    rows = [
        {"text": f"a fine {w} movie number {i}", "label": i % 2, "split": "train"}
        for i, w in enumerate(["good", "bad"] * 20)
    ]
    rows += [{"text": "zyzzyva zyzzyva quokka " * 3, "label": i % 2, "split": "test"} for i in range(10)]
    ds = load_text_dataset(str(_write(tmp_path / "d.jsonl", rows, "jsonl")))
    tok = build_tokenizer(ds.train.texts, vocab_size=500)
    assert "zyzzyva" not in tok.get_vocab() and "quokka" not in tok.get_vocab() and "movie" in tok.get_vocab()
    both = build_tokenizer(ds.train.texts + ds.test.texts, vocab_size=500)  # control: the words do get in
    assert "zyzzyva" in both.get_vocab() and "quokka" in both.get_vocab()


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_encode_shapes_padding_truncation(cache: Path, kind: str) -> None:
    tok = build_tokenizer(CORPUS, kind=kind, vocab_size=300)
    texts = ["great story", "Boring, boring, boring. The worst movie of the year. " * 5, ""]
    n_tokens = [len(tok.encode(t, add_special_tokens=False).ids) for t in texts]  # independent count
    assert n_tokens[0] >= 2 and n_tokens[1] > 20 and n_tokens[2] == 0
    enc = encode_texts(tok, texts, 16)
    assert enc.ids.shape == enc.mask.shape == (3, 16) and enc.ids.dtype == torch.int64 and enc.mask.dtype == torch.bool
    assert (enc.ids[:, 0] == CLS_ID).all()
    assert enc.lengths.tolist() == [min(16, 1 + n) for n in n_tokens]
    assert torch.equal(enc.mask, enc.ids != PAD_ID)  # PAD only where masked, at the end
    first = tok.encode(texts[1], add_special_tokens=False).ids[:15]
    assert enc.ids[1, 1:].tolist() == first  # truncation keeps the beginning
    assert enc.ids[0, 1 : 1 + n_tokens[0]].tolist() == tok.encode(texts[0], add_special_tokens=False).ids
    longest = encode_texts(tok, texts[::2], 16, pad_to="longest")
    assert longest.ids.shape == (2, 1 + n_tokens[0]) and longest.mask[1].sum() == 1
    capped = encode_texts(tok, texts, 16, pad_to="longest")
    assert torch.equal(capped.ids, enc.ids)
    assert tok.truncation is None and tok.padding is None  # settings restored
    with pytest.raises(ValueError, match="max_length"):
        encode_texts(tok, texts, 1)
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        build_tokenizer(CORPUS, kind="sentencepiece")


def test_encode_unknown_characters_and_literal_special_tokens(cache: Path) -> None:
    tok = build_tokenizer(CORPUS, vocab_size=300)
    enc = encode_texts(tok, ["great \u2603 story", "great [CLS] [PAD] story"], 12)
    assert UNK_ID in enc.ids[0].tolist()
    # a literal "[CLS]" / "[PAD]" in a text is plain text, not a special token
    row = enc.ids[1][enc.mask[1]].tolist()
    assert row.count(CLS_ID) == 1 and PAD_ID not in row and len(row) > 4
    assert tok.encode_special_tokens is False  # restored


def test_encode_cache(cache: Path) -> None:
    tok = build_tokenizer(CORPUS, vocab_size=300)
    texts = CORPUS[:4] + ["short"]
    plain = encode_texts(tok, texts, 12)
    first = encode_texts(tok, texts, 12, cache=True)
    assert torch.equal(first.ids, plain.ids) and torch.equal(first.mask, plain.mask)
    files = list((cache / "encoded").glob("*.npz"))
    assert len(files) == 1
    with np.load(files[0]) as z:  # the file holds the same ids and lengths
        assert np.array_equal(z["ids"].astype(np.int64), plain.ids.numpy())
        assert z["lengths"].tolist() == plain.lengths.tolist()
    # prove the second call reads the file: tamper with it and see the change come back
    np.savez(files[0], ids=np.full((5, 12), 7, dtype=np.uint16), lengths=np.full(5, 3, dtype=np.int32))
    again = encode_texts(tok, texts, 12, cache=True)
    assert (again.ids == 7).all() and again.lengths.tolist() == [3] * 5 and again.ids.dtype == torch.int64
    other = encode_texts(tok, texts, 10, cache=True)  # other max_length: other key, fresh encoding
    assert torch.equal(other.ids, plain.ids[:, :10])  # truncation keeps the start, padding at the end
    assert len(list((cache / "encoded").glob("*.npz"))) == 2


def test_textsplit_validation() -> None:
    with pytest.raises(ValueError, match="2 texts but 1 labels"):
        TextSplit(["a", "b"], np.array([0]))


# ------------------------------------------------------------------------------------ full IMDb
@pytest.mark.slow
def test_imdb_full_shared_archive(shared_data: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = shared_data / "imdb" / "aclImdb_v1_labeled.tar.gz"
    t0 = time.perf_counter()
    ds = load_text_dataset("imdb", data_root=shared_data)
    first = time.perf_counter() - t0
    assert ds.source == str(archive)
    assert len(ds.test) == 25000 and len(ds.train) + len(ds.val) == 25000 and len(ds.val) == 2500
    assert list(ds.test.class_counts(2)) == [12500, 12500]
    assert list(ds.train.class_counts(2)) == [11250, 11250]
    # spot-check against the archive itself: a known review file's text and label
    found = {}
    with tarfile.open(archive, "r|gz") as tf:  # stream: stop at the first review of each test class
        for member in tf:
            parts = member.name.split("/")
            if member.isfile() and parts[1:3] in (["test", "neg"], ["test", "pos"]) and parts[2] not in found:
                found[parts[2]] = tf.extractfile(member).read().decode("utf-8")
            if len(found) == 2:
                break
    for pol, label in (("neg", 0), ("pos", 1)):
        i = ds.test.texts.index(found[pol])
        assert ds.test.labels[i] == label
    assert sum("<br />" in t for t in ds.test.texts) > 10000
    monkeypatch.setattr(text_sources, "_imdb_from_tar", lambda *a: (_ for _ in ()).throw(AssertionError("reparsed")))
    t0 = time.perf_counter()
    again = load_text_dataset("imdb", data_root=shared_data)
    second = time.perf_counter() - t0
    assert again.test.texts == ds.test.texts and again.train.texts == ds.train.texts
    print(f"IMDb first load {first:.2f} s, cached load {second:.2f} s")


# ------------------------------------------------------------------------- issue 12: URLs, cut archives, empty splits
@pytest.mark.parametrize("damage", ["garbage", "not-imdb"])
def test_imdb_advice_names_the_url_in_use(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    mirror = "http://mirror.invalid/data/imdb.tar.gz"
    monkeypatch.setenv("MIRRORATTN_IMDB_URL", mirror)
    path = tmp_path / "aclImdb_v1.tar.gz"
    if damage == "garbage":
        path.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 10)
    else:
        with tarfile.open(path, "w:gz") as tf:
            tf.addfile(tarfile.TarInfo("something/else.txt"), io.BytesIO(b""))
    with pytest.raises(DataNotFoundError) as err:
        load_text_dataset("imdb", data_root=tmp_path)
    assert mirror in str(err.value) and text_sources.IMDB_URL not in str(err.value)


def test_imdb_archive_cut_at_a_member_boundary_is_refused(tmp_path: Path, cache: Path) -> None:
    whole = make_imdb_tar(tmp_path / "whole" / "aclImdb_v1.tar.gz", n=20)
    import gzip

    raw = gzip.decompress(whole.read_bytes())
    members = list(tarfile.open(fileobj=io.BytesIO(raw)))
    cut = next(m.offset for m in members if m.name.startswith("aclImdb/test/pos/"))  # test/pos lost entirely
    path = tmp_path / "cut" / "aclImdb_v1.tar.gz"
    path.parent.mkdir()
    path.write_bytes(gzip.compress(raw[:cut]))
    with pytest.raises(DataNotFoundError, match="cut short.*Delete it and get it again"):
        load_text_dataset("imdb", data_root=path.parent)


def test_a_fraction_that_rounds_to_an_empty_split_is_an_error(tmp_path: Path, cache: Path) -> None:
    rows = [{"text": f"t{i}", "label": i % 2} for i in range(4)]
    path = _write(tmp_path / "d.jsonl", rows, "jsonl")
    with pytest.raises(ValueError, match=r"val_fraction=0.1 of a pool of 3 examples rounds to an empty val split; "
                                         r"use a larger val_fraction \(at least 0.333\)"):
        load_text_dataset(str(path), val_fraction=0.1, test_fraction=0.25)
    with pytest.raises(ValueError, match=r"test_fraction=0.1 of a pool of 4 examples rounds to an empty test split"):
        load_text_dataset(str(path), val_fraction=0.0, test_fraction=0.1)
    with pytest.raises(ValueError, match=r"val_fraction=0.9 of a pool of 1 examples leaves no other examples"):
        load_text_dataset(str(path), val_fraction=0.9, test_fraction=0.75)
    ds = load_text_dataset(str(path), val_fraction=0.0, test_fraction=0.25)  # no validation split asked: fine
    assert (len(ds.train), len(ds.val), len(ds.test)) == (3, 0, 1)
