"""The IMDb / sentence-polarity experiment: l_p-MD against SGD and Adam on a text transformer.

:func:`run_text_experiment` trains every (optimizer, seed) pair in its own run folder
``OUT/runs/<optimizer>-seed<k>/`` (reused when finished with the same config hash, resumed
from its checkpoint when interrupted), analyses each trained model
(:mod:`mirrorattn.experiments.text_analysis`) and writes ``results.json``, ``results.md`` and the
figures at the top of ``OUT``. :func:`run_lr_sweep` picks each optimizer's step size on the
validation split.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mirrorattn.io import config_hash, read_json, write_json
from mirrorattn.models.transformer import TextTransformer, TextTransformerConfig
from mirrorattn.train import NonFiniteLossError, Split, TrainConfig, TrainData, dist_info, fit, seeded_init
from mirrorattn.train.distributed import barrier, init_distributed

__all__ = [
    "PreparedText",
    "TextExperimentConfig",
    "prepare_text_data",
    "run_lr_sweep",
    "run_name",
    "run_text_experiment",
    "train_one",
]


@dataclass
class TextExperimentConfig:
    """Everything that defines a text experiment (TOML-loadable; see ``text_presets`` for presets)."""

    # data
    dataset: str = "polarity"  #: "imdb", "polarity" or a .jsonl/.csv/.tsv file
    data_root: str | None = None
    download: bool = False
    val_fraction: float = 0.1
    test_fraction: float = 0.2  #: for data sets without an official test split
    split_seed: int = 0
    max_train: int | None = None  #: cap on the training pool (train + validation)
    max_test: int | None = None
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
    # optimizers and seeds
    optimizers: tuple[str, ...] = ("lp-md:1.1", "lp-md:2", "lp-md:3", "sgd", "adam")
    seeds: int = 3
    lrs: dict[str, float] = field(default_factory=dict)  #: optimizer -> step size (else ``lr``)
    lr: float = 1e-3
    # training (see mirrorattn.train.TrainConfig)
    md_scope: str = "all"
    other_optimizer: str = "adamw"
    other_lr: float | None = None
    weight_decay: float = 0.0
    epochs: int = 4
    batch_size: int = 64
    eval_batch_size: int = 256
    grad_clip: float | None = None
    amp: bool = False
    loss_reduction: str = "mean"
    stop_train_acc: float | None = 0.995
    patience: int | None = None
    device: str = "auto"
    # analysis
    analysis_samples: int = 2000  #: test samples used for the attention-sparsity statistics
    topk: int = 5  #: k of the top-k attention mass
    weight_threshold: float = 0.06  #: |w| above this counts as a non-zero weight (the paper)
    # learning-rate sweep
    sweep_lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
    sweep_epochs: int = 1
    sweep_max_train: int | None = None

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field."""
        if not self.optimizers:
            raise ValueError("optimizers must name at least one optimizer, e.g. lp-md:1.1,sgd,adam")
        if self.seeds < 1:
            raise ValueError(f"seeds must be a positive integer, got {self.seeds}")
        unknown = sorted(set(self.lrs) - set(self.optimizers))
        if unknown and not all(isinstance(v, (int, float)) for v in self.lrs.values()):
            raise ValueError(f"lrs must map optimizer names to numbers, got {self.lrs}")
        for name, lr in self.lrs.items():
            if not (isinstance(lr, (int, float)) and lr > 0):
                raise ValueError(f"step size of {name} must be a positive number, got {lr!r}")
        self.model_config(num_classes=2).validate()
        self.train_config("adam", 1e-3, 0).validate()

    def lr_for(self, optimizer: str) -> float:
        """Step size of ``optimizer``: its entry in ``lrs`` or the default ``lr``."""
        return float(self.lrs.get(optimizer, self.lr))

    def model_config(self, num_classes: int, vocab_size: int | None = None) -> TextTransformerConfig:
        """The transformer's config (``vocab_size``: the trained tokenizer's actual size)."""
        return TextTransformerConfig(
            vocab_size=int(vocab_size or self.vocab_size),
            max_length=self.max_length,
            width=self.width,
            blocks=self.blocks,
            heads=self.heads,
            mlp_ratio=self.mlp_ratio,
            dropout=self.dropout,
            bias=self.bias,
            pooling=self.pooling,
            num_classes=num_classes,
        )

    def train_config(self, optimizer: str, lr: float, seed: int, epochs: int | None = None) -> TrainConfig:
        """The training config of one run."""
        return TrainConfig(
            optimizer=optimizer,
            lr=lr,
            md_scope=self.md_scope,
            other_optimizer=self.other_optimizer,
            other_lr=self.other_lr,
            weight_decay=self.weight_decay,
            epochs=int(epochs or self.epochs),
            batch_size=self.batch_size,
            eval_batch_size=self.eval_batch_size,
            grad_clip=self.grad_clip,
            amp=self.amp,
            loss_reduction=self.loss_reduction,
            seed=seed,
            stop_train_acc=self.stop_train_acc,
            patience=self.patience,
            device=self.device,
        )

    def data_identity(self) -> dict[str, Any]:
        """The fields that define the data and tokenisation (for run hashes)."""
        keys = ("dataset", "val_fraction", "test_fraction", "split_seed", "max_train", "max_test", "text_column",
                "label_column", "tokenizer", "vocab_size", "min_frequency", "max_length")
        return {k: getattr(self, k) for k in keys}


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

    ds = load_text_dataset(
        config.dataset,
        data_root=config.data_root,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        split_seed=config.split_seed,
        download=config.download,
        text_column=config.text_column,
        label_column=config.label_column,
        max_train=max_train or config.max_train,
        max_test=config.max_test,
    )
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


