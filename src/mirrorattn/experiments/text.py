"""The IMDb / sentence-polarity experiment: l_p-MD against SGD and Adam on a text transformer.

:func:`run_text_experiment` trains every (optimizer, seed) pair in its own run folder
``OUT/runs/<optimizer>-seed<k>/`` (reused when finished with the same config hash, resumed
from its checkpoint when interrupted), analyses each trained model
(:mod:`mirrorattn.experiments.text_analysis`) and writes ``results.json``, ``results.md`` and the
figures at the top of ``OUT``. :func:`run_lr_sweep` picks each optimizer's step size on the
validation split.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from mirrorattn.experiments.classification import ClassificationConfig, run_name, run_one, write_results
from mirrorattn.experiments.classification import aggregate as aggregate  # importable here, as before
from mirrorattn.experiments.text_analysis import analyse_run, write_report
from mirrorattn.io import config_hash, read_json, write_json
from mirrorattn.models.transformer import TextTransformer, TextTransformerConfig
from mirrorattn.train import NonFiniteLossError, Split, TrainData
from mirrorattn.train.distributed import init_distributed

__all__ = [
    "PreparedText",
    "TextExperimentConfig",
    "prepare_text_data",
    "run_lr_sweep",
    "run_name",
    "run_text_experiment",
    "select_step",
    "train_one",
]


@dataclass
class TextExperimentConfig(ClassificationConfig):
    """Everything that defines a text experiment (TOML-loadable; see ``text_presets`` for presets).

    Data, tokenizer, transformer and step-size sweep fields; optimizers, seeds, training and analysis
    are :class:`~mirrorattn.experiments.classification.ClassificationConfig`'s, with this
    experiment's default optimizers, epochs, stopping accuracy and analysis sample count.
    """

    # data
    dataset: str = "polarity"  #: "imdb", "polarity" or a .jsonl/.csv/.tsv file
    test_fraction: float = 0.2  #: for data sets without an official test split
    text_column: str = "text"
    label_column: str = "label"
    # tokenizer
    tokenizer: str = "wordpiece"
    vocab_size: int = 16000
    min_frequency: int = 2
    max_length: int = 256  #: tokens per sequence, [CLS] included
    # model
    width: int = 64
    blocks: int = 1
    heads: int = 2
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    bias: bool = False
    pooling: str = "mean"
    init_std: float = 0.02  #: std of the normal init of embeddings and linear weights
    # this experiment's defaults of ClassificationConfig fields
    optimizers: tuple[str, ...] = ("lp-md:1.1", "lp-md:2", "lp-md:3", "sgd", "adam")
    epochs: int = 4
    stop_train_acc: float | None = 0.995
    analysis_samples: int = 2000  #: test samples used for the attention-sparsity statistics
    # learning-rate sweep
    sweep_lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
    #: optimizer -> its own grid (l_3-MD needs far smaller steps than l_1.1-MD); others use ``sweep_lrs``
    sweep_grids: dict[str, tuple[float, ...]] = field(default_factory=dict)
    sweep_epochs: int = 1
    sweep_max_train: int | None = None

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field (``lrs`` may name optimizers not run: a sweep's choices)."""
        self.check_runs("lp-md:1.1,sgd,adam", unrun_steps=True)
        for name in self.optimizers:
            grid = self.sweep_grid(name)
            if not grid or not all(isinstance(v, (int, float)) and v > 0 for v in grid):
                raise ValueError(f"the sweep grid of {name} must be a non-empty list of positive steps, got {grid}")
        self.model_config(num_classes=2).validate()

    def sweep_grid(self, optimizer: str) -> tuple[float, ...]:
        """Step sizes swept for ``optimizer``: its entry in ``sweep_grids`` or ``sweep_lrs``."""
        return tuple(float(v) for v in self.sweep_grids.get(optimizer, self.sweep_lrs))

    def model_config(self, num_classes: int, vocab_size: int | None = None) -> TextTransformerConfig:
        """The transformer's config (``vocab_size``: the trained tokenizer's actual size)."""
        shape = self.field_values(("max_length", "width", "blocks", "heads", "mlp_ratio", "dropout", "bias", "pooling",
                                   "init_std"))
        return TextTransformerConfig(vocab_size=int(vocab_size or self.vocab_size), num_classes=num_classes, **shape)

    def data_identity(self) -> dict[str, Any]:
        """The fields that define the data and tokenisation (for run hashes)."""
        return self.field_values(("dataset", "val_fraction", "test_fraction", "split_seed", "max_train", "max_test",
                                  "text_column", "label_column", "tokenizer", "vocab_size", "min_frequency",
                                  "max_length"))


