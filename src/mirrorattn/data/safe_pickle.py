"""A restricted unpickler for data files in the pickle format (the CIFAR-10 Python batches).

:func:`load_plain` admits only what those files hold: dicts, lists, tuples, bytes, str, int,
float, bool, None and NumPy arrays rebuilt from raw bytes. The only globals a pickle may name are
the few NumPy needs to rebuild a plain ndarray (``_reconstruct``, ``ndarray``, ``dtype``,
``_frombuffer``) and ``_codecs.encode`` restricted to Latin-1 (how Python 3 pickles bytes at
protocol 2). Any other global - the way a crafted pickle runs code - is refused before anything
is called, and the arrays must have a plain numeric dtype (never ``object``).
"""

from __future__ import annotations

import io
import pickle
from typing import Any, Callable

import numpy as np

from mirrorattn.data.paths import DataNotFoundError


class UnsafePickleError(DataNotFoundError):
    """A pickle names a global outside the allow-list, or holds something other than plain data."""


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if not isinstance(text, str) or encoding.lower().replace("-", "") != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode is admitted for Latin-1 text only, not {encoding!r}")
    return text.encode("latin-1")


def _allowed_globals() -> dict[tuple[str, str], Callable[..., Any]]:
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - NumPy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for package in ("numpy.core", "numpy._core"):  # pickles written by NumPy 1 and by NumPy 2
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _Refused(pickle.UnpicklingError):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualname = f"{module}.{name}"


class _PlainUnpickler(pickle.Unpickler):
    _allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _Refused(module, name) from None


_PLAIN_KINDS = "biuf"  # bool, signed and unsigned integers, floats


def _check_plain(obj: Any, where: str, max_bytes: int, depth: int = 0) -> None:
    """Raise :class:`UnsafePickleError` unless ``obj`` is plain data: containers at most 8 deep, numeric
    arrays of at most ``max_bytes`` bytes each (an array rebuilt from the pickle's bytes is never larger)."""
    if depth > 8:
        raise UnsafePickleError(f"{where}: the pickle nests containers more than 8 deep; not a data file")
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in _PLAIN_KINDS or obj.dtype.hasobject or type(obj) is not np.ndarray:
            raise UnsafePickleError(f"{where}: the pickle holds an array of dtype {obj.dtype}; only numeric arrays "
                                    "are read")
        if obj.nbytes > max_bytes:
            raise UnsafePickleError(f"{where}: the pickle builds an array of {obj.nbytes:,} bytes from "
                                    f"{max_bytes:,} bytes of data; not a data file")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, where, max_bytes, depth + 1)
            _check_plain(v, where, max_bytes, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _check_plain(v, where, max_bytes, depth + 1)
    elif not (obj is None or type(obj) in (bytes, str, int, float, bool)):
        raise UnsafePickleError(f"{where}: the pickle holds a {type(obj).__name__}; only plain data is read")


def load_plain(raw: bytes, where: str, encoding: str = "bytes") -> Any:
    """Unpickle ``raw`` admitting plain data only (see the module docstring); ``where`` names it in errors.

    ``encoding="bytes"`` keeps Python 2 ``str`` objects as ``bytes`` (as the official CIFAR-10
    batches need). Raises :class:`UnsafePickleError` on a refused global or content, and
    :class:`DataNotFoundError` on a pickle that cannot be read.
    """
    try:
        obj = _PlainUnpickler(io.BytesIO(raw), encoding=encoding).load()
    except _Refused as exc:
        raise UnsafePickleError(
            f"{where}: refused to unpickle the global {exc.qualname} (only plain data and NumPy arrays are read; "
            "this is not an official file and may be crafted to run code); delete it and download it again"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise DataNotFoundError(f"{where}: not a readable pickle ({type(exc).__name__}: {exc}); "
                                "delete it and download it again") from None
    _check_plain(obj, where, len(raw))
    return obj


__all__ = ["UnsafePickleError", "load_plain"]
