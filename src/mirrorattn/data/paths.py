"""Where data sets are read from and where derived files are cached.

The data root comes from ``--data-root`` or the ``MIRRORATTN_DATA`` environment variable
(default ``~/.local/share/mirrorattn/data``); archives there are only read, never written
beside, unless a download was asked for. Extracted and decoded files go to the cache folder:
``--cache-dir``, ``MIRRORATTN_CACHE``, or ``$XDG_CACHE_HOME/mirrorattn`` (``~/.cache/mirrorattn``).
"""

from __future__ import annotations

import os
from pathlib import Path


class DataNotFoundError(FileNotFoundError):
    """A data set is missing or corrupt. The message says where we looked and how to get it."""


class DataError(ValueError):
    """Data that cannot be used as asked: a malformed user file, a bad label, a split that comes out empty.

    The message names the file (or the split) and says what to change.
    """


def data_root(path: str | os.PathLike | None = None) -> Path:
    """The data root: ``path`` if given, else ``$MIRRORATTN_DATA``, else the user data folder."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("MIRRORATTN_DATA")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "mirrorattn" / "data"


def cache_dir(path: str | os.PathLike | None = None, *parts: str) -> Path:
    """The cache folder (created): ``path``, ``$MIRRORATTN_CACHE`` or ``~/.cache/mirrorattn``."""
    if path is not None:
        base = Path(path).expanduser()
    elif os.environ.get("MIRRORATTN_CACHE"):
        base = Path(os.environ["MIRRORATTN_CACHE"]).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = Path(xdg) / "mirrorattn"
    out = base.joinpath(*parts)
    out.mkdir(parents=True, exist_ok=True)
    return out


__all__ = ["DataError", "DataNotFoundError", "cache_dir", "data_root"]
