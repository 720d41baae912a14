"""The optimizer comparison shared by the text and vision experiments: one runner, the differences as data.

:func:`run_comparison` trains every (optimizer, seed) pair of a config in its own run folder
``OUT/runs/<optimizer>-seed<k>/`` (:func:`~mirrorattn.experiments.classification.run_one`: reused when
finished with the same config hash, resumed when interrupted), in one order - seed-major, so an
interrupted comparison holds the first seeds of every optimizer - optionally ``workers`` at a time in
spawned processes (:mod:`mirrorattn.experiments.parallel`), with the experiment's divergence policy
(:data:`~mirrorattn.experiments.classification.DIVERGED_POLICIES`), and writes ``results.json``, the
table and figures (:func:`~mirrorattn.experiments.classification.write_results`). An experiment takes
part through a :class:`Comparison`: how it prepares its data, builds a run's spec, writes its report,
and what it does with a diverged run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mirrorattn.checks import check_int
from mirrorattn.experiments.classification import ClassificationConfig, preflight, run_name, run_one, write_results
from mirrorattn.experiments.parallel import prepared_once, run_in_processes, worker_threads
from mirrorattn.train.distributed import init_distributed

__all__ = ["Comparison", "comparison_jobs", "run_comparison", "run_line"]


@dataclass(frozen=True)
class Comparison:
    """One experiment's part in :func:`run_comparison` (module-level functions: worker processes take it).

    ``prepare(config, progress=)``: the experiment's data (an object with ``data`` and ``summary``);
    ``make_spec(config, prepared, optimizer, seed, out_dir, *, on_diverged)``: a run's
    :class:`~mirrorattn.experiments.classification.RunSpec`; ``write_report(out, config, results)``: the
    table and figures; ``on_diverged``: the comparison's divergence policy; ``command``: the subcommand.
    """

    command: str
    prepare: Callable[..., Any]
    make_spec: Callable[..., Any]
    write_report: Callable[[Path, Any, dict[str, Any]], None]
    on_diverged: str


def comparison_jobs(config: ClassificationConfig) -> list[tuple[str, int]]:
    """The (optimizer, seed) runs in the order they train: seed-major (seed 0 of every optimizer first)."""
    return [(opt, seed) for seed in range(config.seeds) for opt in config.optimizers]


def run_line(optimizer: str, seed: int, s: dict[str, Any]) -> str:
    """One line about a finished run: validation and test accuracy, epochs and why they stopped, wall time."""
    acc = "-" if s.get("test_acc") is None else f"{s['test_acc']:.4f}"
    return (f"{optimizer} seed {seed}: val acc {s.get('val_acc_best') or 0:.4f}, test acc {acc}"
            f"{' (diverged)' if s.get('diverged') else ''}, {s.get('epochs_run')} epochs ({s.get('stop_reason')}), "
            f"{s.get('wall_seconds') or 0:.0f} s")


def _train(comparison: Comparison, config: ClassificationConfig, prepared: Any, optimizer: str, seed: int,
           out: Path, *, progress: bool, overwrite: bool) -> dict[str, Any]:
    """Train (or reuse / resume) one run of the comparison; its summary."""
    run_dir = out / "runs" / run_name(optimizer, seed)
    spec = comparison.make_spec(config, prepared, optimizer, seed, run_dir, on_diverged=comparison.on_diverged)
    return run_one(spec, run_dir, progress=progress, overwrite=overwrite)


def _worker(comparison: Comparison, config: ClassificationConfig, out: str, optimizer: str, seed: int,
            threads: int, overwrite: bool) -> str:
    """One run in a worker process (``workers`` > 1); the data is prepared once per process."""
    torch.set_num_threads(threads)
    prepared = prepared_once({"command": comparison.command, **config.data_identity()},
                             lambda: comparison.prepare(config, progress=False))
    s = _train(comparison, config, prepared, optimizer, seed, Path(out), progress=False, overwrite=overwrite)
    return run_line(optimizer, seed, s)


def run_comparison(comparison: Comparison, config: ClassificationConfig, out: str | Path, *, progress: bool = True,
                   workers: int = 1, overwrite: bool = False) -> dict[str, Any]:
    """Run every (optimizer, seed) of ``config`` and write results.json, the table and the figures in ``out``.

    Every run folder is checked before the first run trains (:func:`preflight`): a finished run of other
    settings is refused (nothing trained) unless ``overwrite``. ``workers`` > 1 trains that many runs at once in
    spawned processes (single-process mode only), each with cpu_count / workers torch threads; the results are
    those of the sequential order, which then reads the finished runs back.
    """
    config.validate()
    check_int(workers, "workers")
    out = Path(out)
    info = init_distributed(config.device)  # under torchrun: join the process group before any run folder lock
    prepared = comparison.prepare(config, progress=progress)  # e.g. trains and caches the tokenizer, before workers
    jobs = comparison_jobs(config)
    preflight([(comparison.make_spec(config, prepared, opt, seed, out / "runs" / run_name(opt, seed)),
                out / "runs" / run_name(opt, seed)) for opt, seed in jobs], overwrite=overwrite)
    if workers > 1 and info.world_size == 1:
        run_in_processes(_worker, [(comparison, config, str(out), opt, seed, worker_threads(workers), overwrite)
                                   for opt, seed in jobs], workers,
                         done=lambda _, line: print(f"finished {line}", flush=True))
    summaries: dict[str, list[dict[str, Any]]] = {opt: [] for opt in config.optimizers}
    for optimizer, seed in jobs:
        if info.is_main and progress:
            print(f"== {comparison.command} {config.dataset}: {optimizer} (lr {config.lr_for(optimizer):g}), "
                  f"seed {seed}", flush=True)
        summaries[optimizer].append(_train(comparison, config, prepared, optimizer, seed, out, progress=progress,
                                           overwrite=overwrite))
        if info.is_main and workers == 1:
            print(f"finished {run_line(optimizer, seed, summaries[optimizer][-1])}", flush=True)
    return write_results(out, config, prepared.summary, summaries, comparison.write_report)
