"""Property tests of the user text-file reader (``mirrorattn.data.text_files``) and its loader.

Any file - random bytes, random column names, labels and split values, in several encodings and
the three formats - either loads or raises one of the project's own errors with a one-line message
that names the file; never another exception (a KeyError, a TypeError, a bare ValueError from the
json or csv module ...).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mirrorattn.config import ConfigError
from mirrorattn.data.paths import DataError, DataNotFoundError
from mirrorattn.data.text import load_text_dataset
from mirrorattn.data.text_files import read_text_file

PROJECT_ERRORS = (DataError, DataNotFoundError, ConfigError)
SUFFIXES = (".csv", ".tsv", ".jsonl")
ENCODINGS = ("utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252")

_names = st.sampled_from(["text", "label", "split", "x", "", "te\"xt", "label,", "\t", "é"]) | st.text(max_size=6)
_scalars = (
    st.none() | st.booleans() | st.integers(-3, 3) | st.integers() | st.floats(allow_nan=True)
    | st.sampled_from(["train", "test", "val", "dev", "TEST ", "pos", "neg", "1", "-2", "²", "1" * 5000, " "])
    | st.text(max_size=12)
)
_values = _scalars | st.lists(_scalars, max_size=2) | st.dictionaries(st.text(max_size=3), _scalars, max_size=2)
_splits = st.sampled_from(["train", "test", "val", "valid", "dev", "TEST "])
#: rows of the expected shape (text and label, maybe a split) with random values, and rows of any shape
_labels = st.sampled_from(["pos", "neg", "0", "1", "-2", " 3 ", "²", "٣", "1" * 5000, "-", "nan", "True"]) | \
    st.sampled_from(["²", "1" * 5000, "-0", "+1", "0" * 3, "1_0", "١"]) | st.integers() | st.floats() | \
    st.booleans() | st.text(max_size=4)
_good_row = st.fixed_dictionaries({"text": st.text(max_size=20), "label": _labels}, optional={"split": _splits})
_any_row = st.dictionaries(_names, _values, max_size=4)
_rows = st.lists(_good_row, min_size=1, max_size=8) | st.lists(_any_row, max_size=8)


def _render(rows: list[dict], suffix: str) -> str:
    """Rows written as the format of ``suffix`` (CSV/TSV cells are the values' str)."""
    if suffix == ".jsonl":
        return "".join(json.dumps(r, allow_nan=True) + "\n" for r in rows)
    out = io.StringIO()
    columns = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.writer(out, delimiter="\t" if suffix == ".tsv" else ",")
    writer.writerow(columns)
    for r in rows:
        writer.writerow(["" if r.get(c) is None else str(r.get(c)) for c in columns])
    return out.getvalue()


def _check(path: Path, fn) -> None:
    try:
        fn()
    except PROJECT_ERRORS as exc:
        msg = str(exc)
        assert msg and "\n" not in msg and "\r" not in msg, repr(msg)
        assert str(path) in msg or path.name in msg or "fraction" in msg, msg


_SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_SETTINGS
@example(rows=[{"text": "a", "label": "²"}], suffix=".csv", encoding="utf-8", text_column="text", label_column="label")
@example(rows=[{"text": "a", "label": "1" * 5000}, {"text": "b", "label": 0}], suffix=".jsonl", encoding="utf-8",
         text_column="text", label_column="label")
@given(rows=_rows, suffix=st.sampled_from(SUFFIXES), encoding=st.sampled_from(ENCODINGS),
       text_column=_names, label_column=_names)
def test_structured_files_load_or_fail_cleanly(
    tmp_path: Path, rows: list[dict], suffix: str, encoding: str, text_column: str, label_column: str
) -> None:
    path = tmp_path / f"data{suffix}"
    try:
        path.write_bytes(_render(rows, suffix).encode(encoding, errors="surrogatepass"))
    except UnicodeEncodeError:
        path.write_bytes(_render(rows, suffix).encode("utf-8", errors="surrogatepass"))
    _check(path, lambda: read_text_file(path))
    _check(path, lambda: read_text_file(path, text_column=text_column, label_column=label_column))
    _check(path, lambda: load_text_dataset(str(path), val_fraction=0.2, test_fraction=0.3))


@_SETTINGS
@given(blob=st.binary(max_size=300) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
       head=st.sampled_from([b"", b"text,label\n", b"text\tlabel\tsplit\n", b'{"text": "a", "label": 1}\n',
                             b"\xef\xbb\xbf", b"\xff\xfe", b"\x00"]),
       suffix=st.sampled_from(SUFFIXES + (".ndjson",)))
def test_random_bytes_load_or_fail_cleanly(tmp_path: Path, blob: bytes, head: bytes, suffix: str) -> None:
    path = tmp_path / f"random{suffix}"
    path.write_bytes(head + blob)
    _check(path, lambda: read_text_file(path))
    _check(path, lambda: load_text_dataset(str(path)))