def run_name(optimizer: str, seed: int, lr: float | None = None) -> str:
    """Folder name of a run: ``lp-md-1.1-seed0`` (``...-lr3e-03`` in sweeps)."""
    slug = optimizer.replace(":", "-").replace("=", "").replace(",", "_").replace("/", "_")
    return f"{slug}-seed{seed}" + (f"-lr{lr:.0e}" if lr is not None else "")


def _run_identity(config: TextExperimentConfig, train_cfg: TrainConfig, model_cfg: TextTransformerConfig) -> dict:
    return {"data": config.data_identity(), "model": dataclasses.asdict(model_cfg), "train": train_cfg.identity(),
            "epochs": train_cfg.epochs, "stop_train_acc": train_cfg.stop_train_acc, "patience": train_cfg.patience,
            "analysis": {"samples": config.analysis_samples, "topk": config.topk,
                         "threshold": config.weight_threshold}}


def train_one(
    config: TextExperimentConfig,
    prepared: PreparedText,
    optimizer: str,
    seed: int,
    out_dir: Path,
    *,
    lr: float | None = None,
    epochs: int | None = None,
    analyse: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or reuse / resume) one run and return its summary (also written to ``summary.json``).

    The summary holds ``test_acc`` (validation-best epoch, fraction), ``test_acc_last``,
    ``val_acc_best``, ``best_epoch``, ``epochs_run``, ``train_seconds``, ``samples_per_second``
    and, with ``analyse``, the attention / weight sparsity and the probe score.
    """
    lr = config.lr_for(optimizer) if lr is None else float(lr)
    train_cfg = config.train_config(optimizer, lr, seed, epochs)
    model_cfg = config.model_config(prepared.num_classes, prepared.tokenizer.get_vocab_size())
    identity = _run_identity(config, train_cfg, model_cfg)
    digest = config_hash(identity)
    info = dist_info()
    summary_path = out_dir / "summary.json"
    if summary_path.is_file():
        old = read_json(summary_path)
        if old.get("config_hash") == digest and (old.get("analysis") is not None or not analyse):
            return old
    # a run with the same settings except the stopping rule (e.g. more epochs) continues from its checkpoint
    resume_key = config_hash({k: v for k, v in identity.items() if k not in ("epochs", "stop_train_acc", "patience")})
    cfg_path = out_dir / "run_config.json"
    resume = cfg_path.is_file() and read_json(cfg_path).get("resume_hash") == resume_key
    barrier()  # every process has decided before rank 0 changes the folder
    if info.is_main:
        if not resume and out_dir.exists():
            shutil.rmtree(out_dir)  # a run of other settings: start over
        record = {"config_hash": digest, "resume_hash": resume_key, "optimizer": optimizer, "lr": lr, "seed": seed}
        write_json(cfg_path, {**record, **identity})
    barrier()
    with seeded_init(seed):
        model = TextTransformer(model_cfg)
    start = time.time()
    result = fit(model, prepared.data, train_cfg, out_dir, resume=resume, progress=progress)
    summary: dict[str, Any] = {
        "config_hash": digest,
        "optimizer": optimizer,
        "lr": lr,
        "seed": seed,
        **{k: v for k, v in result.items() if k != "history"},
        "wall_seconds": time.time() - start,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "analysis": None,
    }
    if analyse:
        from mirrorattn.experiments.text_analysis import analyse_run

        summary["analysis"] = analyse_run(model, prepared, config, out_dir, write=info.is_main)
    if info.is_main:
        write_json(summary_path, summary)
    return summary


def _mean_std(values: list[float]) -> dict[str, float | None]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, "n": len(vals)}


def aggregate(summaries: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Mean and standard deviation (over seeds, ddof 1) of every reported number, per optimizer."""
    keys = ("test_acc", "test_acc_last", "val_acc_best", "best_epoch", "epochs_run", "train_seconds",
            "samples_per_second")
    out: dict[str, Any] = {}
    for opt, runs in summaries.items():
        row = {k: _mean_std([r.get(k) for r in runs]) for k in keys}
        flat: dict[str, list[float]] = {}
        for r in runs:
            for k, v in (r.get("analysis") or {}).get("scalars", {}).items():
                flat.setdefault(k, []).append(v)
        row.update({k: _mean_std(v) for k, v in flat.items()})
        row["lr"] = runs[0]["lr"] if runs else None
        out[opt] = row
    return out


