"""What the text and vision experiments share: the training fields, one run, and the table over seeds.

Both experiments compare optimizers on a classifier, every (optimizer, seed) pair in its own run
folder ``OUT/runs/<optimizer>-seed<k>/`` (:func:`run_name`). :func:`run_one` trains such a run
with :func:`mirrorattn.train.fit`, or reuses it: a folder whose ``summary.json`` carries the same
``config_hash`` (the hash of the run's identity, :func:`run_identity`) is returned as it is, an
interrupted one is resumed from its checkpoint, and a run whose loss became NaN/inf is handled as
the experiment asks (:data:`DIVERGED_POLICIES`). :func:`aggregate` makes the mean ± std over seeds
of every reported number.

Run folders: the rules (a finished run is never deleted implicitly, ``overwrite``, moving aside,
damaged records, :func:`preflight`) live in :mod:`mirrorattn.experiments.run_folders`. The main
process holds the folder's lock (:func:`mirrorattn.io.lock_folder`) for the whole run, so a
second process on the same run exits with one line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from mirrorattn.experiments.run_folders import (
    RUN_CONFIG,
    SUMMARY,
    RunConflictError,
    RunPlan,
    _enter_folder,
    _on_main,
    _resume_key,
    identity_diff,
    plan_run,
    preflight,
)
from mirrorattn.io import (
    config_hash,
    lock_folder,
    write_json,
)
from mirrorattn.metrics import relative_change
from mirrorattn.train import TrainConfig, TrainData, dist_info, fit, seeded_init
from mirrorattn.train.checkpoint import CheckpointError, is_state_dict, load_checkpoint
from mirrorattn.train.distributed import barrier
from mirrorattn.train.fsdp import unsharded_copy
from mirrorattn.train.resume import CHECKPOINT, load_weights_into

__all__ = [
    "DIVERGED_POLICIES",
    "PER_RUN_FIELDS",
    "TRAIN_SETTINGS",
    "ClassificationConfig",
    "RunConflictError",
    "RunPlan",
    "RunSpec",
    "aggregate",
    "format_stat",
    "identity_diff",
    "optimizer_key",
    "plan_run",
    "preflight",
    "run_identity",
    "run_name",
    "run_one",
    "write_results",
]

#: what :func:`run_one` does when the loss becomes NaN/inf: "raise" the NonFiniteLossError;
#: "best-epoch": end the run there and report its validation-best completed epoch (``fit(keep_diverged=True)``);
#: "record": write a short summary with ``diverged: True``, ``error`` and no accuracy, no analysis
DIVERGED_POLICIES = ("raise", "best-epoch", "record")

#: the TrainConfig fields each run sets itself (the compared optimizer, the seed): not settings of an experiment
PER_RUN_FIELDS = ("optimizer", "seed")
#: the training settings of an experiment, by their own names (``epochs``, ``lr``, ``batch_size`` ...)
TRAIN_SETTINGS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in PER_RUN_FIELDS)


class _TrainSettings(type):
    """The constructor of the experiment configs takes the training settings by their own names too
    (``TextExperimentConfig(epochs=3)``, ``dataclasses.replace(config, lr=0.1)``): they go into ``train``,
    which is always the config's own copy."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        settings = {k: kwargs.pop(k) for k in [k for k in kwargs if k in TRAIN_SETTINGS]}
        config = super().__call__(*args, **kwargs)
        config.train = dataclasses.replace(config.train, **settings)
        return config


