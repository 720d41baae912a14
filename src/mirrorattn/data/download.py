"""Download an archive over HTTP(S) with resume, progress bar and checksum verification.

``fetch(url, dest, md5=..., sha256=...)`` writes to ``dest + ".part"`` and resumes it with an
HTTP Range request if the file is already partly there; only after the checksum matches is the
file renamed to ``dest``. A checksum mismatch moves the download aside (``.corrupt``) and raises
:class:`DownloadError` saying what to do.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

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


def verify(path: str | os.PathLike, md5: str | None = None, sha256: str | None = None) -> None:
    """Raise :class:`DownloadError` unless ``path`` matches every checksum given."""
    for algo, want in (("md5", md5), ("sha256", sha256)):
        if want:
            got = file_digest(path, algo)
            if got.lower() != want.lower():
                raise DownloadError(
                    f"{path}: {algo} checksum mismatch (expected {want}, got {got}); the file is "
                    "corrupt or a different version. Delete it and download again."
                )


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

    If ``dest`` already exists and matches, nothing is downloaded.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        verify(dest, md5, sha256)
        return dest
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if (resume and part.exists()) else 0
    request = urllib.request.Request(url, headers={"User-Agent": "mirrorattn"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # the part file is already complete
            response = None
        else:
            raise DownloadError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(
            f"download of {url} failed ({exc}); check the network, or place the file at {dest} by hand"
        ) from None
    if response is not None:
        with response:
            status = getattr(response, "status", 200)
            mode = "ab" if (start and status == 206) else "wb"
            if mode == "wb":
                start = 0
            length = response.headers.get("Content-Length")
            total = start + int(length) if length else None
            bar = None
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=dest.name, leave=False)
            try:
                with open(part, mode) as fh:
                    for block in iter(lambda: response.read(_CHUNK), b""):
                        fh.write(block)
                        if bar is not None:
                            bar.update(len(block))
            except (OSError, urllib.error.URLError) as exc:
                raise DownloadError(
                    f"download of {url} was interrupted ({exc}); run again to resume from {part}"
                ) from None
            finally:
                if bar is not None:
                    bar.close()
    if total_known := (response is not None and response.headers.get("Content-Length")):
        expected = start + int(total_known)
        if part.stat().st_size < expected:
            raise DownloadError(
                f"download of {url} stopped at {part.stat().st_size} of {expected} bytes; run again to resume"
            )
    try:
        verify(part, md5, sha256)
    except DownloadError:
        bad = dest.with_name(dest.name + ".corrupt")
        os.replace(part, bad)
        raise DownloadError(
            f"{url}: the downloaded file does not match its checksum; it was moved to {bad}. "
            "Run the download again; if it fails again the server holds a different file."
        ) from None
    os.replace(part, dest)
    return dest


__all__ = ["DownloadError", "fetch", "file_digest", "verify"]
