"""Results on disk: atomic writes of JSON, NPZ and torch checkpoints, and run folders.

Every writer puts the data in a temporary file in the destination folder, flushes it to disk
and renames it over the target, so that an interrupted run never leaves a half-written file; the
file gets the mode a plain ``open()`` would give it (0o666 minus the umask). :func:`read_json`
names the file when it is not JSON (:class:`CorruptFileError`). :func:`lock_folder` keeps a
second process out of a run folder that one is working in (``fcntl.flock`` on ``FOLDER/.lock``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np


class CorruptFileError(json.JSONDecodeError):
    """A file that should hold JSON (or another record of ours) cannot be read; the message names it.

    A ``ValueError``; also a ``json.JSONDecodeError``, so that callers catching that keep working.
    """

    def __init__(self, path: str | os.PathLike, why: str) -> None:
        ValueError.__init__(self, f"{path} is damaged or not what it should be ({why}); delete it or restore it")
        self.path = Path(path)
        self.why = why
        self.msg, self.doc, self.pos, self.lineno, self.colno = why, "", 0, 1, 1

    def __reduce__(self) -> tuple[Any, ...]:  # picklable (handed between processes) despite the two arguments
        return type(self), (self.path, self.why)


class FolderInUseError(ValueError):
    """Another process holds the lock of a run folder (:func:`lock_folder`)."""


def current_umask() -> int:
    """The process's umask, read from ``/proc/self/status`` where it is there (thread-safe), else set and restored."""
    try:
        match = re.search(r"^Umask:\s*([0-7]+)", Path("/proc/self/status").read_text(), re.MULTILINE)
        if match:
            return int(match.group(1), 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # racy with other threads creating files at this moment; only off Linux
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The file gets the mode ``open()`` would give a new file (0o666 & ~umask), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    except OSError:  # a file system without modes (some network or FUSE mounts): keep mkstemp's
        pass
    finally:
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def to_jsonable(obj: Any) -> Any:
    """Convert dataclasses, paths, NumPy and torch scalars/arrays to JSON-friendly values.

    Non-finite floats (NaN, inf) become ``None`` so that the output is strict JSON.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    try:  # torch tensors without importing torch at module import time
        import torch

        if isinstance(obj, torch.Tensor):
            return to_jsonable(obj.detach().cpu().numpy())
    except ImportError:  # pragma: no cover
        pass
    return obj


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically: readers see the old file or the whole new one, never a part."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented, strict JSON (NaN/inf become null), atomically."""
    return write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike, expect: type | None = None) -> Any:
    """Read a JSON file written by :func:`write_json`.

    Raises :class:`CorruptFileError` (a ``ValueError`` naming the file) when it is not UTF-8 JSON, or
    when ``expect`` (e.g. ``dict``) is given and the value is of another type; ``OSError`` when it
    cannot be read at all (missing: ``FileNotFoundError``).
    """
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptFileError(path, f"not JSON: {exc}") from None
    if expect is not None and not isinstance(value, expect):
        raise CorruptFileError(path, f"holds a JSON {_json_kind(value)}, expected a JSON {_json_kind(expect())}")
    return value


def _json_kind(value: Any) -> str:
    """The JSON name of a value's type: object, array, string, number, boolean or null."""
    kinds = ((bool, "boolean"), (dict, "object"), (list, "array"), (str, "string"), ((int, float), "number"))
    return next((name for types, name in kinds if isinstance(value, types)), "null")


def write_npz(path: str | os.PathLike, **arrays: Any) -> Path:
    """Save arrays to a compressed NPZ file, atomically."""
    path = Path(path)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **{k: np.asarray(v) for k, v in arrays.items()})
    return path


def torch_save(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` to ``path`` atomically (a checkpoint is either old or new, never torn)."""
    import torch

    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path


def config_hash(config: Any, length: int = 12) -> str:
    """A stable short hash of a config (dataclass or dict), used to reuse finished runs."""
    text = json.dumps(to_jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


#: the lock file :func:`lock_folder` keeps in a run folder
LOCK_NAME = ".lock"


def _in_use(folder: Path, pid: str) -> FolderInUseError:
    return FolderInUseError(f"run folder {folder} is in use by another process (pid {pid}); "
                            "wait for it to finish or use another --out")


def _lock_pid(fd: int) -> str:
    """The pid written in a lock file by its holder ("unknown" if none yet)."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return text if text.isdigit() else "unknown"


@contextmanager
def lock_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if missing) for the block, or raise :class:`FolderInUseError`.

    ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``folder/.lock``, which then holds this process's pid (for the
    other process's message); the lock ends with the block or the process (a killed run leaves no stale
    lock). Without ``fcntl`` (Windows) the folder is not locked.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield folder
        return
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _in_use(folder, _lock_pid(fd)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield folder
    finally:
        os.close(fd)  # releases the lock


def folder_lock_holder(folder: str | os.PathLike) -> str | None:
    """The pid (a string, or "unknown") of the process holding ``folder``'s lock, or None if it is free.

    Creates nothing; a lock held by this very process through another :func:`lock_folder` counts as held.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    try:
        fd = os.open(Path(folder) / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _lock_pid(fd)
    finally:
        os.close(fd)
    return None


def ensure_unlocked(folder: str | os.PathLike) -> None:
    """Raise :class:`FolderInUseError` (one line) if another :func:`lock_folder` holds ``folder`` now."""
    pid = folder_lock_holder(folder)
    if pid is not None:
        raise _in_use(Path(folder), pid)


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


__all__ = [
    "LOCK_NAME",
    "CorruptFileError",
    "FolderInUseError",
    "atomic_path",
    "config_hash",
    "current_umask",
    "ensure_unlocked",
    "folder_lock_holder",
    "lock_folder",
    "read_json",
    "save_figure",
    "to_jsonable",
    "torch_save",
    "write_json",
    "write_npz",
    "write_text",
]