@dataclass
class ClassificationConfig(metaclass=_TrainSettings):
    """The fields every classification experiment has: data source and split, optimizers, seeds, training, analysis.

    The training settings are a nested :class:`~mirrorattn.train.TrainConfig` (``train``; its
    ``optimizer`` and ``seed`` are set per run, :meth:`train_config`), also read, written and given to the
    constructor, presets, TOML files and command-line options by their own names (``config.epochs``,
    ``epochs = 3``, ``--epochs 3``; :data:`FLATTENED`, :func:`mirrorattn.config.flat_fields`).
    Subclasses (:class:`~mirrorattn.experiments.text.TextExperimentConfig`,
    :class:`~mirrorattn.experiments.vision.VisionExperimentConfig`) add their data and model
    fields, redeclare the fields whose default differs (``train`` too), and define ``data_identity()``.
    """

    #: nested config fields whose own fields are set by their names (except those listed: set per run)
    FLATTENED: ClassVar[dict[str, tuple[str, ...]]] = {"train": PER_RUN_FIELDS}

    # data (the experiment adds its own fields)
    dataset: str = "digits"  #: the data set (a name, or a file / folder of your own where the experiment reads one)
    data_root: str | None = None  #: folder of the data archives (None: $MIRRORATTN_DATA); read only
    download: bool = False  #: download the data set when it is not under the data root
    val_fraction: float = 0.1  #: share of the training pool held out for validation (model selection), in (0, 1)
    split_seed: int = 0  #: seed of the stratified train / validation (and test) split and of the pool cap
    max_train: int | None = None  #: cap on the training pool (train + validation)
    max_test: int | None = None  #: cap on the test split (a seeded, stratified subset; None: all)
    # optimizers and seeds
    optimizers: tuple[str, ...] = ("adam", "lp-md:1.1", "sgd")  #: the compared optimizers (specs, e.g. lp-md:1.1)
    seeds: int = 3  #: runs per optimizer, seeds 0 .. seeds-1, each its own initialisation and data order
    lrs: dict[str, float] = field(default_factory=dict)  #: optimizer -> step size (else ``lr``)
    # step-size sweep (mirrorattn.experiments.sweep)
    #: the sweep grid of optimizers without an entry in ``sweep_grids``
    sweep_lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
    #: optimizer -> its own grid (l_3-MD needs far smaller steps than l_1.1-MD); others use ``sweep_lrs``
    sweep_grids: dict[str, tuple[float, ...]] = field(default_factory=dict)
    sweep_epochs: int = 1  #: epochs of every sweep run
    sweep_max_train: int | None = None  #: cap on the sweep's training pool (None: ``max_train``)
    #: how every run trains (mirrorattn.train.TrainConfig; ``lr``: the step of optimizers without an entry in ``lrs``)
    train: TrainConfig = field(default_factory=partial(TrainConfig, stop_train_acc=None))
    # analysis
    analysis_samples: int = 1000  #: test samples used for the attention-sparsity statistics
    topk: int = 5  #: k of the top-k attention mass
    weight_threshold: float = 0.06  #: |w| above this counts as a non-zero weight (the paper)

    def __getattr__(self, name: str) -> Any:
        """A training setting by its own name (``config.epochs`` is ``config.train.epochs``)."""
        if name in TRAIN_SETTINGS and "train" in self.__dict__:
            return getattr(self.__dict__["train"], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in TRAIN_SETTINGS:
            setattr(self.train, name, value)
        else:
            object.__setattr__(self, name, value)

    def record(self) -> dict[str, Any]:
        """The settings as one flat table, the training settings by their own names in place of ``train``
        (what ``results.json`` and ``sweep.json`` hold, and what a preset or TOML file sets)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "train":
                out.update({name: getattr(self.train, name) for name in TRAIN_SETTINGS})
            else:
                out[f.name] = getattr(self, f.name)
        return out

    def check_runs(self, example: str, *, unrun_steps: bool) -> None:
        """Raise ``ValueError`` naming a bad optimizer list, seed count, step size, sweep or training field.

        ``example``: an optimizer list for the message; ``unrun_steps``: whether ``lrs`` may name
        optimizers that are not run (a sweep's choices for more optimizers than this run).
        """
        if not self.optimizers:
            raise ValueError(f"optimizers must name at least one optimizer, e.g. {example}")
        seen: dict[tuple, str] = {}
        for name in self.optimizers:
            key = optimizer_key(name)
            if key in seen:
                raise ValueError(f"optimizers lists the same optimizer twice ({seen[key]!r} and {name!r}): its runs "
                                 "would count twice in the mean ± std; list it once (seeds sets its runs)")
            seen[key] = name
        if self.seeds < 1:
            raise ValueError(f"seeds must be a positive integer, got {self.seeds}")
        unknown = sorted(set(self.lrs) - set(self.optimizers))
        if unknown and not unrun_steps:
            raise ValueError(f"step sizes given for optimizers that are not run: {', '.join(unknown)}")
        for name, lr in self.lrs.items():
            if not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0):
                raise ValueError(f"step size of {name} must be a positive number, got {lr!r}")
        for name in self.optimizers:
            grid = self.sweep_grids.get(name, self.sweep_lrs)
            if not grid or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in grid):
                raise ValueError(f"the sweep grid of {name} must be a non-empty list of positive steps, got {grid}")
        if self.sweep_epochs < 1:
            raise ValueError(f"sweep_epochs must be a positive integer, got {self.sweep_epochs}")
        if self.sweep_max_train is not None and self.sweep_max_train < 2:
            raise ValueError(f"sweep_max_train must be at least 2 (a training and a validation sample) or None, "
                             f"got {self.sweep_max_train}")
        for name in self.optimizers:  # every run's settings, before any data is loaded or run trained
            self.train_config(name, self.lr_for(name), 0).validate()

    def field_values(self, names: Iterable[str]) -> dict[str, Any]:
        """``{name: value}`` of the config fields ``names``, in that order."""
        return {name: getattr(self, name) for name in names}

    def load_options(self, max_train: int | None = None) -> dict[str, Any]:
        """Keyword arguments of the data loaders: root, download, split, caps (``max_train`` overrides the cap)."""
        return {"data_root": self.data_root, "val_fraction": self.val_fraction, "split_seed": self.split_seed,
                "download": self.download, "max_train": max_train or self.max_train, "max_test": self.max_test}

    def sweep_grid(self, optimizer: str) -> tuple[float, ...]:
        """Step sizes swept for ``optimizer``: its entry in ``sweep_grids`` or ``sweep_lrs``."""
        return tuple(float(v) for v in self.sweep_grids.get(optimizer, self.sweep_lrs))

    def lr_for(self, optimizer: str) -> float:
        """Step size of ``optimizer``: its entry in ``lrs`` or the default ``lr``."""
        return float(self.lrs.get(optimizer, self.lr))

    def train_config(self, optimizer: str, lr: float, seed: int, epochs: int | None = None) -> TrainConfig:
        """The training config of one run (``epochs``: instead of the config's, e.g. in a sweep)."""
        return dataclasses.replace(self.train, optimizer=optimizer, lr=lr, seed=seed,
                                   epochs=int(epochs or self.train.epochs))

    def run_spec(self, optimizer: str, seed: int, model_cfg: Any, *, lr: float | None = None,
                 epochs: int | None = None, identity_extra: dict[str, Any] | None = None, **options: Any) -> RunSpec:
        """The :class:`RunSpec` of one run of this config.

        ``lr``: instead of :meth:`lr_for`; ``epochs``: instead of the config's (a sweep);
        ``model_cfg``: the model's config dataclass (part of the identity, :func:`run_identity`, with
        ``identity_extra``); ``options``: the other :class:`RunSpec` fields (``build_model``, ``data`` ...).
        """
        lr = self.lr_for(optimizer) if lr is None else float(lr)
        train_cfg = self.train_config(optimizer, lr, seed, epochs)
        identity = run_identity(self, train_cfg, model_cfg, **(identity_extra or {}))
        return RunSpec(optimizer, lr, seed, train_cfg, identity, **options)

    def data_identity(self) -> dict[str, Any]:
        """The fields that define the data (for run hashes); defined by each experiment."""
        raise NotImplementedError

    def analysis_identity(self) -> dict[str, Any]:
        """The analysis settings a run's summary depends on (part of its hash)."""
        return {"samples": self.analysis_samples, "topk": self.topk, "threshold": self.weight_threshold}


def optimizer_key(spec: str) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """A spec's normal form, equal for specs of the same optimizer: ``"lp-md:1.1"`` and ``"LP-MD:p=1.1"``
    give ``("lp-md", (("p", 1.1),))``. ``ValueError`` (naming the spec) for an unknown or malformed one."""
    from mirrorattn.optim.registry import parse_optimizer_spec

    name, kwargs = parse_optimizer_spec(spec)
    return name, tuple(sorted(kwargs.items()))


def run_name(optimizer: str, seed: int, lr: float | None = None) -> str:
    """Folder name of a run: ``lp-md-1.1-seed0`` (``...-lr3e-03`` in sweeps)."""
    slug = optimizer.replace(":", "-").replace("=", "").replace(",", "_").replace("/", "_")
    return f"{slug}-seed{seed}" + (f"-lr{lr:.0e}" if lr is not None else "")


#: model-config fields added after results were published, with the value that reproduces the older
#: models: left out of a run's identity at that value, so that the older runs keep their hashes
_NEUTRAL_MODEL_FIELDS = {"init": "normal", "attention_mask": "keys"}


def model_identity(model_cfg: Any) -> dict[str, Any]:
    """The model part of a run's identity: the config dataclass's fields, except those in
    :data:`_NEUTRAL_MODEL_FIELDS` that hold their neutral value."""
    return {k: v for k, v in dataclasses.asdict(model_cfg).items()
            if not (k in _NEUTRAL_MODEL_FIELDS and v == _NEUTRAL_MODEL_FIELDS[k])}


def run_identity(config: ClassificationConfig, train_cfg: TrainConfig, model_cfg: Any, **extra: Any) -> dict[str, Any]:
    """What defines a run's result: data, model config (a dataclass), training, stopping rule, analysis.

    ``extra`` entries (e.g. ``augmentation``) follow ``train``. Its :func:`~mirrorattn.io.config_hash`
    is the run's ``config_hash``; ``run_config.json`` holds it in full.
    """
    return {"data": config.data_identity(), "model": model_identity(model_cfg), "train": train_cfg.identity(),
            **extra, "epochs": train_cfg.epochs, "stop_train_acc": train_cfg.stop_train_acc,
            "patience": train_cfg.patience, "analysis": config.analysis_identity()}


@dataclass
class RunSpec:
    """One run for :func:`run_one`: its settings, how to build and analyse its model, the summary's extra keys."""

    optimizer: str
    lr: float
    seed: int
    train: TrainConfig
    identity: dict[str, Any]  #: :func:`run_identity`; its hash names the run's results
    build_model: Callable[[], nn.Module]  #: a fresh model; called under ``seeded_init(seed)``
    data: TrainData
    #: ``analyse(model, write=...)``: the analysis of the trained (validation-best) model, its files
    #: written when ``write`` (the main process); None: no analysis
    analyse: Callable[..., dict[str, Any]] | None = None
    on_diverged: str = "raise"  #: one of :data:`DIVERGED_POLICIES`
    #: continue a run that differs only in its stopping rule (more epochs ...): ``run_config.json``
    #: then holds ``resume_hash``, the identity's hash without the stopping rule
    resume_longer: bool = False
    fit_options: dict[str, Any] = field(default_factory=dict)  #: more keyword arguments of ``fit`` (augment)
    summary_head: dict[str, Any] = field(default_factory=dict)  #: summary entries after ``config_hash``
    summary_tail: dict[str, Any] = field(default_factory=dict)  #: summary entries before ``analysis``
    seconds_per_epoch: bool = False  #: add ``seconds_per_epoch`` (training time / epochs run) to the summary


def run_one(spec: RunSpec, out_dir: Path, *, progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Train (or reuse / resume) one run in ``out_dir`` and return its summary (also ``summary.json``).

    Reuse: a ``summary.json`` with the same ``config_hash`` (and an analysis, unless none is asked
    or the run diverged) is returned untouched. Resume: a ``run_config.json`` of the same run
    (same ``config_hash``, or with ``resume_longer`` the same ``resume_hash``) continues from the
    checkpoint. A folder of other settings: see :func:`plan_run` (a finished run is refused unless
    ``overwrite``; an unfinished one is moved aside). The main process holds the folder's lock for the
    whole run (:class:`~mirrorattn.io.FolderInUseError` if another process holds it). The summary holds
    ``config_hash``, ``summary_head``, ``optimizer``, ``lr``, ``seed``, fit's result (``test_acc`` at the
    validation-best epoch and ``test_acc_last`` as fractions, ``val_acc_best``, ``best_epoch``,
    ``epochs_run``, ``train_seconds``, ``samples_per_second`` ...), ``diverged``, ``wall_seconds``
    (seconds), ``n_parameters``, ``summary_tail`` and ``analysis`` (None without).
    """
    if spec.on_diverged not in DIVERGED_POLICIES:
        raise ValueError(f"on_diverged must be one of {', '.join(DIVERGED_POLICIES)}, got {spec.on_diverged!r}")
    out_dir = Path(out_dir)
    with contextlib.ExitStack() as stack:
        _on_main(lambda: stack.enter_context(lock_folder(out_dir)))
        plan = _on_main(lambda: plan_run(spec, out_dir, overwrite=overwrite))
        if plan.action == "reuse":
            return _with_stop_analysis(spec, out_dir, plan.summary)
        record: dict[str, Any] = {"config_hash": config_hash(spec.identity)}
        if spec.resume_longer:  # same settings except the stopping rule: continue from the checkpoint
            record["resume_hash"] = _resume_key(spec)[1]
        if dist_info().is_main:
            _enter_folder(plan, out_dir)
            write_json(out_dir / RUN_CONFIG, {**record, "optimizer": spec.optimizer, "lr": spec.lr, "seed": spec.seed,
                                              **spec.identity})
        barrier()
        return _train_run(spec, out_dir, resume=plan.action == "resume", progress=progress)


def _train_run(spec: RunSpec, out_dir: Path, *, resume: bool, progress: bool) -> dict[str, Any]:
    """Build the model, fit it (resuming when asked), analyse it and write ``summary.json`` (see :func:`run_one`)."""
    info = dist_info()
    summary_path = out_dir / SUMMARY
    model, initial = _initial_model(spec)
    head = {"config_hash": config_hash(spec.identity), **spec.summary_head, "optimizer": spec.optimizer,
            "lr": spec.lr, "seed": spec.seed}
    start = time.time()
    result = fit(model, spec.data, spec.train, out_dir, resume=resume, progress=progress,
                 keep_diverged=spec.on_diverged != "raise", **spec.fit_options)
    if result["diverged"] and spec.on_diverged == "record":  # counted in the table, not hidden; the others go on
        summary = {**head, "diverged": True, "error": result["error"], "test_acc": None, "test_acc_last": None,
                   "wall_seconds": time.time() - start, **spec.summary_tail, "analysis": None}
        if info.is_main:
            write_json(summary_path, summary)
        return summary
    # "best-epoch": a run that diverged in its first epoch has no trained model to analyse
    analyse = spec.analyse if not result["diverged"] or result["best_epoch"] > 0 else None
    if spec.train.fsdp:  # the analysis reads whole weights: a plain copy of the (validation-best) sharded model
        model = unsharded_copy(model, spec.build_model)
    summary: dict[str, Any] = {**head, **{k: v for k, v in result.items() if k not in ("history", "error")}}
    if spec.seconds_per_epoch:
        summary["seconds_per_epoch"] = result["train_seconds"] / max(1, int(result["epochs_run"] or 0))
    summary.update(wall_seconds=time.time() - start, n_parameters=sum(p.numel() for p in model.parameters()),
                   **spec.summary_tail, analysis=None)
    if analyse is not None:
        try:
            summary["analysis"] = analyse(model, write=info.is_main)
        except ValueError as exc:  # e.g. non-finite attention of a diverged run's best epoch: the run is kept
            if not result["diverged"]:
                raise
            summary["analysis_error"] = f"analysis skipped: {exc}"
        if isinstance((summary["analysis"] or {}).get("scalars"), dict):  # a results-table analysis
            summary["analysis"]["scalars"].update(weight_moves(model, initial))
    if info.is_main:
        write_json(summary_path, summary)
    return _with_stop_analysis(spec, out_dir, summary)


def _with_stop_analysis(spec: RunSpec, out_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """``summary`` with ``analysis_stop`` - the analysis's scalars (and Q/K/V moves) of the weights at the end of
    training, i.e. at the stopping rule - beside ``analysis`` (the validation-best weights, often far earlier:
    Adam's best epoch can be a sixth of its run). The paper analyses its models as trained to the rule.

    Computed from ``checkpoint.pt`` (read as weights only; no analysis files are written) for a finished run
    that has a results-table analysis and did not diverge, in a single process and without FSDP (its checkpoint
    is sharded); a run reused from before this entry existed gets it here, and its ``summary.json`` is
    rewritten with it. Anything else, or a checkpoint that cannot be read safely (one line printed):
    ``summary`` as it is."""
    analysis = summary.get("analysis")
    if "analysis_stop" in summary or spec.analyse is None or summary.get("diverged") or spec.train.fsdp \
            or not isinstance((analysis or {}).get("scalars"), dict) or dist_info().active \
            or not (out_dir / CHECKPOINT).is_file():
        return summary
    model, initial = _initial_model(spec)
    try:
        ckpt = load_checkpoint(out_dir / CHECKPOINT, required=("model", "epoch"))
    except CheckpointError as exc:  # a damaged final checkpoint: the run's results stand without this entry
        print(f"{out_dir.name}: no analysis at the stop ({exc})", flush=True)
        return summary
    if not is_state_dict(ckpt["model"]):
        return summary  # a sharded checkpoint's reference
    load_weights_into(model, ckpt["model"])
    scalars = dict(spec.analyse(model, write=False)["scalars"])
    scalars.update(weight_moves(model, initial))
    summary = {**summary, "analysis_stop": {"epoch": int(ckpt["epoch"]), "scalars": scalars}}
    write_json(out_dir / SUMMARY, summary)
    return summary


def _initial_model(spec: RunSpec) -> tuple[nn.Module, dict[str, list[torch.Tensor]]]:
    """The run's model as initialised (``build_model`` under ``seeded_init(seed)``) and copies of its attention
    weights (:func:`_attention_weights`), from which :func:`weight_moves` measures."""
    with seeded_init(spec.seed):
        model = spec.build_model()
    return model, _attention_weights(model)


def _attention_weights(model: nn.Module) -> dict[str, list[torch.Tensor]]:
    """Copies of the query, key and value projection weights of every attention layer, per kind."""
    from mirrorattn.models.layers import attention_layers

    layers = attention_layers(model)
    return {kind: [getattr(layer, f"{kind}_proj").weight.detach().clone() for layer in layers]
            for kind in ("q", "k", "v")}


def weight_moves(model: nn.Module, initial: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    """``{"q_move", "k_move", "v_move"}``: ||W - W0||_F / ||W0||_F of each kind over all attention layers, from
    the weights ``initial`` (:func:`_attention_weights` before training) to the model's (the validation-best)."""
    now = _attention_weights(model)
    return {f"{kind}_move": relative_change(now[kind], initial[kind]) for kind in ("q", "k", "v") if initial[kind]}


def _mean_std(values: list[float]) -> dict[str, float | None]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, "n": len(vals)}


def aggregate(summaries: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Mean and standard deviation (over seeds, ddof 1) of every reported number, per optimizer.

    Runs without a value (e.g. ``test_acc_last`` of a diverged run) are left out of that number's
    statistics; ``diverged_runs`` counts the runs whose loss became NaN/inf and ``stop_rule_runs`` those that
    stopped by reaching the training-accuracy rule (``stop_reason`` "train_acc ...").
    """
    keys = ("test_acc", "test_acc_last", "val_acc_best", "best_epoch", "epochs_run", "train_seconds",
            "samples_per_second")
    out: dict[str, Any] = {}
    for opt, runs in summaries.items():
        row = {k: _mean_std([r.get(k) for r in runs]) for k in keys}
        flat: dict[str, list[float]] = {}
        for r in runs:
            for k, v in (r.get("analysis") or {}).get("scalars", {}).items():
                flat.setdefault(k, []).append(v)
            for k, v in (r.get("analysis_stop") or {}).get("scalars", {}).items():  # at the stopping rule
                flat.setdefault(f"stop_{k}", []).append(v)
        row.update({k: _mean_std(v) for k, v in flat.items()})
        row["lr"] = runs[0]["lr"] if runs else None
        row["diverged_runs"] = sum(bool(r.get("diverged")) for r in runs)
        row["stop_rule_runs"] = sum(reached_stop_rule(r) for r in runs)
        out[opt] = row
    return out


def reached_stop_rule(summary: dict[str, Any]) -> bool:
    """Whether a run's summary says it stopped by reaching the training-accuracy rule (``stop_reason``
    "train_acc ... >= ...", :func:`mirrorattn.train.fit`), not at the epoch cap or by divergence."""
    return str(summary.get("stop_reason") or "").startswith("train_acc")


def write_results(
    out: Path, config: Any, data: dict[str, Any], summaries: dict[str, list[dict[str, Any]]],
    write_report: Callable[[Path, Any, dict[str, Any]], None],
) -> dict[str, Any]:
    """The results of a comparison (``config``, ``data``, ``aggregate``, ``runs``), written to
    ``out/results.json`` and, by ``write_report(out, config, results)``, ``results.md`` and figures
    (main process only)."""
    record = config.record() if isinstance(config, ClassificationConfig) else config
    results = {"config": record, "data": data, "aggregate": aggregate(summaries), "runs": summaries}
    if dist_info().is_main:
        write_json(out / "results.json", results)
        write_report(out, config, results)
    return results


def format_stat(stat: dict[str, Any] | None, scale: float = 1.0, digits: int = 2) -> str:
    """``"mean ± std"`` of an :func:`aggregate` entry, both times ``scale``; ``-`` without a value."""
    if not stat or stat.get("mean") is None:
        return "-"
    return f"{stat['mean'] * scale:.{digits}f} ± {stat['std'] * scale:.{digits}f}"
