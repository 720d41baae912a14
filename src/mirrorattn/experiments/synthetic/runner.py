"""Resumable pieces of an experiment, run in this process or in worker processes.

An experiment splits into independent *pieces* (e.g. one per p). A piece is a module-level
function ``fn(**kwargs) -> (arrays, meta)`` (arrays: name -> ndarray; meta: JSON-friendly dict).
Its result is saved in ``<run folder>/pieces/<key>-<config hash>.npz`` and ``.json`` (the JSON is
written last, atomically, and marks the piece finished). Running the same config again loads
finished pieces instead of recomputing them, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from mirrorattn.checks import check_int
from mirrorattn.io import read_json, write_json, write_npz

__all__ = ["Piece", "PieceResult", "load_piece", "mp_context", "run_per_p", "run_pieces"]


def mp_context() -> multiprocessing.context.BaseContext:
    """How worker processes start: ``fork`` on Linux, ``spawn`` elsewhere.

    A forked worker shares the parent's imported modules (numpy, torch, cvxpy, matplotlib: ~5 s of
    CPU to import again in every spawned worker, as much as a whole quick-preset experiment). The
    parent only orchestrates (it runs no torch or BLAS thread pools before forking), so fork is safe.
    """
    import sys

    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def preload() -> None:
    """Import what the pieces use, once, in the parent (forked workers then inherit it)."""
    import torch._dynamo  # noqa: F401  (imported by torch.optim at an optimizer's first step: ~1 s of CPU)

    import mirrorattn.experiments.synthetic.figures  # noqa: F401  (matplotlib)
    import mirrorattn.optim  # noqa: F401  (run_md's LpMirrorDescent)
    import mirrorattn.svm  # noqa: F401  (cvxpy)
    import mirrorattn.tokens  # noqa: F401


@dataclass
class Piece:
    """One independent unit of work: ``fn(**kwargs)`` returns (arrays, meta)."""

    key: str
    fn: Callable[..., tuple[dict[str, np.ndarray], dict[str, Any]]]
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class PieceResult:
    """A finished piece: its arrays, its meta (with ``computed_at``, ``seconds``) and whether reused."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    reused: bool


def _paths(folder: Path, key: str, chash: str) -> tuple[Path, Path]:
    base = Path(folder) / "pieces"
    return base / f"{key}-{chash}.npz", base / f"{key}-{chash}.json"  # keys may hold dots (p = 1.75)


def load_piece(folder: str | Path, key: str, chash: str) -> PieceResult | None:
    """The saved result of piece ``key`` for config hash ``chash``, or None if not finished."""
    npz, js = _paths(Path(folder), key, chash)
    if not (npz.is_file() and js.is_file()):
        return None
    meta = read_json(js)
    if meta.get("config_hash") != chash:
        return None
    with np.load(npz, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    return PieceResult(arrays=arrays, meta=meta, reused=True)


def _execute(fn: Callable, kwargs: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any], float]:
    t0 = time.perf_counter()
    arrays, meta = fn(**kwargs)
    return arrays, meta, time.perf_counter() - t0


def _save(folder: Path, piece: Piece, chash: str, arrays: dict, meta: dict, seconds: float) -> PieceResult:
    npz, js = _paths(folder, piece.key, chash)
    write_npz(npz, **arrays)
    meta = dict(meta, config_hash=chash, key=piece.key, seconds=seconds, computed_at=time.time())
    write_json(js, meta)
    return PieceResult(arrays={k: np.asarray(v) for k, v in arrays.items()}, meta=meta, reused=False)


def run_pieces(
    folder: str | Path,
    pieces: list[Piece],
    chash: str,
    workers: int = 1,
    log: Callable[[str], None] | None = None,
) -> dict[str, PieceResult]:
    """Run (or reload) every piece; ``workers`` > 1 runs the missing ones in worker processes."""
    check_int(workers, "--workers")
    folder = Path(folder)
    out: dict[str, PieceResult] = {}
    todo: list[Piece] = []
    for piece in pieces:
        done = load_piece(folder, piece.key, chash)
        if done is not None:
            out[piece.key] = done
            if log:
                log(f"reusing finished piece {piece.key}")
        else:
            todo.append(piece)
    if workers == 1 or len(todo) <= 1:
        for piece in todo:
            arrays, meta, secs = _execute(piece.fn, piece.kwargs)
            out[piece.key] = _save(folder, piece, chash, arrays, meta, secs)
    else:
        preload()
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=mp_context()) as pool:
            futures = {pool.submit(_execute, piece.fn, piece.kwargs): piece for piece in todo}
            for fut in as_completed(futures):  # save each piece as soon as it is done
                piece = futures[fut]
                arrays, meta, secs = fut.result()
                out[piece.key] = _save(folder, piece, chash, arrays, meta, secs)
    return {p.key: out[p.key] for p in pieces}


def run_per_p(
    folder: str | Path,
    chash: str,
    prefix: str,
    fn: Callable[..., tuple[dict[str, np.ndarray], dict[str, Any]]],
    ps: Sequence[float],
    workers: int = 1,
    log: Callable[[str], None] | None = None,
    per_p: dict[str, Sequence[Any]] | None = None,
    position0: int = 0,
    **kwargs: Any,
) -> dict[str, PieceResult]:
    """One piece ``<prefix>_p<p>`` per p: ``fn(p=p, position=position0 + k, **kwargs, **{name: values[k]})``.

    ``per_p`` maps an argument name to one value per p (e.g. the iteration counts). Returns the
    results keyed by the p tag (``"1.75"``, ``"2"``, ...).
    """
    from mirrorattn.experiments.synthetic.common import tag

    per_p = per_p or {}
    pieces = [Piece(f"{prefix}_p{tag(p)}", fn,
                    dict(kwargs, p=p, position=position0 + k, **{n: v[k] for n, v in per_p.items()}))
              for k, p in enumerate(ps)]
    res = run_pieces(folder, pieces, chash, workers, log)
    return {tag(p): res[piece.key] for p, piece in zip(ps, pieces)}
