"""Hostile data files, each built here in a few lines: a pickle that runs code, traversal and link members,
a zip bomb, a multi-member gzip whose ISIZE trailer lies, and tar archives cut or damaged.

Every one must be refused (or read harmlessly, in memory) with one clear line: nothing runs, nothing is
written outside, memory stays bounded by the caps of :mod:`mirrorattn.data.archives`.
"""

from __future__ import annotations

import gzip
import io
import pickle
import stat
import tarfile
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mirrorattn.cli import main
from mirrorattn.data import archives, vision_sources
from mirrorattn.data.archives import ArchiveLimitError
from mirrorattn.data.paths import DataNotFoundError
from mirrorattn.data.text import load_text_dataset
from mirrorattn.data.vision import load_vision_dataset

MiB = 1 << 20


class _WritesMarker:
    """Unpickling this calls ``open(marker, "w")``: the marker file appears if the pickle ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _batches(marker: Path) -> dict[str, bytes]:
    """The seven CIFAR-10 batch files, ``data_batch_1`` crafted to write ``marker``."""
    ok = {b"labels": list(range(10)), b"data": np.zeros((10, 3072), np.uint8)}
    raws = {f"data_batch_{i}": pickle.dumps(ok) for i in range(2, 6)}
    raws["data_batch_1"] = pickle.dumps({b"labels": [0], b"data": _WritesMarker(marker)})
    raws["test_batch"] = pickle.dumps(ok)
    raws["batches.meta"] = pickle.dumps({b"label_names": [b"c%d" % i for i in range(10)]})
    return raws


def _tar(path: Path, members: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for name, raw in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    return path


def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg
    return msg


# --------------------------------------------------------------------------- pickles that run code


@pytest.mark.parametrize("name", ["evil.tar.gz", "cifar-10-python.tar.gz"])
def test_crafted_cifar_pickle_archive_runs_nothing(tmp_path: Path, cache: Path, name: str) -> None:
    marker = tmp_path / "marker"
    root = tmp_path / "root"
    (root / "cifar10").mkdir(parents=True)
    members = {f"cifar-10-batches-py/{n}": raw for n, raw in _batches(marker).items()}
    _tar(root / "cifar10" / name, members)
    with pytest.raises(DataNotFoundError) as err:
        load_vision_dataset("cifar10", data_root=root)
    assert not marker.exists()
    msg = _one_line(err.value)
    if name == "evil.tar.gz":  # read with the restricted unpickler, which names what it refused
        assert "refused" in msg and "io.open" in msg and "data_batch_1" in msg
    else:  # the official name: the MD5 is checked before anything is unpickled
        assert "md5 checksum mismatch" in msg and "--download" in msg
    with pytest.raises(DataNotFoundError, match="refused"):  # the reader itself, called directly
        vision_sources.read_cifar10_pickle(root / "cifar10" / name)
    assert not marker.exists()


def test_crafted_extracted_batches_folder_runs_nothing(
    tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture
) -> None:
    marker = tmp_path / "marker"
    folder = tmp_path / "root" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for n, raw in _batches(marker).items():
        (folder / n).write_bytes(raw)
    with pytest.raises(DataNotFoundError, match=r"data_batch_1: refused to unpickle the global io\.open"):
        load_vision_dataset("cifar10", data_root=tmp_path / "root")
    assert not marker.exists()
    rc = main(["vision", "--dataset", "cifar10", "--data-root", str(tmp_path / "root"), "--out",
               str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "refused" in err[0] and not marker.exists()


@pytest.mark.parametrize("payload", [
    pickle.dumps({b"data": np.array([object()] * 0 + [1], dtype=object)}),  # an object array
    b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x06system\x93\x8c\x02id\x85R.",  # os.system("id")
    b"cbuiltins\neval\n(V1+1\ntR.",  # protocol 0 eval
])
def test_restricted_unpickler_refuses_globals_and_object_arrays(tmp_path: Path, payload: bytes) -> None:
    from mirrorattn.data.safe_pickle import UnsafePickleError, load_plain

    with pytest.raises(UnsafePickleError) as err:
        load_plain(payload, "x.pkl")
    assert _one_line(err.value).startswith("x.pkl: ")


def test_restricted_unpickler_reads_plain_arrays() -> None:
    from mirrorattn.data.safe_pickle import load_plain

    for protocol in (2, 3, 4, 5):
        data = {b"a": np.arange(6, dtype=np.float32).reshape(2, 3), b"l": [1, b"x", "y", 2.5, None, True]}
        back = load_plain(pickle.dumps(data, protocol=protocol), "ok")
        np.testing.assert_array_equal(back[b"a"], data[b"a"])
        assert back[b"l"] == data[b"l"]


# --------------------------------------------------------------------------- traversal and link members


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), 7, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _listing(base: Path) -> list[str]:
    """Every path under ``base`` but the test's cache folder (which the loaders write)."""
    return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.relative_to(base).parts[0] != "cache")