@dataclass
class PreparedText:
    """Tokenised splits, the tokenizer and the data set's description."""

    data: TrainData
    tokenizer: Any
    num_classes: int
    label_names: list[str]
    summary: dict[str, Any]


def prepare_text_data(config: TextExperimentConfig, max_train: int | None = None) -> PreparedText:
    """Load the data set, train (or load the cached) tokenizer on the training split, encode all splits."""
    from mirrorattn.data.text import build_tokenizer, encode_texts, load_text_dataset

    ds = load_text_dataset(config.dataset, test_fraction=config.test_fraction, text_column=config.text_column,
                           label_column=config.label_column, **config.load_options(max_train))
    if len(ds.val) == 0:
        raise ValueError("the validation split is empty: set val_fraction > 0 (model selection needs it)")
    tok = build_tokenizer(
        ds.train.texts, kind=config.tokenizer, vocab_size=config.vocab_size, min_frequency=config.min_frequency
    )

    def encode(split) -> Split:
        enc = encode_texts(tok, split.texts, config.max_length)
        return Split((enc.ids, enc.mask), torch.as_tensor(split.labels, dtype=torch.long))

    data = TrainData(encode(ds.train), encode(ds.val), encode(ds.test))
    summary = {**ds.summary(), "vocab_size": tok.get_vocab_size(),
               "mean_length": float(data.train.inputs[1].sum(1).float().mean())}
    return PreparedText(data, tok, ds.num_classes, list(ds.label_names), summary)


def train_one(config: TextExperimentConfig, prepared: PreparedText, optimizer: str, seed: int, out_dir: Path, *,
              lr: float | None = None, epochs: int | None = None, analyse: bool = True, progress: bool = True,
              keep_diverged: bool = False) -> dict[str, Any]:
    """Train (or reuse / resume) one run and return its summary (also written to ``summary.json``).

    The summary holds ``test_acc`` (validation-best epoch, fraction), ``test_acc_last``,
    ``val_acc_best``, ``best_epoch``, ``epochs_run``, ``train_seconds``, ``samples_per_second``,
    ``diverged`` and, with ``analyse``, the attention / weight sparsity and the probe score
    (:func:`mirrorattn.experiments.classification.run_one`). A run differing only in its stopping
    rule (more epochs) continues from its checkpoint.

    A run whose loss becomes NaN/inf raises :class:`~mirrorattn.train.NonFiniteLossError`, unless
    ``keep_diverged``: then it ends there, ``diverged`` is True, ``stop_reason`` holds the error and
    the model is the validation-best of the epochs completed before (``test_acc`` measured on it,
    ``test_acc_last`` None; everything None if no epoch completed).
    """
    model_cfg = config.model_config(prepared.num_classes, prepared.tokenizer.get_vocab_size())
    spec = config.run_spec(
        optimizer, seed, model_cfg, lr=lr, epochs=epochs, build_model=lambda: TextTransformer(model_cfg),
        data=prepared.data, resume_longer=True, on_diverged="best-epoch" if keep_diverged else "raise",
        analyse=partial(analyse_run, prepared=prepared, config=config, out_dir=out_dir) if analyse else None,
    )
    return run_one(spec, out_dir, progress=progress)


_PREPARED: dict[str, PreparedText] = {}


def _worker_run(config: TextExperimentConfig, out: str, optimizer: str, seed: int, threads: int) -> str:
    """One (optimizer, seed) run in a worker process (``--workers``); the data is prepared once per process."""
    torch.set_num_threads(threads)
    key = config_hash(config.data_identity())
    if key not in _PREPARED:
        _PREPARED[key] = prepare_text_data(config)
    s = train_one(config, _PREPARED[key], optimizer, seed, Path(out) / "runs" / run_name(optimizer, seed),
                  progress=False, keep_diverged=True)
    return _run_line(optimizer, seed, s)


