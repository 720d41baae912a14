"""Runs trained in worker processes (``--workers N`` of the comparisons and the sweeps), one home for the pool.

Each worker is a spawned process (no state shared with the parent but the job's arguments); it prepares
an experiment's data once and keeps it for its later jobs (:func:`prepared_once`). Every job writes its
own run folder, so the results are those of the sequential order; the caller reads them back.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from mirrorattn.io import config_hash

__all__ = ["prepared_once", "run_in_processes", "worker_threads"]

_PREPARED: dict[str, Any] = {}


def prepared_once(key: dict[str, Any], prepare: Callable[[], Any]) -> Any:
    """``prepare()`` the first time this process sees ``key`` (e.g. the command and the data identity), then
    the same object again."""
    digest = config_hash(key)
    if digest not in _PREPARED:
        _PREPARED[digest] = prepare()
    return _PREPARED[digest]


def worker_threads(workers: int) -> int:
    """torch threads per worker: this process's thread count (``--threads``), at most cpu_count / workers."""
    return max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) // workers))


def run_in_processes(job: Callable[..., Any], args: list[tuple[Any, ...]], workers: int,
                     done: Callable[[tuple[Any, ...], Any], None] | None = None) -> list[Any]:
    """``job(*a)`` for every ``a`` in ``args``, ``workers`` at a time in spawned processes (``job`` must be a
    module-level function); ``done(a, result)`` as each finishes. Returns the results in the order of
    ``args``; a job's exception is raised here (after the pool has stopped)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    results: list[Any] = [None] * len(args)
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(job, *a): i for i, a in enumerate(args)}
        for fut in as_completed(futures):
            i = futures[fut]
            results[i] = fut.result()
            if done is not None:
                done(args[i], results[i])
    return results