_PREPARED: dict[str, PreparedText] = {}


def _worker_run(config: TextExperimentConfig, out: str, optimizer: str, seed: int, threads: int) -> str:
    """One (optimizer, seed) run in a worker process (``--workers``); the data is prepared once per process."""
    torch.set_num_threads(threads)
    key = config_hash(config.data_identity())
    if key not in _PREPARED:
        _PREPARED[key] = prepare_text_data(config)
    train_one(config, _PREPARED[key], optimizer, seed, Path(out) / "runs" / run_name(optimizer, seed), progress=False)
    return f"{optimizer} seed {seed}"


def _run_parallel(config: TextExperimentConfig, out: Path, workers: int, progress: bool) -> None:
    import multiprocessing as mp
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    prepare_text_data(config)  # trains and caches the tokenizer once, before the workers start
    threads = max(1, (os.cpu_count() or 1) // workers)
    jobs = [(opt, seed) for opt in config.optimizers for seed in range(config.seeds)]
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_worker_run, config, str(out), opt, seed, threads) for opt, seed in jobs]
        for fut in as_completed(futures):
            done = fut.result()
            if progress:
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
    summaries: dict[str, list[dict[str, Any]]] = {}
    for optimizer in config.optimizers:
        for seed in range(config.seeds):
            if info.is_main and progress:
                print(f"== {optimizer} (lr {config.lr_for(optimizer):g}), seed {seed}", flush=True)
            run_dir = out / "runs" / run_name(optimizer, seed)
            summaries.setdefault(optimizer, []).append(
                train_one(config, prepared, optimizer, seed, run_dir, progress=progress)
            )
    results = {"config": config, "data": prepared.summary, "aggregate": aggregate(summaries), "runs": summaries}
    if info.is_main:
        from mirrorattn.experiments.text_analysis import write_report

        write_json(out / "results.json", results)
        write_report(out, config, results)
    return results


def run_lr_sweep(config: TextExperimentConfig, out: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """For every optimizer, short runs over ``sweep_lrs``; pick the step with the best validation accuracy.

    One seed (0), ``sweep_epochs`` epochs, training pool capped at ``sweep_max_train``. A run
    whose loss diverges counts as validation accuracy 0. Writes ``sweep.json`` and ``sweep.png``;
    ``mirrorattn text --lr-from OUT/sweep.json`` uses the chosen steps. Test accuracy is never used.
    """
    config.validate()
    out = Path(out)
    info = init_distributed(config.device)  # under torchrun: join the process group first
    prepared = prepare_text_data(config, max_train=config.sweep_max_train)
    prepared.data = TrainData(prepared.data.train, prepared.data.val, None)  # the sweep never sees the test split
    table: dict[str, Any] = {}
    for optimizer in config.optimizers:
        rows = []
        for lr in config.sweep_lrs:
            run_dir = out / "runs" / run_name(optimizer, 0, lr)
            if info.is_main and progress:
                print(f"== sweep {optimizer} lr {lr:g}", flush=True)
            try:
                s = train_one(config, prepared, optimizer, 0, run_dir, lr=lr, epochs=config.sweep_epochs,
                              analyse=False, progress=progress)
                rows.append({"lr": lr, "val_acc_best": s["val_acc_best"], "best_epoch": s["best_epoch"],
                             "diverged": False})
            except NonFiniteLossError as exc:
                rows.append({"lr": lr, "val_acc_best": 0.0, "best_epoch": None, "diverged": True, "error": str(exc)})
        best = max(rows, key=lambda r: (r["val_acc_best"], -r["lr"]))
        table[optimizer] = {"best_lr": best["lr"], "best_val_acc": best["val_acc_best"], "grid": rows}
    result = {"config": config, "data": prepared.summary, "sweep": table,
              "lrs": {k: v["best_lr"] for k, v in table.items()}}
    if info.is_main:
        from mirrorattn.experiments.text_analysis import plot_sweep

        write_json(out / "sweep.json", result)
        plot_sweep(table, out / "sweep.png")
    return result