def _run_line(optimizer: str, seed: int, s: dict[str, Any]) -> str:
    """One line about a finished run: validation and test accuracy, divergence, wall time."""
    acc = "-" if s.get("test_acc") is None else f"{s['test_acc']:.4f}"
    return (f"{optimizer} seed {seed}: val acc {s.get('val_acc_best') or 0:.4f}, test acc {acc}"
            f"{' (diverged)' if s.get('diverged') else ''}, {s.get('wall_seconds') or 0:.0f} s")


def _run_parallel(config: TextExperimentConfig, out: Path, workers: int, progress: bool) -> None:
    import multiprocessing as mp
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    prepare_text_data(config)  # trains and caches the tokenizer once, before the workers start
    threads = max(1, (os.cpu_count() or 1) // workers)
    jobs = [(opt, seed) for seed in range(config.seeds) for opt in config.optimizers]  # seed 0 of all first
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_worker_run, config, str(out), opt, seed, threads) for opt, seed in jobs]
        for fut in as_completed(futures):
            done = fut.result()
            print(f"finished {done}", flush=True)


def run_text_experiment(
    config: TextExperimentConfig, out: str | Path, *, progress: bool = True, workers: int = 1
) -> dict[str, Any]:
    """Run every (optimizer, seed) and write results.json, results.md and the figures in ``out``.

    ``workers`` > 1 trains that many runs at once in separate processes (single-process mode
    only), each with cpu_count / workers torch threads; the results are the same as sequential.
    """
    config.validate()
    out = Path(out)
    info = init_distributed(config.device)  # under torchrun: join the process group first
    if workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers}")
    if workers > 1 and info.world_size == 1:
        _run_parallel(config, out, workers, progress)
    prepared = prepare_text_data(config)
    summaries: dict[str, list[dict[str, Any]]] = {opt: [] for opt in config.optimizers}
    for seed in range(config.seeds):  # seed-major: an interrupted comparison has every optimizer's first seeds
        for optimizer in config.optimizers:
            if info.is_main and progress:
                print(f"== {optimizer} (lr {config.lr_for(optimizer):g}), seed {seed}", flush=True)
            run_dir = out / "runs" / run_name(optimizer, seed)
            summaries[optimizer].append(
                train_one(config, prepared, optimizer, seed, run_dir, progress=progress, keep_diverged=True)
            )
            if info.is_main and workers == 1:
                print(f"finished {_run_line(optimizer, seed, summaries[optimizer][-1])}", flush=True)
    return write_results(out, config, prepared.summary, summaries, write_report)


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


def _sweep_point(
    config: TextExperimentConfig, prepared: PreparedText, optimizer: str, lr: float, out: Path, progress: bool
) -> dict[str, Any]:
    """Train (or reuse) one sweep run and return its grid row (a diverged run: accuracy 0)."""
    run_dir = out / "runs" / run_name(optimizer, 0, lr)
    start = time.time()
    try:
        s = train_one(config, prepared, optimizer, 0, run_dir, lr=lr, epochs=config.sweep_epochs, analyse=False,
                      progress=progress)
    except NonFiniteLossError as exc:
        return {"lr": lr, "val_acc_best": 0.0, "val_loss_best": None, "best_epoch": None, "diverged": True,
                "error": str(exc), "seconds": time.time() - start}
    hist = read_json(run_dir / "history.json") if (run_dir / "history.json").is_file() else []
    best_row = hist[s["best_epoch"] - 1] if 0 < s["best_epoch"] <= len(hist) else {}
    return {"lr": lr, "val_acc_best": s["val_acc_best"], "val_loss_best": best_row.get("val_loss"),
            "best_epoch": s["best_epoch"], "train_acc_last": hist[-1]["train_acc"] if hist else None,
            "train_seconds": s["train_seconds"], "diverged": False, "seconds": time.time() - start}


