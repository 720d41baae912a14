"""Download an archive over HTTP(S) with resume, progress bar and checksum verification.

``fetch(url, dest, md5=..., sha256=...)`` writes to ``dest + ".part"`` and resumes it with an
HTTP Range request if the file is already partly there (a server that ignores the range sends
the whole file, which then replaces the part); only after the checksum matches is the file
renamed to ``dest``. A checksum mismatch moves the download aside (``.corrupt``) and raises
:class:`DownloadError` saying what to do.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from mirrorattn.data.paths import DataNotFoundError

_CHUNK = 1 << 20


class DownloadError(DataNotFoundError):
    """A download failed or its checksum did not match."""


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _mismatch(path: str | os.PathLike, md5: str | None, sha256: str | None) -> str | None:
    """``None`` if ``path`` matches every checksum given, else what did not match."""
    for algo, want in (("md5", md5), ("sha256", sha256)):
        if want:
            got = file_digest(path, algo)
            if got.lower() != want.lower():
                return f"{algo} checksum mismatch: expected {want}, got {got}"
    return None


def verify(path: str | os.PathLike, md5: str | None = None, sha256: str | None = None) -> None:
    """Raise :class:`DownloadError` unless ``path`` matches every checksum given."""
    problem = _mismatch(path, md5, sha256)
    if problem:
        raise DownloadError(
            f"{path}: {problem}; the file is corrupt or a different version. Delete it and download again."
        )


def _unwritable(path: Path, exc: OSError, url: str) -> DownloadError:
    """The error of a download that cannot be written: the folder, the cause and what to do."""
    return DownloadError(
        f"cannot write {path} to download {url} ({exc.strerror or exc}): the folder {path.parent} is not writable "
        "(or full); choose a writable data root with --data-root or MIRRORATTN_DATA, or fix the folder's "
        "permissions or free space"
    )


def _copy_body(response: Any, part: Path, start: int, url: str, bar: Any) -> None:
    """Append (``start`` > 0) or write ``response``'s body to ``part``; local and network errors told apart."""
    try:
        fh = open(part, "ab" if start else "wb")
    except OSError as exc:
        raise _unwritable(part, exc, url) from None
    with fh:
        while True:
            try:
                block = response.read(_CHUNK)
            except (OSError, urllib.error.URLError, http.client.HTTPException) as exc:
                raise DownloadError(
                    f"download of {url} was interrupted ({exc}); run again to resume from {part}"
                ) from None
            if not block:
                return
            try:
                fh.write(block)
            except OSError as exc:
                raise _unwritable(part, exc, url) from None
            if bar is not None:
                bar.update(len(block))


def _move(src: Path, dst: Path, url: str) -> None:
    try:
        os.replace(src, dst)
    except OSError as exc:
        raise _unwritable(dst, exc, url) from None


def _receive(response: Any, part: Path, start: int, url: str, progress: bool) -> int | None:
    """Write ``response``'s body into ``part`` (after ``start`` bytes if it is a 206), with a progress bar if
    ``progress``; return the expected final size (None if the server did not say)."""
    with response:
        status = getattr(response, "status", 200)
        if not (start and status == 206):
            start = 0  # the server sent the whole file
        length = response.headers.get("Content-Length")
        expected = start + int(length) if length else None
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=expected, initial=start, unit="B", unit_scale=True, desc=part.name[:-5], leave=False)
        try:
            _copy_body(response, part, start, url, bar)
        finally:
            if bar is not None:
                bar.close()
    return expected


def fetch(
    url: str,
    dest: str | os.PathLike,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    resume: bool = True,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify checksums, return ``dest``.

    If ``dest`` already exists and matches, nothing is downloaded; if it exists but does not
    match, it is moved aside to ``dest.corrupt`` and downloaded again. Every failure (network,
    HTTP status, unwritable folder, checksum) raises :class:`DownloadError` with one message.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(
            f"cannot create {dest.parent} to download {url} into ({exc.strerror or exc}); choose a writable data "
            "root with --data-root or MIRRORATTN_DATA, or fix the permissions"
        ) from None
    bad = dest.with_name(dest.name + ".corrupt")
    if dest.exists():
        if _mismatch(dest, md5, sha256) is None:
            return dest
        _move(dest, bad, url)  # a damaged earlier copy: keep it for inspection, download afresh
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if (resume and part.exists()) else 0
    request = urllib.request.Request(url, headers={"User-Agent": "mirrorattn"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    response = None
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if not (exc.code == 416 and start):  # 416 with a part file: the part is already complete
            raise DownloadError(
                f"download of {url} failed: HTTP {exc.code} {exc.reason}; check the URL, or place the file at "
                f"{dest} by hand"
            ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"download of {url} failed ({reason}); check the network, or place the file at {dest} by hand"
        ) from None
    expected = _receive(response, part, start, url, progress) if response is not None else None
    if expected is not None and part.stat().st_size < expected:
        raise DownloadError(
            f"download of {url} stopped at {part.stat().st_size} of {expected} bytes; run again to resume from {part}"
        )
    problem = _mismatch(part, md5, sha256)
    if problem:
        _move(part, bad, url)
        raise DownloadError(
            f"{url}: the downloaded file does not match ({problem}); it was moved to {bad}. "
            "Run the download again; if it fails again the server holds a different file."
        )
    _move(part, dest, url)
    return dest


__all__ = ["DownloadError", "fetch", "file_digest", "verify"]
