"""mirrorattn.data.download and the IMDb download path, against a local HTTP server with Range support.

The server (127.0.0.1, an ephemeral port, in a thread) serves a copy of the shared labelled IMDb
archive; its SHA-256 comes from ../shared/data/SHA256SUMS (the published MD5 is for the official
archive, which the shared copy is not).
"""

from __future__ import annotations

import builtins
import errno
import gzip
import hashlib
import io
import os
import re
import socket
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mirrorattn.data import download
from mirrorattn.data.download import DownloadError, fetch, file_digest, verify
from mirrorattn.data.paths import DataNotFoundError
from mirrorattn.data.text import load_text_dataset
from mirrorattn.data.text_sources import download_imdb

ARCHIVE = "imdb/aclImdb_v1_labeled.tar.gz"


class _Server:
    """Serves ``files`` (URL path -> bytes); records (path, Range header, status) of every request."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[tuple[str, str | None, int]] = []
        self.ignore_range = False
        self.cut_after: int | None = None  # close the connection after this many body bytes
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                rng = self.headers.get("Range")
                data = outer.files.get(self.path)
                if data is None:
                    outer.requests.append((self.path, rng, 404))
                    self.send_error(404, "Not Found")
                    return
                start = 0
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m and not outer.ignore_range:
                    start = int(m.group(1))
                    if start >= len(data):
                        outer.requests.append((self.path, rng, 416))
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                status = 206 if start else 200
                outer.requests.append((self.path, rng, status))
                body = data[start:]
                self.send_response(status)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if outer.cut_after is not None:
                    body = body[: outer.cut_after]
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def archive(shared_data: Path) -> tuple[bytes, str]:
    """The shared labelled IMDb archive's bytes and its SHA-256 as listed in SHA256SUMS."""
    sums = dict(
        reversed(line.split(maxsplit=1)) for line in (shared_data / "SHA256SUMS").read_text().splitlines() if line
    )
    data = (shared_data / ARCHIVE).read_bytes()
    return data, sums[ARCHIVE]


@pytest.fixture()
def server(archive: tuple[bytes, str]):
    srv = _Server({"/aclImdb_v1.tar.gz": archive[0]})
    yield srv
    srv.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_full_download_verifies(server: _Server, archive: tuple[bytes, str], tmp_path: Path) -> None:
    data, sha = archive
    assert hashlib.sha256(data).hexdigest() == sha  # the shared copy itself is intact
    md5 = hashlib.md5(data).hexdigest()
    dest = fetch(f"{server.url}/aclImdb_v1.tar.gz", tmp_path / "sub" / "a.tar.gz", sha256=sha, md5=md5)
    assert dest == tmp_path / "sub" / "a.tar.gz" and dest.read_bytes() == data
    assert not (tmp_path / "sub" / "a.tar.gz.part").exists()
    assert server.requests == [("/aclImdb_v1.tar.gz", None, 200)]
    assert file_digest(dest) == sha and file_digest(dest, "md5") == md5
    verify(dest, md5=md5, sha256=sha)
    # already there and valid: no second request
    fetch(f"{server.url}/aclImdb_v1.tar.gz", dest, sha256=sha)
    assert len(server.requests) == 1


def test_resume_from_truncated_part(server: _Server, archive: tuple[bytes, str], tmp_path: Path) -> None:
    data, sha = archive
    dest = tmp_path / "a.tar.gz"
    cut = 10_000_003
    (tmp_path / "a.tar.gz.part").write_bytes(data[:cut])
    fetch(f"{server.url}/aclImdb_v1.tar.gz", dest, sha256=sha, progress=True)
    assert server.requests == [("/aclImdb_v1.tar.gz", f"bytes={cut}-", 206)]
    assert dest.read_bytes() == data and file_digest(dest) == sha


def test_resume_when_server_ignores_range(server: _Server, archive: tuple[bytes, str], tmp_path: Path) -> None:
    data, sha = archive
    server.ignore_range = True
    (tmp_path / "a.tar.gz.part").write_bytes(data[:5000])
    dest = fetch(f"{server.url}/aclImdb_v1.tar.gz", tmp_path / "a.tar.gz", sha256=sha, progress=False)
    assert server.requests[0][2] == 200 and dest.read_bytes() == data