def _sweep_line(optimizer: str, row: dict[str, Any]) -> str:
    """One progress line of a finished sweep point."""
    if row["diverged"]:
        what = "diverged"
    else:
        what = (f"val acc {row['val_acc_best']:.4f} (epoch {row['best_epoch']}), val loss "
                f"{row['val_loss_best'] or 0:.4f}, last train acc {row['train_acc_last'] or 0:.4f}")
    return f"sweep {optimizer} lr {row['lr']:g}: {what} [{row['seconds']:.0f} s]"


def _sweep_worker(config: TextExperimentConfig, out: str, optimizer: str, lr: float, threads: int) -> dict[str, Any]:
    """One sweep point in a worker process (``workers`` > 1); the data is prepared once per process."""
    torch.set_num_threads(threads)
    key = config_hash({**config.data_identity(), "sweep_max_train": config.sweep_max_train})
    if key not in _PREPARED:
        prepared = prepare_text_data(config, max_train=config.sweep_max_train)
        prepared.data = TrainData(prepared.data.train, prepared.data.val, None)
        _PREPARED[key] = prepared
    return _sweep_point(config, _PREPARED[key], optimizer, lr, Path(out), progress=False)


def run_lr_sweep(
    config: TextExperimentConfig, out: str | Path, *, progress: bool = True, workers: int = 1
) -> dict[str, Any]:
    """For every optimizer, short runs over its grid; pick the step with the best validation accuracy.

    The grid of an optimizer is :meth:`TextExperimentConfig.sweep_grid` (``sweep_grids`` or
    ``sweep_lrs``). One seed (0), ``sweep_epochs`` epochs, training pool capped at
    ``sweep_max_train``. A run whose loss diverges counts as validation accuracy 0. The choice and
    its warnings (nothing learned, flat grid): :func:`select_step`. One line per finished
    (optimizer, step) is printed on the main process even without ``progress`` (which adds the
    progress bars). ``workers`` > 1 trains that many sweep points at once in separate processes
    (single-process mode only; same results). Writes ``sweep.json`` (``sweep``: per optimizer
    ``best_lr``, ``best_val_acc``, ``warnings``, ``grid``; ``lrs``; ``warnings``; ``chance``) and
    ``sweep.png``; ``mirrorattn text --lr-from OUT/sweep.json`` uses the chosen steps. Test
    accuracy is never used.
    """
    config.validate()
    out = Path(out)
    if workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers}")
    info = init_distributed(config.device)  # under torchrun: join the process group first
    prepared = prepare_text_data(config, max_train=config.sweep_max_train)
    prepared.data = TrainData(prepared.data.train, prepared.data.val, None)  # the sweep never sees the test split
    val_labels = prepared.data.val.labels
    n_val = len(val_labels)
    chance = float(torch.bincount(val_labels).max()) / n_val
    points = [(opt, lr) for opt in config.optimizers for lr in config.sweep_grid(opt)]
    found: dict[tuple[str, float], dict[str, Any]] = {}
    if workers > 1 and info.world_size == 1:
        import multiprocessing as mp
        import os
        from concurrent.futures import ProcessPoolExecutor, as_completed

        threads = max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) // workers))
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_sweep_worker, config, str(out), opt, lr, threads): (opt, lr) for opt, lr in points}
            for fut in as_completed(futures):
                found[futures[fut]] = row = fut.result()
                print(_sweep_line(futures[fut][0], row), flush=True)
    for opt, lr in points:
        if (opt, lr) in found:
            continue
        if info.is_main and progress:
            print(f"== sweep {opt} lr {lr:g}", flush=True)
        found[(opt, lr)] = row = _sweep_point(config, prepared, opt, lr, out, progress)
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
    result = {"config": config, "data": prepared.summary, "chance": chance, "n_val": n_val, "sweep": table,
              "lrs": {k: v["best_lr"] for k, v in table.items()}, "warnings": all_warnings}
    if info.is_main:
        from mirrorattn.experiments.text_analysis import plot_sweep

        write_json(out / "sweep.json", result)
        plot_sweep(table, out / "sweep.png", chance=chance)
    return result
