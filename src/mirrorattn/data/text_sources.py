"""Readers of the real text data sets: IMDb (Maas et al. 2011) and Pang & Lee sentence polarity.

Both return plain ``(texts, labels)`` lists (labels 0 = negative, 1 = positive) and never write
into the data root, which may be read-only: IMDb is read straight from its ``.tar.gz`` with
:mod:`tarfile` and the parsed reviews are cached in ``cache_dir(cache_dir, "imdb")`` keyed by the
archive's path, size and modification time, so a second load takes well under a second.

Accepted IMDb forms under the data root ``R``: ``R/aclImdb_v1.tar.gz`` (the official archive,
with ``train/unsup`` and ``*.feat``, which are ignored), any ``aclImdb*.tar.gz`` in ``R`` or
``R/imdb`` (e.g. the labelled-only ``imdb/aclImdb_v1_labeled.tar.gz``), or an extracted
``aclImdb/`` folder in ``R`` or ``R/imdb``. :func:`download_imdb` fetches the official archive.
Archives are read member by member in memory with the caps of :mod:`mirrorattn.data.archives`.
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from pathlib import Path

import numpy as np

from mirrorattn.data.archives import READ_ERRORS, iter_tar_files, read_zip_files
from mirrorattn.data.download import fetch
from mirrorattn.data.paths import DataNotFoundError
from mirrorattn.data.paths import cache_dir as _cache_dir
from mirrorattn.io import atomic_path

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
#: MD5 of the official archive, as published by torchtext.
IMDB_MD5 = "7c2ac02c03563afcf9b574c7e56c153a"
IMDB_FILENAME = "aclImdb_v1.tar.gz"
POLARITY_URL = "https://www.cs.cornell.edu/people/pabo/movie-review-data/rt-polaritydata.tar.gz"
IMDB_LABEL_NAMES = ["neg", "pos"]
POLARITY_LABEL_NAMES = ["neg", "pos"]
_IMDB_MEMBER = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")
_PARSE_VERSION = 1
# Errors that a damaged archive raises while being read.
_ARCHIVE_ERRORS = (*READ_ERRORS, UnicodeError, KeyError)

Reviews = dict[str, tuple[list[str], list[int]]]  # split -> (texts, labels)


def decode_text(data: bytes) -> str:
    """Decode bytes as UTF-8, falling back to Windows-1252 and then Latin-1 (never fails).

    C1 control characters (U+0080-U+009F, left behind when Windows-1252 text was re-encoded as if
    it were Latin-1) are mapped to their Windows-1252 characters, e.g. U+0096 to an en dash.
    """
    for enc in ("utf-8", "cp1252"):
        try:
            text = data.decode(enc)
            break
        except UnicodeDecodeError:
            continue
    else:
        text = data.decode("latin-1")
    return text.translate(_C1_TO_CP1252)


def _c1_table() -> dict[int, str]:
    table = {}
    for code in range(0x80, 0xA0):
        try:
            table[code] = bytes([code]).decode("cp1252")
        except UnicodeDecodeError:
            pass
    return table


_C1_TO_CP1252 = _c1_table()


# ----------------------------------------------------------------------------------------- IMDb
def imdb_url() -> str:
    """The IMDb download URL: ``$MIRRORATTN_IMDB_URL`` if set, else :data:`IMDB_URL`."""
    return os.environ.get("MIRRORATTN_IMDB_URL") or IMDB_URL


def imdb_candidates(root: Path) -> list[Path]:
    """Every place under ``root`` an IMDb copy may be, in order of preference (existing or not)."""
    out = [root / IMDB_FILENAME, root / "imdb" / IMDB_FILENAME]
    for folder in (root, root / "imdb"):
        if folder.is_dir():
            out += sorted(p for p in folder.glob("aclImdb*.tar.gz") if p not in out)
    out += [root / "aclImdb", root / "imdb" / "aclImdb"]
    return out


def _imdb_missing_message(root: Path, looked: list[Path]) -> str:
    part = root / (IMDB_FILENAME + ".part")
    resume = f" A partial download is at {part}; --download resumes it." if part.exists() else ""
    patterns = [str(root / "aclImdb*.tar.gz"), str(root / "imdb" / "aclImdb*.tar.gz")]
    return (
        f"IMDb data set not found under the data root {root} (looked at: {', '.join(map(str, looked + patterns))})."
        f"{resume} Get it with --download (fetches {imdb_url()} into the data root), or download that file "
        "yourself and place it in the data root, or point --data-root / MIRRORATTN_DATA at a folder that "
        "holds aclImdb_v1.tar.gz, imdb/aclImdb*.tar.gz or an extracted aclImdb/."
    )


def download_imdb(
    data_root: str | os.PathLike,
    *,
    url: str | None = None,
    md5: str | None = IMDB_MD5,
    sha256: str | None = None,
    progress: bool = True,
) -> Path:
    """Fetch the IMDb archive into ``data_root/aclImdb_v1.tar.gz`` (resuming a ``.part``), verified.

    ``url`` defaults to :func:`imdb_url`; ``$MIRRORATTN_IMDB_MD5`` / ``$MIRRORATTN_IMDB_SHA256``
    override the checksums (an empty value disables that check) for mirrors of other files.
    """
    if "MIRRORATTN_IMDB_MD5" in os.environ:
        md5 = os.environ["MIRRORATTN_IMDB_MD5"] or None
    if "MIRRORATTN_IMDB_SHA256" in os.environ:
        sha256 = os.environ["MIRRORATTN_IMDB_SHA256"] or None
    return fetch(url or imdb_url(), Path(data_root) / IMDB_FILENAME, md5=md5, sha256=sha256, progress=progress)


def find_imdb(root: Path, *, download: bool = False, progress: bool = True) -> Path:
    """The first IMDb copy found under ``root`` (downloading it if asked), else DataNotFoundError."""
    looked = imdb_candidates(root)
    for cand in looked:
        if cand.is_file() or (cand.is_dir() and (cand / "train").is_dir() and (cand / "test").is_dir()):
            return cand
    if download:
        return download_imdb(root, progress=progress)
    raise DataNotFoundError(_imdb_missing_message(root, looked))


def _imdb_from_tar(path: Path) -> Reviews:
    found: dict[str, list[tuple[int, int, str]]] = {"train": [], "test": []}
    for name, raw in iter_tar_files(path, lambda n: _IMDB_MEMBER.search(n) is not None):
        m = _IMDB_MEMBER.search(name)
        assert m is not None
        split, pol, rid = m.group(1), m.group(2), int(m.group(3))
        found[split].append((int(pol == "pos"), rid, decode_text(raw)))
    return _sorted_reviews(found)


def _imdb_from_folder(path: Path) -> Reviews:
    found: dict[str, list[tuple[int, int, str]]] = {"train": [], "test": []}
    for split in ("train", "test"):
        for pol in ("neg", "pos"):
            folder = path / split / pol
            if not folder.is_dir():
                continue
            for f in folder.iterdir():
                m = _IMDB_MEMBER.search(f"aclImdb/{split}/{pol}/{f.name}")
                if m is not None:
                    found[split].append((int(pol == "pos"), int(m.group(3)), decode_text(f.read_bytes())))
    return _sorted_reviews(found)


def _sorted_reviews(found: dict[str, list[tuple[int, int, str]]]) -> Reviews:
    out: Reviews = {}
    for split, rows in found.items():
        rows.sort(key=lambda r: (r[0], r[1]))  # negatives then positives, by review id
        out[split] = ([r[2] for r in rows], [r[0] for r in rows])
    return out


def _source_key(path: Path) -> str:
    if path.is_dir():
        stats = [(str(d), d.stat().st_mtime_ns) for d in sorted(path.glob("*/*")) if d.is_dir()]
    else:
        st = path.stat()
        stats = [(str(path.resolve()), st.st_size, st.st_mtime_ns)]
    return hashlib.sha256(repr((stats, _PARSE_VERSION)).encode()).hexdigest()[:20]


def _save_reviews(path: Path, reviews: Reviews) -> None:
    arrays = {}
    for split, (texts, labels) in reviews.items():
        blobs = [t.encode("utf-8", errors="surrogatepass") for t in texts]
        arrays[f"{split}_bytes"] = np.frombuffer(b"".join(blobs), dtype=np.uint8)
        arrays[f"{split}_offsets"] = np.cumsum([0] + [len(b) for b in blobs], dtype=np.int64)
        arrays[f"{split}_labels"] = np.asarray(labels, dtype=np.int64)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)  # uncompressed: loads in a fraction of a second


def _load_reviews(path: Path) -> Reviews:
    out: Reviews = {}
    with np.load(path, allow_pickle=False) as z:
        for split in ("train", "test"):
            blob = z[f"{split}_bytes"].tobytes()
            off = z[f"{split}_offsets"].tolist()
            texts = [blob[a:b].decode("utf-8", errors="surrogatepass") for a, b in zip(off[:-1], off[1:])]
            out[split] = (texts, z[f"{split}_labels"].tolist())
    return out


def read_imdb(
    data_root: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None, download: bool = False,
    progress: bool = True,
) -> tuple[Reviews, Path]:
    """IMDb reviews ``{"train": (texts, labels), "test": (texts, labels)}`` and the path read from.

    Labels: 0 = negative, 1 = positive; reviews ordered negatives first, then by review id.
    ``progress``: show a progress bar while downloading.
    Raises :class:`DataNotFoundError` if no copy is found or the archive is damaged.
    """
    root = Path(data_root)
    path = find_imdb(root, download=download, progress=progress)
    cache_file = _cache_dir(cache_dir, "imdb") / f"parsed-{_source_key(path)}.npz"
    if cache_file.is_file():
        try:
            return _load_reviews(cache_file), path
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # a damaged cache file: parse again
    try:
        reviews = _imdb_from_folder(path) if path.is_dir() else _imdb_from_tar(path)
    except DataNotFoundError:
        raise
    except _ARCHIVE_ERRORS as exc:
        raise DataNotFoundError(
            f"IMDb archive {path} is damaged or truncated ({type(exc).__name__}: {exc}). Delete it and get it "
            f"again: --download fetches {imdb_url()} into the data root {root}."
        ) from None
    for split in ("train", "test"):
        labels = reviews[split][1]
        if not labels or len(set(labels)) < 2:
            raise DataNotFoundError(
                f"IMDb copy {path} holds no reviews, or only one class, in aclImdb/{split}/{{pos,neg}}/*.txt "
                f"({len(labels)} found); it is not the IMDb archive. Replace it: --download fetches {imdb_url()}."
            )
    _save_reviews(cache_file, reviews)
    return reviews, path


# ------------------------------------------------------------------------------------ polarity
def polarity_candidates(root: Path) -> list[Path]:
    """Every place under ``root`` a sentence polarity copy may be, in order of preference."""
    out = []
    for folder in (root / "sentence_polarity", root):
        out += [folder / "sentence_polarity.zip", folder / "rt-polaritydata.tar.gz"]
    for folder in (root / "sentence_polarity", root / "rt-polaritydata", root):
        out.append(folder / "rt-polarity.pos")
    return out


def _lines(data: bytes) -> list[str]:
    # split bytes on newlines only: str.splitlines would also split on U+0085 and friends
    return [s for s in (decode_text(line).strip() for line in data.split(b"\n")) if s]


#: the copy shipped inside the package (Pang & Lee 2005, CC BY 4.0; resources/DATA_LICENSES.md)
EMBEDDED_POLARITY = Path(__file__).resolve().parent.parent / "resources" / "sentence_polarity.zip"
#: SHA-256 of the embedded copy (the same archive as the shared data folder's sentence_polarity.zip)
EMBEDDED_POLARITY_SHA256 = "6e1ed4405b65c7eabf1d199a7f7c437091ac21da0ea7467b410a74062574566b"


def read_polarity(data_root: str | os.PathLike, *, embedded: bool = True) -> tuple[list[str], list[int], Path]:
    """Pang & Lee sentence polarity: (texts, labels, path). 5,331 negatives (0), then 5,331 positives (1).

    The data root's copy is read when it holds one; otherwise (``embedded``) the package's own copy
    :data:`EMBEDDED_POLARITY`, so that the text experiments run on a fresh machine without a data root.
    """
    root = Path(data_root)
    looked = polarity_candidates(root)
    path = next((p for p in looked if p.is_file()), None)
    if path is None and embedded and EMBEDDED_POLARITY.is_file():
        path = EMBEDDED_POLARITY
    if path is None:
        raise DataNotFoundError(
            f"sentence polarity data set not found under the data root {root} (looked at: "
            f"{', '.join(map(str, looked))}) and this installation lacks the embedded copy {EMBEDDED_POLARITY}. "
            f"Download {POLARITY_URL} (or sentence_polarity.zip) and put it "
            "in the data root, or point --data-root / MIRRORATTN_DATA at a folder that holds it."
        )
    try:
        if path.suffix == ".pos":
            raw = {"pos": path.read_bytes(), "neg": path.with_suffix(".neg").read_bytes()}
        else:
            raw = _polarity_archive(path)
    except DataNotFoundError:
        raise
    except _ARCHIVE_ERRORS as exc:
        raise DataNotFoundError(
            f"sentence polarity copy {path} is damaged or incomplete ({type(exc).__name__}: {exc}). Replace it "
            f"with a fresh copy of {POLARITY_URL}."
        ) from None
    neg, pos = _lines(raw["neg"]), _lines(raw["pos"])
    if not neg or not pos:
        raise DataNotFoundError(f"sentence polarity copy {path} has an empty rt-polarity.pos or .neg; replace it.")
    return neg + pos, [0] * len(neg) + [1] * len(pos), path


def _polarity_archive(path: Path) -> dict[str, bytes]:
    """The bytes of ``rt-polarity.pos`` / ``.neg`` from a zip or a (gzipped) tar, read in memory with caps."""
    def want(name: str) -> bool:
        return name.endswith(("rt-polarity.pos", "rt-polarity.neg"))

    members = read_zip_files(path, want) if path.suffix == ".zip" else dict(iter_tar_files(path, want))
    raw = {name[-3:]: data for name, data in members.items()}
    missing = [f"rt-polarity.{p}" for p in ("pos", "neg") if p not in raw]
    if missing:
        raise KeyError(f"the archive lacks {', '.join(missing)}")
    return raw


__all__ = [
    "EMBEDDED_POLARITY",
    "EMBEDDED_POLARITY_SHA256",
    "IMDB_FILENAME",
    "IMDB_LABEL_NAMES",
    "IMDB_MD5",
    "IMDB_URL",
    "POLARITY_LABEL_NAMES",
    "POLARITY_URL",
    "decode_text",
    "download_imdb",
    "find_imdb",
    "imdb_candidates",
    "imdb_url",
    "polarity_candidates",
    "read_imdb",
    "read_polarity",
]