def test_tar_traversal_and_link_members_are_read_in_memory_or_skipped(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    png = _png()
    archive = tmp_path / "a" / "imgs.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for name in ("../../escaped.png", "/tmp/absolute-escape.png", "../train/x/0.png", "d/test/x/0.png",
                     "d/train/y/0.png", "d/test/y/0.png"):
            info = tarfile.TarInfo(name)
            info.size = len(png)
            tf.addfile(info, io.BytesIO(png))
        for kind, name, target in ((tarfile.SYMTYPE, "d/train/x/link.png", "/etc/passwd"),
                                   (tarfile.LNKTYPE, "d/test/x/hard.png", "../../escaped.png")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tf.addfile(info)
    before = _listing(tmp_path)
    splits, classes = vision_sources.read_image_folder(archive)
    assert classes == ("x", "y")
    # links skipped; "../train/x/0.png" is just a name, matched as train/x (read in memory, never extracted)
    assert [len(splits[s][1]) for s in ("train", "test")] == [2, 2]
    assert _listing(tmp_path) == before and not Path("/tmp/absolute-escape.png").exists()


def test_imdb_tar_link_members_are_skipped(tmp_path: Path, cache: Path) -> None:
    members = {f"aclImdb/{s}/{p}/{i}_{9 if p == 'pos' else 1}.txt": f"{s} {p} {i}".encode()
               for s in ("train", "test") for p in ("pos", "neg") for i in range(3)}
    members["../aclImdb/train/pos/7_9.txt"] = b"traversal name, read in memory"
    path = tmp_path / "aclImdb_v1.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for name, raw in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
        info = tarfile.TarInfo("aclImdb/train/neg/8_1.txt")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    before = _listing(tmp_path)
    ds = load_text_dataset("imdb", data_root=tmp_path, val_fraction=0.0)
    texts = ds.train.texts
    assert len(texts) == 7 and "traversal name, read in memory" in texts
    assert not any("root:" in t or "/etc/passwd" in t for t in texts)
    assert _listing(tmp_path) == before


def _zip_symlink(zf: zipfile.ZipFile, name: str, target: str) -> None:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    zf.writestr(info, target)


def test_zip_traversal_and_symlink_members(tmp_path: Path, cache: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with zipfile.ZipFile(root / "sentence_polarity.zip", "w") as zf:
        zf.writestr("../../sentence_polarity/rt-polarity.pos", "good film\nfine acting\n")
        zf.writestr("sentence_polarity/rt-polarity.neg", "dull\nboring\n")
        _zip_symlink(zf, "evil/rt-polarity.neg", "/etc/passwd")  # after the real one: would replace it
    before = _listing(tmp_path)
    ds = load_text_dataset("polarity", data_root=root, test_fraction=0.5, val_fraction=0.0)
    texts = ds.train.texts + ds.test.texts
    assert sorted(texts) == ["boring", "dull", "fine acting", "good film"]
    assert _listing(tmp_path) == before


# --------------------------------------------------------------------------- decompression bombs


def _zeros_zip(path: Path, member: str, size: int) -> Path:
    """A zip whose ``member`` is ``size`` zero bytes (compresses about 1000:1), written in 1 MiB chunks."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf, zf.open(member, "w") as fh:
        for _ in range(size // MiB):
            fh.write(bytes(MiB))
    return path


def _peak(fn) -> tuple[BaseException, int]:
    """(the exception ``fn()`` raises, peak traced memory in bytes while it ran)."""
    tracemalloc.start()
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - returned for the caller's assertions
        return exc, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    raise AssertionError("no error raised")


def test_zip_bomb_is_refused_with_bounded_memory(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    bomb = _zeros_zip(root / "sentence_polarity.zip", "sentence_polarity/rt-polarity.pos", 24 * MiB)
    assert bomb.stat().st_size < 100_000
    monkeypatch.setenv("MIRRORATTN_MAX_MEMBER_BYTES", "2M")  # the same code path as 256 MiB, far cheaper
    exc, peak = _peak(lambda: load_text_dataset("polarity", data_root=root))
    assert isinstance(exc, ArchiveLimitError)
    msg = _one_line(exc)
    assert "rt-polarity.pos" in msg and str(bomb) in msg and "2,097,152" in msg and "MIRRORATTN_MAX_MEMBER_BYTES" in msg
    assert peak < 8 * MiB  # never the 24 MiB member in memory


def test_multi_member_gzip_with_lying_isize(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A .tar.gz of two gzip members: the trailer read by a size check is the last, empty member's (ISIZE 0)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        for name, size in (("aclImdb/train/unsup/0_0.txt", 24 * MiB), ("aclImdb/train/pos/0_9.txt", 10)):
            info = tarfile.TarInfo(name)
            info.size = size
            tf.addfile(info, io.BytesIO(bytes(size)))
    path = tmp_path / "aclImdb_v1.tar.gz"
    path.write_bytes(gzip.compress(raw.getvalue()) + gzip.compress(b""))
    assert int.from_bytes(path.read_bytes()[-4:], "little") == 0  # the lying trailer
    monkeypatch.setenv("MIRRORATTN_MAX_ARCHIVE_BYTES", "4M")
    exc, peak = _peak(lambda: load_text_dataset("imdb", data_root=tmp_path))
    assert isinstance(exc, ArchiveLimitError) and "the archive inflates past the cap of 4,194,304" in _one_line(exc)
    assert peak < 12 * MiB
    # a gzipped IDX file that inflates past the member cap
    idx = tmp_path / "train-images-idx3-ubyte.gz"
    idx.write_bytes(gzip.compress(bytes(8 * MiB)) + gzip.compress(b""))
    monkeypatch.setenv("MIRRORATTN_MAX_MEMBER_BYTES", "1M")
    with pytest.raises(ArchiveLimitError, match="gzip content inflates past the cap of 1,048,576"):
        vision_sources.read_idx_file(idx)


def test_tar_member_past_the_member_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _tar(tmp_path / "t.tar.gz", {"d/train/x/big.png": bytes(3 * MiB)})
    monkeypatch.setenv("MIRRORATTN_MAX_MEMBER_BYTES", "1M")
    with pytest.raises(DataNotFoundError, match=r"member d/train/x/big\.png: the member inflates past the cap"):
        vision_sources.read_image_folder(path)


def test_bad_cap_settings_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIRRORATTN_MAX_ARCHIVE_BYTES", "lots")
    with pytest.raises(ValueError, match="MIRRORATTN_MAX_ARCHIVE_BYTES='lots' is not a positive size"):
        archives.limits()
    monkeypatch.setenv("MIRRORATTN_MAX_ARCHIVE_BYTES", "3G")
    monkeypatch.setenv("MIRRORATTN_MAX_MEMBER_BYTES", "512k")
    assert archives.limits() == (512 << 10, 3 << 30)
    monkeypatch.delenv("MIRRORATTN_MAX_ARCHIVE_BYTES")
    monkeypatch.delenv("MIRRORATTN_MAX_MEMBER_BYTES")
    assert archives.limits() == (archives.MAX_MEMBER_BYTES, archives.MAX_ARCHIVE_BYTES)


# --------------------------------------------------------------------------- truncated and damaged archives


def _image_tar_bytes() -> tuple[bytes, list[int]]:
    """An uncompressed tar of 2 classes x 3 images x (train, test), and the offsets of its members."""
    png, raw = _png(), io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        for split in ("test", "train"):
            for cls in ("x", "y"):
                for i in range(3):
                    info = tarfile.TarInfo(f"d/{split}/{cls}/{i}.png")
                    info.size = len(png)
                    tf.addfile(info, io.BytesIO(png))
    data = raw.getvalue()
    return data, [m.offset for m in tarfile.open(fileobj=io.BytesIO(data))]


@pytest.mark.parametrize("damage", ["cut at a member", "zeroed header", "few bytes", "gzip cut"])
def test_cut_or_damaged_tar_is_an_error_not_a_part(tmp_path: Path, damage: str) -> None:
    data, offsets = _image_tar_bytes()
    at = offsets[9]  # the 10th of 12 members: train/y/0.png, every class already seen in both splits
    if damage == "cut at a member":
        blob = gzip.compress(data[:at])
    elif damage == "zeroed header":
        blob = gzip.compress(data[:at] + bytes(512) + data[at + 512:])
    elif damage == "few bytes":
        blob = gzip.compress(data[:at + 148] + bytes(4) + data[at + 152:])  # inside the header checksum
    else:
        full = gzip.compress(data)
        blob = full[: len(full) - 200]
    path = tmp_path / "imgs.tar.gz"
    path.write_bytes(blob)
    with pytest.raises(DataNotFoundError) as err:
        vision_sources.read_image_folder(path)
    msg = _one_line(err.value)
    assert str(path) in msg and ("cut short" in msg or "damaged" in msg or "ended before" in msg)


def test_plain_tar_reads_whole_and_refuses_a_cut(tmp_path: Path) -> None:
    data, offsets = _image_tar_bytes()
    path = tmp_path / "imgs.tar"
    path.write_bytes(data)
    splits, _ = vision_sources.read_image_folder(path)
    assert [len(splits[s][1]) for s in ("train", "test")] == [6, 6]
    path.write_bytes(data[: offsets[11]])  # the last member lost: train/y would hold 2 of 3 images
    with pytest.raises(DataNotFoundError, match="cut short"):
        vision_sources.read_image_folder(path)