def test_interrupted_download_then_resume(server: _Server, archive: tuple[bytes, str], tmp_path: Path) -> None:
    data, sha = archive
    dest = tmp_path / "a.tar.gz"
    server.cut_after = 3_000_000
    with pytest.raises(DownloadError) as err:
        fetch(f"{server.url}/aclImdb_v1.tar.gz", dest, sha256=sha, progress=False)
    msg = str(err.value)
    assert "run again to resume" in msg and str(dest) + ".part" in msg
    part = tmp_path / "a.tar.gz.part"
    assert part.stat().st_size == 3_000_000 and not dest.exists()
    server.cut_after = None
    fetch(f"{server.url}/aclImdb_v1.tar.gz", dest, sha256=sha, progress=False)
    assert server.requests[-1] == ("/aclImdb_v1.tar.gz", "bytes=3000000-", 206)
    assert dest.read_bytes() == data


def test_corrupted_part_is_moved_aside(server: _Server, archive: tuple[bytes, str], tmp_path: Path) -> None:
    data, sha = archive
    dest = tmp_path / "a.tar.gz"
    broken = bytearray(data[:2_000_000])
    for i in (10, 1000, 1_500_000):
        broken[i] ^= 0xFF
    (tmp_path / "a.tar.gz.part").write_bytes(bytes(broken))
    with pytest.raises(DownloadError) as err:
        fetch(f"{server.url}/aclImdb_v1.tar.gz", dest, sha256=sha, progress=False)
    msg = str(err.value)
    corrupt = tmp_path / "a.tar.gz.corrupt"
    assert "does not match" in msg and "sha256" in msg and sha in msg and str(corrupt) in msg
    assert corrupt.stat().st_size == len(data) and not dest.exists() and not (tmp_path / "a.tar.gz.part").exists()
    # running again downloads a fresh copy
    fetch(f"{server.url}/aclImdb_v1.tar.gz", dest, sha256=sha, progress=False)
    assert dest.read_bytes() == data


def test_complete_part_and_corrupt_dest(server: _Server, archive: tuple[bytes, str], tmp_path: Path) -> None:
    data, sha = archive
    dest = tmp_path / "a.tar.gz"
    (tmp_path / "a.tar.gz.part").write_bytes(data)  # fully downloaded, never renamed
    fetch(f"{server.url}/aclImdb_v1.tar.gz", dest, sha256=sha, progress=False)
    assert server.requests == [("/aclImdb_v1.tar.gz", f"bytes={len(data)}-", 416)]
    assert dest.read_bytes() == data
    # a damaged file already at dest is moved aside and downloaded again
    dest.write_bytes(data[:1000])
    fetch(f"{server.url}/aclImdb_v1.tar.gz", dest, sha256=sha, progress=False)
    assert dest.read_bytes() == data and (tmp_path / "a.tar.gz.corrupt").stat().st_size == 1000
    with pytest.raises(DownloadError, match="sha256 checksum mismatch"):
        verify(tmp_path / "a.tar.gz.corrupt", sha256=sha)


def test_http_404(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError) as err:
        fetch(f"{server.url}/missing.tar.gz", tmp_path / "x.tar.gz", progress=False)
    assert "HTTP 404" in str(err.value) and f"{server.url}/missing.tar.gz" in str(err.value)
    assert not list(tmp_path.iterdir())


def test_connection_refused(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}/a.tar.gz"
    with pytest.raises(DownloadError) as err:
        fetch(url, tmp_path / "a.tar.gz", progress=False, timeout=5)
    msg = str(err.value)
    assert url in msg and "refused" in msg.lower() and "place the file at" in msg
    assert isinstance(err.value, DataNotFoundError)  # the CLI prints it as one line


def test_unwritable_destination(server: _Server, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DownloadError, match="cannot create .* writable data root"):
        fetch(f"{server.url}/aclImdb_v1.tar.gz", blocker / "a.tar.gz", progress=False)


def test_download_imdb_shared_archive(server: _Server, archive: tuple[bytes, str], tmp_path: Path) -> None:
    data, sha = archive
    path = download_imdb(tmp_path, url=f"{server.url}/aclImdb_v1.tar.gz", md5=None, sha256=sha, progress=False)
    assert path == tmp_path / "aclImdb_v1.tar.gz" and path.read_bytes() == data


