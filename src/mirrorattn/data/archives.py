"""Read archive members into memory with caps on the inflated sizes (no decompression bombs).

Nothing here extracts to disk: tar, zip and gzip members are read as bytes, links and folders
are skipped, and member names (``../x``, absolute paths) are only matched, never used as paths.
Sizes declared by the archive (gzip's ISIZE trailer, a zip header's ``file_size``) are never
trusted: every read streams and counts the bytes it inflates.

Caps (bytes), generous for the real data sets (the largest member is Fashion-MNIST's 47 MB of
training images; the official IMDb archive inflates to about 0.3 GB, CIFAR-10's to 0.18 GB):

* :data:`MAX_MEMBER_BYTES` (256 MiB): one member, or one gzip file's inflated content;
  environment variable ``MIRRORATTN_MAX_MEMBER_BYTES``.
* :data:`MAX_ARCHIVE_BYTES` (2 GiB): everything inflated from one archive (a ``.tar.gz``
  stream including the members skipped, or the members read from a zip);
  environment variable ``MIRRORATTN_MAX_ARCHIVE_BYTES``.

The variables take a count of bytes, optionally with a suffix K, M or G (powers of 1024).
Exceeding a cap raises :class:`ArchiveLimitError` naming the file, the member and the cap.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import re
import stat
import tarfile
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator

from mirrorattn.data.paths import DataNotFoundError

MAX_MEMBER_BYTES = 256 << 20
MAX_ARCHIVE_BYTES = 2 << 30
_CHUNK = 1 << 20
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
#: what a damaged or crafted archive raises while being read (besides our own errors)
READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, OSError,
               RuntimeError, NotImplementedError)


class ArchiveLimitError(DataNotFoundError):
    """An archive member (or the whole archive) inflates past a cap: a decompression bomb or a damaged file."""


@contextmanager
def archive_errors(source: Path, what: str = "image archive") -> Iterator[None]:
    """Turn what a damaged archive raises while it is read (:data:`READ_ERRORS`) into one
    :class:`DataNotFoundError` line naming ``source``; our own data errors pass unchanged."""
    try:
        yield
    except DataNotFoundError:
        raise
    except READ_ERRORS as exc:
        raise DataNotFoundError(f"{source}: cannot read the {what} ({exc}); replace it with a good copy") from None


def _env_bytes(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    m = re.fullmatch(r"(\d+)\s*([KMG]?)i?B?", raw, flags=re.IGNORECASE)
    if m is None or int(m.group(1)) <= 0:
        raise ValueError(f"{name}={raw!r} is not a positive size in bytes (e.g. 268435456, 512M or 4G)")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def limits() -> tuple[int, int]:
    """The caps in force (bytes): (per member, per archive), from the environment or the defaults."""
    return (_env_bytes("MIRRORATTN_MAX_MEMBER_BYTES", MAX_MEMBER_BYTES),
            _env_bytes("MIRRORATTN_MAX_ARCHIVE_BYTES", MAX_ARCHIVE_BYTES))


def _too_big(where: str, what: str, cap: int, env: str) -> ArchiveLimitError:
    return ArchiveLimitError(
        f"{where}: {what} inflates past the cap of {cap:,} bytes (a decompression bomb or a damaged file); "
        f"replace the file with a good copy, or raise the cap with {env} if the data is really that large"
    )


def read_capped(fh: IO[bytes], cap: int, where: str, what: str = "the member") -> bytes:
    """Read ``fh`` to its end in chunks, raising :class:`ArchiveLimitError` once more than ``cap`` bytes come."""
    parts, total = [], 0
    while True:
        block = fh.read(min(_CHUNK, cap + 1 - total))
        if not block:
            return b"".join(parts)
        total += len(block)
        if total > cap:
            raise _too_big(where, what, cap, "MIRRORATTN_MAX_MEMBER_BYTES")
        parts.append(block)


class _CappedStream:
    """A read-only file object over ``inner`` that raises :class:`ArchiveLimitError` past ``cap`` bytes.

    It keeps the last :data:`_TAIL` bytes read, so that the end of a tar can be checked (:func:`_check_tar_end`).
    """

    def __init__(self, inner: IO[bytes], cap: int, where: str) -> None:
        self.inner, self.cap, self.where, self.count = inner, cap, where, 0
        self.tail = bytearray()

    def read(self, size: int = -1) -> bytes:
        block = self.inner.read(_CHUNK if size is None or size < 0 else size)
        self.count += len(block)
        if self.count > self.cap:
            raise _too_big(self.where, "the archive", self.cap, "MIRRORATTN_MAX_ARCHIVE_BYTES")
        self.tail += block
        del self.tail[:-_TAIL]
        return block


_TAIL = 64 << 10
_BLOCK = 512


def _check_tar_end(tf: tarfile.TarFile, stream: _CappedStream) -> None:
    """Raise ``tarfile.ReadError`` unless the tar ended with its end-of-archive marker (zero blocks).

    tarfile stops silently at a damaged header (a few zeroed or changed bytes) and at a cut between
    members; both would read part of the archive as if it were all of it.
    """
    start = stream.count - len(stream.tail)
    rest = bytes(stream.tail[max(tf.offset - start, 0):]) if tf.offset >= start else b""
    size, clean = len(rest), not rest.strip(b"\0")
    while clean:
        block = stream.read(_CHUNK)
        if not block:
            break
        size, clean = size + len(block), not block.strip(b"\0")
    if tf.offset < start or not clean or size < _BLOCK:
        problem = "is cut short (no end-of-archive marker)" if clean and size < _BLOCK else "has a damaged header"
        raise tarfile.ReadError(f"the tar archive {problem} at byte {tf.offset:,} of its content; "
                                "only part of it could be read")


def _decompressed(raw: IO[bytes]) -> IO[bytes]:
    """``raw`` itself or a streaming decompressor of it, chosen by its magic bytes (gzip, bzip2, xz)."""
    magic = raw.read(6)
    raw.seek(0)
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if magic[:3] == b"BZh":
        return bz2.BZ2File(raw, mode="rb")
    if magic == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(raw, mode="rb")
    return raw


@contextmanager
def _open_tar(path: str | os.PathLike) -> Iterator[tuple[tarfile.TarFile, _CappedStream]]:
    _, total_cap = limits()
    with open(path, "rb") as raw:
        stream = _CappedStream(_decompressed(raw), total_cap, str(path))
        with tarfile.open(fileobj=stream, mode="r|") as tf:  # type: ignore[call-overload]
            yield tf, stream


@contextmanager
def open_tar_stream(path: str | os.PathLike) -> Iterator[tarfile.TarFile]:
    """A tar archive (plain, .gz, .bz2 or .xz) opened for one sequential pass, its inflated stream capped.

    A truncated compressed stream raises ``EOFError`` when the pass reaches the cut.
    """
    with _open_tar(path) as (tf, _):
        yield tf


def iter_tar_files(path: str | os.PathLike, want: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    """Yield (member name, bytes) of the regular-file members of a tar whose name ``want`` accepts.

    Links, devices and folders are skipped; each member read is capped at the member cap. The
    archive must end with its end-of-archive marker (a cut or damaged tar is an error, not a part).
    Raises what :data:`READ_ERRORS` lists on a damaged archive, :class:`ArchiveLimitError` past a cap.
    """
    member_cap, _ = limits()
    with _open_tar(path) as (tf, stream):
        for m in tf:
            if not m.isfile() or not want(m.name):
                continue
            where = f"{path}, member {m.name}"
            if m.size > member_cap:
                raise _too_big(where, "the member", member_cap, "MIRRORATTN_MAX_MEMBER_BYTES")
            fh = tf.extractfile(m)
            yield m.name, (read_capped(fh, member_cap, where) if fh is not None else b"")
        _check_tar_end(tf, stream)


def _zip_is_file(info: zipfile.ZipInfo) -> bool:
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the writer stored no Unix file type
    return not info.is_dir() and kind in (0, stat.S_IFREG)  # symlinks etc. are skipped


def read_zip_files(path: str | os.PathLike, want: Callable[[str], bool]) -> dict[str, bytes]:
    """The regular-file members of a zip whose name ``want`` accepts, as {name: bytes}, capped.

    Raises what :data:`READ_ERRORS` lists on a damaged archive, :class:`ArchiveLimitError` past a cap.
    """
    member_cap, total_cap = limits()
    out: dict[str, bytes] = {}
    total = 0
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not _zip_is_file(info) or not want(info.filename):
                continue
            with zf.open(info) as fh:
                out[info.filename] = data = read_capped(fh, member_cap, f"{path}, member {info.filename}")
            total += len(data)
            if total > total_cap:
                raise _too_big(str(path), "the archive", total_cap, "MIRRORATTN_MAX_ARCHIVE_BYTES")
    return out


def read_maybe_gzip(path: str | os.PathLike) -> bytes:
    """The bytes of ``path``, inflated (capped at the member cap) if it is gzip (one or more members)."""
    path = Path(path)
    with open(path, "rb") as raw:
        if raw.read(2) != b"\x1f\x8b":
            raw.seek(0)
            return raw.read()
        raw.seek(0)
        member_cap, _ = limits()
        with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
            return read_capped(gz, member_cap, str(path), "the gzip content")


__all__ = [
    "MAX_ARCHIVE_BYTES",
    "MAX_MEMBER_BYTES",
    "READ_ERRORS",
    "ArchiveLimitError",
    "archive_errors",
    "iter_tar_files",
    "limits",
    "open_tar_stream",
    "read_capped",
    "read_maybe_gzip",
    "read_zip_files",
]
