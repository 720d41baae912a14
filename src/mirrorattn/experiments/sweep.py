"""Step-size selection on the validation split, shared by the text and vision experiments.

``mirrorattn text-sweep`` and ``mirrorattn vision-sweep`` run :func:`run_sweep`: for every
optimizer of the config, one short run (seed 0, ``sweep_epochs`` epochs, training pool capped at
``sweep_max_train``) per step of its grid (:meth:`ClassificationConfig.sweep_grid
<mirrorattn.experiments.classification.ClassificationConfig.sweep_grid>`: its entry in
``sweep_grids``, else ``sweep_lrs``), in ``OUT/runs/<optimizer>-seed0-lr<step>/`` (reused when
finished, as every run; a finished run of other settings there is refused before the first sweep
run, unless ``overwrite``). The step with the best validation accuracy is chosen by
:func:`select_step` (ties, stability margin, warnings: see there); a run whose loss became NaN/inf
counts as accuracy 0. The test split is dropped from the sweep's data before any training (its
``TrainData.test`` is None): no sweep run evaluates on it.

Results: ``OUT/sweep.json`` (``lrs``: optimizer -> chosen step; ``sweep``: per optimizer
``best_lr``, ``best_val_acc``, ``warnings``, ``backed_off_from``, ``grid`` (one row per step:
``lr``, ``val_acc_best``, ``val_loss_best``, ``best_epoch``, ``diverged`` ...); ``warnings``;
``chance``, the majority-class validation accuracy; ``n_val``; ``config``; ``data``) and
``OUT/sweep.png`` (:func:`plot_sweep`). ``mirrorattn text --lr-from OUT/sweep.json`` (or
``vision --lr-from``) then trains with the chosen steps.

An experiment takes part through a :class:`SweepTarget`: how to prepare its data with a capped
training pool, and its ``train_one``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from mirrorattn.checks import check_int
from mirrorattn.experiments.classification import ClassificationConfig, preflight, run_name
from mirrorattn.experiments.parallel import prepared_once, run_in_processes, worker_threads
from mirrorattn.io import save_figure, write_json
from mirrorattn.train import NonFiniteLossError, TrainData
from mirrorattn.train.distributed import init_distributed

__all__ = ["Prepared", "SweepTarget", "plot_sweep", "run_sweep", "select_step", "sweep_data", "sweep_point"]


class Prepared(Protocol):
    """What an experiment's data preparation returns: the training loop's splits and a description."""

    data: TrainData
    summary: dict[str, Any]


@dataclass(frozen=True)
class SweepTarget:
    """One experiment's part in a sweep (module-level functions, so that worker processes can take it).

    ``prepare(config, max_train, progress=)``: the experiment's data with the training pool capped at
    ``max_train`` (None: the config's cap). ``train_one(config, prepared, optimizer, seed, out_dir,
    *, lr, epochs, analyse, progress, overwrite)``: train (or reuse) one run, return its summary, which
    holds ``val_acc_best``, ``best_epoch`` and ``train_seconds``, or ``diverged: True`` (or raise
    :class:`~mirrorattn.train.NonFiniteLossError`) when its loss became NaN/inf. ``command``: the
    subcommand that trains with the chosen steps (for messages). ``make_spec(config, prepared,
    optimizer, seed, out_dir, *, lr, epochs, analyse)``: the run's
    :class:`~mirrorattn.experiments.classification.RunSpec`, for the check of every run folder before
    the first sweep run (:func:`~mirrorattn.experiments.classification.preflight`; None: no check).
    """

    prepare: Callable[..., Prepared]
    train_one: Callable[..., dict[str, Any]]
    command: str
    make_spec: Callable[..., Any] | None = None


def select_step(rows: list[dict[str, Any]], chance: float, n_val: int) -> tuple[dict[str, Any], list[str]]:
    """The sweep's choice among ``rows`` ({"lr", "val_acc_best", "val_loss_best", "diverged"}) and warnings.

    Best validation accuracy first; ties (equal accuracy) go to the lower validation loss at the
    best epoch, then to the larger step (a tie at equal loss means the step did not matter).
    Stability margin: when the next larger step of the grid failed (diverged, or within noise of
    chance) and the next smaller one is within two standard errors of the best, the smaller one is
    chosen (the returned row then has ``backed_off_from``: the best step) - a full run is several
    times longer than a sweep run, and steps at the edge of stability diverged there.
    Warnings (strings) when the best accuracy is within two standard errors
    (sqrt(chance (1 - chance) / n_val)) of ``chance`` (the majority-class fraction of the
    validation split: nothing was learned), and when every non-diverged step lies within two
    standard errors of the best (the grid is flat: the step size made no measurable difference),
    and otherwise when the chosen step is the smallest or largest of a grid of 3 or more.
    """
    if not rows:
        raise ValueError("select_step needs at least one sweep row")
    se = math.sqrt(max(chance * (1 - chance), 1e-12) / max(1, n_val))

    def key(r: dict[str, Any]) -> tuple[float, float, float]:
        loss = r.get("val_loss_best")
        return (r["val_acc_best"], -(loss if loss is not None and math.isfinite(loss) else math.inf), r["lr"])

    best = max(rows, key=key)
    # stability margin: the full runs are several times longer than the sweep's, and a step next to one that
    # failed (diverged or stayed at chance) diverged there (lp-md:2 / sgd at 3e-2 on IMDb): take the next
    # smaller step instead when its accuracy is within noise of the best
    ordered = sorted(rows, key=lambda r: r["lr"])
    i = next(j for j, r in enumerate(ordered) if r is best)

    def failed(r: dict[str, Any]) -> bool:
        return bool(r["diverged"]) or r["val_acc_best"] <= chance + 2 * se

    if (0 < i < len(ordered) - 1 and failed(ordered[i + 1]) and not failed(ordered[i - 1])
            and best["val_acc_best"] - ordered[i - 1]["val_acc_best"] <= 2 * se):
        best = {**ordered[i - 1], "backed_off_from": best["lr"]}
    warnings = []
    if best["val_acc_best"] <= chance + 2 * se:
        warnings.append(
            f"best validation accuracy {best['val_acc_best']:.4f} is within noise of chance ({chance:.4f} "
            f"+- {2 * se:.4f}, {n_val} validation samples): no step size learned; widen the grid or change the model"
        )
    finite = [r for r in rows if not r["diverged"]]
    if len(finite) > 1 and max(r["val_acc_best"] for r in finite) - min(r["val_acc_best"] for r in finite) <= 2 * se:
        warnings.append(
            f"all {len(finite)} step sizes give validation accuracies within {2 * se:.4f} (two standard errors) of "
            "each other: the step size made no measurable difference (are the swept parameters the ones that matter?)"
        )
    lrs = sorted(r["lr"] for r in rows)
    if len(lrs) > 2 and best["lr"] in (lrs[0], lrs[-1]) and not warnings:
        edge = "largest" if best["lr"] == lrs[-1] else "smallest"
        warnings.append(f"the chosen step {best['lr']:g} is the {edge} of the grid: the optimum may lie beyond it; "
                        "extend the grid")
    return best, warnings


def sweep_data(target: SweepTarget, config: ClassificationConfig, progress: bool = False) -> Prepared:
    """The sweep's data: training pool capped at ``sweep_max_train``, validation split, and no test split
    (``progress``: download progress bars, when the data must be fetched)."""
    prepared = target.prepare(config, config.sweep_max_train, progress=progress)
    prepared.data = TrainData(prepared.data.train, prepared.data.val, None)  # the sweep never sees the test split
    return prepared


def sweep_point(target: SweepTarget, config: ClassificationConfig, prepared: Prepared, optimizer: str, lr: float,
                out: Path, progress: bool, overwrite: bool = False) -> dict[str, Any]:
    """Train (or reuse) the sweep run of (``optimizer``, ``lr``) in ``out/runs`` and return its grid row.

    The row: ``lr``, ``val_acc_best`` (fraction; 0 for a diverged run), ``val_loss_best`` (at the
    best epoch), ``best_epoch``, ``train_acc_last``, ``train_seconds``, ``diverged`` (and ``error``),
    ``seconds`` (wall time of this call).
    """
    run_dir = out / "runs" / run_name(optimizer, 0, lr)
    start = time.time()
    try:
        s = target.train_one(config, prepared, optimizer, 0, run_dir, lr=lr, epochs=config.sweep_epochs,
                             analyse=False, progress=progress, overwrite=overwrite)
    except NonFiniteLossError as exc:
        s = {"diverged": True, "error": str(exc)}
    if s.get("diverged"):
        return {"lr": lr, "val_acc_best": 0.0, "val_loss_best": None, "best_epoch": None, "diverged": True,
                "error": s.get("error") or s.get("stop_reason"), "seconds": time.time() - start}
    return {"lr": lr, "val_acc_best": s["val_acc_best"], "val_loss_best": s.get("val_loss_best"),
            "best_epoch": s["best_epoch"], "train_acc_last": s.get("train_acc_last"),
            "train_seconds": s["train_seconds"], "diverged": False, "seconds": time.time() - start}


def _sweep_line(optimizer: str, row: dict[str, Any]) -> str:
    """One progress line of a finished sweep point."""
    if row["diverged"]:
        what = "diverged"
    else:
        what = (f"val acc {row['val_acc_best']:.4f} (epoch {row['best_epoch']}), val loss "
                f"{row['val_loss_best'] or 0:.4f}, last train acc {row['train_acc_last'] or 0:.4f}")
    return f"sweep {optimizer} lr {row['lr']:g}: {what} [{row['seconds']:.0f} s]"


def _sweep_worker(target: SweepTarget, config: ClassificationConfig, out: str, optimizer: str, lr: float,
                  threads: int, overwrite: bool = False) -> dict[str, Any]:
    """One sweep point in a worker process (``workers`` > 1); the data is prepared once per process."""
    torch.set_num_threads(threads)
    prepared = prepared_once({"command": target.command, **config.data_identity(),
                              "sweep_max_train": config.sweep_max_train}, lambda: sweep_data(target, config))
    return sweep_point(target, config, prepared, optimizer, lr, Path(out), progress=False, overwrite=overwrite)


def _run_parallel(target: SweepTarget, config: ClassificationConfig, out: Path, points: list[tuple[str, float]],
                  workers: int, overwrite: bool) -> dict[tuple[str, float], dict[str, Any]]:
    """The grid rows of ``points``, ``workers`` sweep points at a time in spawned processes."""
    threads = worker_threads(workers)
    rows = run_in_processes(_sweep_worker, [(target, config, str(out), opt, lr, threads, overwrite)
                                            for opt, lr in points], workers,
                            done=lambda a, row: print(_sweep_line(a[3], row), flush=True))
    return dict(zip(points, rows))


def run_sweep(target: SweepTarget, config: ClassificationConfig, out: str | Path, *, progress: bool = True,
              workers: int = 1, overwrite: bool = False) -> dict[str, Any]:
    """For every optimizer, short runs over its grid; pick the step with the best validation accuracy.

    See the module docstring for the runs, the choice and ``sweep.json`` / ``sweep.png`` (written
    to ``out`` on the main process). One line per finished (optimizer, step) is printed on the
    main process even without ``progress`` (which adds the progress bars). ``workers`` > 1 trains
    that many sweep points at once in separate processes (single-process mode only; same results).
    Every run folder is checked before the first sweep run (a finished run of other settings is refused
    unless ``overwrite``: :func:`~mirrorattn.experiments.classification.preflight`). Returns what
    ``sweep.json`` holds.
    """
    config.validate()
    out = Path(out)
    check_int(workers, "workers")
    info = init_distributed(config.device)  # under torchrun: join the process group first
    prepared = sweep_data(target, config, progress)
    val_labels = prepared.data.val.labels
    n_val = len(val_labels)
    chance = float(torch.bincount(val_labels).max()) / n_val
    points = [(opt, lr) for opt in config.optimizers for lr in config.sweep_grid(opt)]
    if target.make_spec is not None:
        dirs = {(opt, lr): out / "runs" / run_name(opt, 0, lr) for opt, lr in points}
        preflight([(target.make_spec(config, prepared, opt, 0, dirs[opt, lr], lr=lr, epochs=config.sweep_epochs,
                                     analyse=False), dirs[opt, lr]) for opt, lr in points], overwrite=overwrite)
    found: dict[tuple[str, float], dict[str, Any]] = {}
    if workers > 1 and info.world_size == 1:
        found = _run_parallel(target, config, out, points, workers, overwrite)
    for opt, lr in points:
        if (opt, lr) in found:
            continue
        if info.is_main and progress:
            print(f"== sweep {opt} lr {lr:g}", flush=True)
        found[(opt, lr)] = row = sweep_point(target, config, prepared, opt, lr, out, progress, overwrite)
        if info.is_main:
            print(_sweep_line(opt, row), flush=True)
    table: dict[str, Any] = {}
    all_warnings: list[str] = []
    for optimizer in config.optimizers:
        rows = [found[(optimizer, lr)] for lr in config.sweep_grid(optimizer)]
        best, warnings = select_step(rows, chance, n_val)
        table[optimizer] = {"best_lr": best["lr"], "best_val_acc": best["val_acc_best"], "warnings": warnings,
                            "backed_off_from": best.get("backed_off_from"), "grid": rows}
        all_warnings += [f"{optimizer}: {w}" for w in warnings]
    result = {"config": config.record(), "data": prepared.summary, "chance": chance, "n_val": n_val, "sweep": table,
              "lrs": {k: v["best_lr"] for k, v in table.items()}, "warnings": all_warnings}
    if info.is_main:
        write_json(out / "sweep.json", result)
        plot_sweep(table, out / "sweep.png", chance=chance)
    return result


def plot_sweep(table: dict[str, Any], path: Path, chance: float | None = None) -> None:
    """Validation accuracy against the step size, one line per optimizer; the chosen step marked.

    ``table``: ``sweep.json``'s ``sweep``; ``chance``: the majority-class validation accuracy,
    drawn as a dashed line when given.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for opt, row in table.items():
        lrs = [r["lr"] for r in row["grid"]]
        acc = [r["val_acc_best"] for r in row["grid"]]
        (line,) = ax.plot(lrs, acc, marker="o", label=opt)
        ax.plot([row["best_lr"]], [row["best_val_acc"]], marker="*", ms=14, color=line.get_color())
    if chance is not None:
        ax.axhline(chance, color="grey", lw=0.8, ls="--", label="chance (majority class)")
    ax.set(xscale="log", xlabel="step size", ylabel="best validation accuracy", title="learning-rate sweep")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