def _tiny_imdb() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for split in ("train", "test"):
            for pol in ("neg", "pos"):
                for i in range(5):
                    body = f"{split} {pol} review {i}".encode()
                    info = tarfile.TarInfo(f"aclImdb/{split}/{pol}/{i}_{9 if pol == 'pos' else 1}.txt")
                    info.size = len(body)
                    tf.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def test_load_imdb_with_download(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = _tiny_imdb()
    srv = _Server({"/imdb.tgz": tiny})
    try:
        root = tmp_path / "root"
        monkeypatch.setenv("MIRRORATTN_IMDB_URL", f"{srv.url}/imdb.tgz")
        monkeypatch.setenv("MIRRORATTN_IMDB_MD5", hashlib.md5(tiny).hexdigest())
        with pytest.raises(DataNotFoundError, match="--download"):
            load_text_dataset("imdb", data_root=root)
        assert srv.requests == []  # no download unless asked
        ds = load_text_dataset("imdb", data_root=root, download=True, val_fraction=0.2)
        assert (root / "aclImdb_v1.tar.gz").read_bytes() == tiny and ds.source == str(root / "aclImdb_v1.tar.gz")
        assert len(ds.test) == 10 and len(ds.train) == 8 and len(ds.val) == 2
        assert all(t.startswith("test pos" if y else "test neg") for t, y in zip(ds.test.texts, ds.test.labels))
        load_text_dataset("imdb", data_root=root, download=True)  # present: nothing fetched again
        assert len(srv.requests) == 1
        # the official checksum guards the default download: a different file is refused
        monkeypatch.delenv("MIRRORATTN_IMDB_MD5")
        with pytest.raises(DownloadError, match="md5 checksum mismatch"):
            load_text_dataset("imdb", data_root=tmp_path / "other", download=True)
    finally:
        srv.close()


# --------------------------------------------------------------------------- unwritable folders, progress flag


@pytest.mark.parametrize("where", ["open", "write"])
@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.ENOSPC])
def test_unwritable_folder_is_named_not_called_an_interruption(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, code: int
) -> None:
    """A read-only file system, a folder without permission (we may run as root, so both are faked) or a full
    disk: the message names the folder and the way out, and does not ask to "run again to resume"."""
    real_open = builtins.open

    class _Failing(io.BytesIO):
        def write(self, data) -> int:  # noqa: ANN001
            raise OSError(code, os.strerror(code))

    def fake_open(file, mode="r", *args, **kwargs):  # noqa: ANN001
        if "b" in mode and ("a" in mode or "w" in mode):
            if where == "open":
                raise OSError(code, os.strerror(code), str(file))
            return _Failing()
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(download, "open", fake_open, raising=False)
    dest = tmp_path / "ro" / "a.tar.gz"
    with pytest.raises(DownloadError) as err:
        fetch(f"{server.url}/aclImdb_v1.tar.gz", dest, progress=False)
    msg = str(err.value)
    assert "interrupted" not in msg and "resume" not in msg and "\n" not in msg
    assert f"the folder {dest.parent} is not writable" in msg and "--data-root" in msg and "MIRRORATTN_DATA" in msg
    assert os.strerror(code) in msg


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_for_real(server: _Server, tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(DownloadError, match=f"the folder {folder} is not writable"):
            fetch(f"{server.url}/aclImdb_v1.tar.gz", folder / "a.tar.gz", progress=False)
    finally:
        folder.chmod(0o755)


class _Bars:
    """Stands in for tqdm and counts the bars made."""

    made = 0

    def __init__(self, *args, **kwargs) -> None:
        type(self).made += 1

    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def test_progress_flag_reaches_every_download(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tqdm.auto

    from mirrorattn.data import vision, vision_sources
    from mirrorattn.data.vision import load_vision_dataset

    monkeypatch.setattr(tqdm.auto, "tqdm", _Bars)
    tiny = _tiny_imdb()
    labels = gzip.compress(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + bytes(range(10)))  # IDX: 10 labels
    images = gzip.compress(bytes([0, 0, 8, 3]) + b"".join(s.to_bytes(4, "big") for s in (10, 2, 2)) + bytes(40))
    idx = {f"/{split}-{kind}": data for split in ("train", "t10k")
           for kind, data in (("labels-idx1-ubyte.gz", labels), ("images-idx3-ubyte.gz", images))}
    srv = _Server({"/imdb.tgz": tiny, **idx})
    try:
        monkeypatch.setenv("MIRRORATTN_IMDB_URL", f"{srv.url}/imdb.tgz")
        monkeypatch.setenv("MIRRORATTN_IMDB_MD5", "")
        monkeypatch.setattr(vision_sources, "FASHION_MNIST_FILES", {n[1:]: None for n in idx})
        monkeypatch.setattr(vision, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "nowhere")
        load_text_dataset("imdb", data_root=tmp_path / "t1", download=True, progress=False)
        load_vision_dataset("fashion-mnist", data_root=tmp_path / "v1", download=True, url=srv.url, progress=False,
                            val_fraction=0.0)
        assert _Bars.made == 0
        load_text_dataset("imdb", data_root=tmp_path / "t2", download=True)  # the default shows a bar
        load_vision_dataset("fashion-mnist", data_root=tmp_path / "v2", download=True, url=srv.url, val_fraction=0.0)
        assert _Bars.made == 5
    finally:
        srv.close()
