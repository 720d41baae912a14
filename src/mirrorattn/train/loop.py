"""One training loop for every classifier (text and images), single process or DDP.

:func:`fit` trains ``model`` on in-memory tensors (:class:`TrainData`), selects the epoch on the
validation split only, and reports test accuracy at that epoch (``test_acc``) and at the last
epoch (``test_acc_last``). Everything that is random in training depends only on the config's
seed and the epoch: the data order, the dropout masks (the global torch RNG is reseeded at the
start of every epoch) and augmentation. A run resumed from its per-epoch checkpoint therefore
ends exactly where an uninterrupted run ends.

DDP: under ``torchrun`` every process draws the same global batch and takes its own contiguous
slice of it; each process's loss is scaled so that DDP's gradient averaging gives exactly the
gradient of the global batch's loss (mean or sum), so N processes x (batch / N) follow the
same path as one process on the whole batch (up to floating-point summation order; dropout
masks differ, so compare with dropout 0).

FSDP2 (``config.fsdp``, :mod:`mirrorattn.train.fsdp`): the model is sharded with ``fully_shard`` instead
of wrapped in DDP (the same batches and loss scaling: its reduce-scatter averages as DDP does), the
checkpoint's model and optimizer state are sharded ``torch.distributed.checkpoint`` files, and the
best weights and snapshots are gathered on rank 0.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from mirrorattn.io import torch_save, write_json
from mirrorattn.train.checkpoint import (
    derive_seed,
    save_checkpoint,
    save_snapshot,
    snapshot_due,
)
from mirrorattn.train.config import TrainConfig
from mirrorattn.train.distributed import DistInfo, all_reduce_sum, barrier, init_distributed, resolve_device
from mirrorattn.train.fast import (
    bucketed_batches,
    coalesce_sparse_grads,
    enable_length_groups,
    enable_sparse_gradients,
    input_trimmer,
)
from mirrorattn.train.fsdp import (
    check_fsdp,
    drop_old_sharded,
    is_fsdp,
    save_sharded,
    shard_model,
)
from mirrorattn.train.param_groups import MultiOptimizer, build_optimizers
from mirrorattn.train.resume import (
    BEST_MODEL,
    CHECKPOINT,
    HISTORY,
    State,
    load_weights_into,
    start_state,
    state_dict_cpu,
)

__all__ = ["Augment", "NonFiniteLossError", "Split", "TrainData", "evaluate", "fit", "loss_and_correct"]

#: ``augment(inputs, generator) -> inputs``: a random transform of one training batch (CPU tensors)
Augment = Callable[[tuple[torch.Tensor, ...], torch.Generator], tuple[torch.Tensor, ...]]



class NonFiniteLossError(ValueError):
    """The training loss became NaN or infinite (the message names the epoch and batch)."""


@dataclass
class Split:
    """One split: ``inputs`` a tuple of tensors with the same first dimension N (text: (ids, mask);
    images: (images,)), ``labels`` (N,) int64 class ids."""

    inputs: tuple[torch.Tensor, ...]
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if isinstance(self.inputs, torch.Tensor):
            self.inputs = (self.inputs,)
        self.inputs = tuple(self.inputs)
        n = len(self.labels)
        if self.labels.ndim != 1:
            raise ValueError(f"labels must have shape (N,), got {tuple(self.labels.shape)}")
        if not self.inputs or any(t.shape[0] != n for t in self.inputs):
            shapes = [tuple(t.shape) for t in self.inputs]
            raise ValueError(f"every input must have the labels' length {n} as first dimension, got {shapes}")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class TrainData:
    """Training, validation (model selection) and optional test splits."""

    train: Split
    val: Split
    test: Split | None = None

    def __post_init__(self) -> None:
        if len(self.train) == 0 or len(self.val) == 0:
            sizes = (len(self.train), len(self.val))
            raise ValueError(f"training and validation splits must be non-empty, got sizes {sizes}")


def loss_and_correct(out: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample loss (B,) and correctness (B,) bool.

    ``out`` (B,): one logit, binary cross-entropy with labels in {0, 1}, prediction ``out > 0``.
    ``out`` (B, C): logits, cross-entropy, prediction ``argmax``. Computed in float32 or wider.
    """
    if out.dtype in (torch.float16, torch.bfloat16):
        out = out.float()
    if out.ndim == 1:
        if labels.numel() and int(labels.max()) > 1:
            raise ValueError("a model with one output logit needs labels in {0, 1}; give it num_classes outputs")
        y = labels.to(out.dtype)
        return F.binary_cross_entropy_with_logits(out, y, reduction="none"), (out > 0) == labels.bool()
    if out.ndim == 2:
        return F.cross_entropy(out, labels, reduction="none"), out.argmax(dim=-1) == labels
    raise ValueError(f"model output must have shape (B,) or (B, C), got {tuple(out.shape)}")


def _autocast(device: torch.device, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _shard(n: int, info: DistInfo) -> slice:
    """This process's contiguous slice of ``n`` items (sizes differ by at most one)."""
    base, extra = divmod(n, info.world_size)
    start = info.rank * base + min(info.rank, extra)
    return slice(start, start + base + (1 if info.rank < extra else 0))


@torch.no_grad()
def evaluate(
    model: nn.Module, split: Split, config: TrainConfig, device: torch.device, info: DistInfo | None = None
) -> dict[str, float]:
    """Mean loss and accuracy (fraction) of ``model`` on ``split`` (each process a shard, summed)."""
    info = info or DistInfo()
    was_training = model.training
    model.eval()
    sl = _shard(len(split), info)
    idx = torch.arange(len(split))[sl]
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    trim = input_trimmer(model, config.trim_padding)
    rows = math.ceil(len(split) / info.world_size) if is_fsdp(model) else len(idx)  # FSDP: as many forwards each
    for start in range(0, rows, config.eval_batch_size):
        b = idx[start : start + config.eval_batch_size]
        pad = len(b) == 0  # a process with a batch fewer than rank 0: one sample, not counted
        b = torch.arange(1) if pad else b
        inputs = tuple(t[b] for t in split.inputs)
        inputs = tuple(t.to(device, non_blocking=True) for t in (trim(*inputs) if trim else inputs))
        labels = split.labels[b].to(device, non_blocking=True)
        with _autocast(device, config.amp):
            out = model(*inputs)
        loss, correct = loss_and_correct(out, labels)
        if not pad:
            totals += torch.stack([loss.double().sum(), correct.double().sum(), torch.tensor(len(b), device=device)])
    all_reduce_sum(totals)
    model.train(was_training)
    n = max(1.0, float(totals[2]))
    return {"loss": float(totals[0]) / n, "acc": float(totals[1]) / n}


def _progress_bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=True, dynamic_ncols=True)


def fit(
    model: nn.Module,
    data: TrainData,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    augment: Augment | None = None,
    progress: bool = True,
    keep_diverged: bool = False,
) -> dict[str, Any]:
    """Train ``model`` (a module mapping ``*inputs`` to logits (B,) or (B, C)) and return a summary.

    Files in ``out_dir`` (rank 0 only, all atomic): ``checkpoint.pt`` after every epoch (model,
    optimizer(s), RNG states, epoch, best-so-far, history), ``best_model.pt`` (validation-best
    weights), ``history.json`` (one dict per epoch: train/val loss and accuracy, seconds,
    samples/s, lr), ``fit_result.json`` (what is returned, without the model). With ``resume=True``
    an existing checkpoint is continued (its training settings must match ``config`` except the fields
    in :data:`~mirrorattn.train.config.RESUME_NEUTRAL_FIELDS`, so ``epochs`` can be raised);
    otherwise training starts over. Both files are read with ``weights_only=True``; one that cannot
    be read so (damaged, crafted, or of checkpoint version 1) is not loaded: one line on stderr says
    so and training starts over. The files are for resuming and later analysis: callers take what
    they need from the returned summary.

    Returns: ``test_acc`` (test accuracy of the validation-best epoch, a fraction; None without a
    test split), ``test_acc_last``, ``test_loss``, ``val_acc_best``, ``val_acc_last``,
    ``val_loss_best`` (at the best epoch), ``train_acc_last``, ``best_epoch`` (1-based; 0: none),
    ``epochs_run``, ``stop_reason``, ``train_seconds`` (training only, all epochs),
    ``samples_per_second``, ``history``, ``diverged``. On return the model holds the validation-best weights.

    A loss that becomes NaN/inf raises :class:`NonFiniteLossError`, unless ``keep_diverged``: then
    training ends there and the run is a result like any other, of its validation-best completed
    epoch, with ``diverged`` True, ``error`` (the message), ``stop_reason`` "diverged: <message>"
    and ``test_acc_last`` None (no test accuracy at all when no epoch completed). ``ValueError`` for bad input.
    """
    config.validate()
    run = _setup(model, data, config, Path(out_dir), augment, show=progress)
    state = _restore(run, resume)
    sparse = enable_sparse_gradients(model, run.optimizer, enabled=config.sparse_embedding and not config.fsdp,
                                     world_size=run.info.world_size, grad_clip=config.grad_clip)
    run.sparse_params = [m.weight for m in sparse]
    grouped = enable_length_groups(model, enabled=config.trim_padding and not config.fsdp,
                                   world_size=run.info.world_size)
    try:
        _save_initial_snapshot(run, state)
        while state.stop_reason is None and state.epoch < config.epochs:
            row = _train_epoch(run, state.epoch)
            _evaluate_epoch(run, row)
            _record_epoch(run, state, row)
    except NonFiniteLossError as exc:
        if not keep_diverged:
            raise
        state.diverged, state.stop_reason = exc, f"diverged: {exc}"
    finally:
        for m in sparse:
            m.sparse = False
        for m in grouped:
            m.group_lengths = False
    return _finish(run, state)


def _setup(model: nn.Module, data: TrainData, config: TrainConfig, out_dir: Path, augment: Augment | None, *,
           show: bool) -> _Run:
    """Join the process group, place (or shard) the model, build its optimizer(s) and the DDP wrapper."""
    info = init_distributed(config.device)
    device = resolve_device(config.device, info.local_rank)
    model.to(device)
    if config.fsdp:  # shard before the optimizer is built: it holds the sharded (DTensor) parameters
        check_fsdp(info)
        shard_model(model)
    optimizer: MultiOptimizer = build_optimizers(model, config)
    base_lrs = [float(g["lr"]) for g in optimizer.param_groups]  # before a checkpoint's lrs are loaded
    return _Run(model, model, optimizer, config, data, device, info, augment, show and info.is_main, base_lrs,
                scheduled=config.lr_schedule != "constant" or config.warmup_epochs > 0, out_dir=out_dir,
                identity=config.identity(), trim=input_trimmer(model, config.trim_padding),
                lengths=_train_lengths(model, data, config))


def _restore(run: _Run, resume: bool) -> State:
    """The state to train from (the checkpoint's when ``resume`` and one fits, :func:`start_state`); wraps the
    model in DDP under torchrun without FSDP (after the restore: the wrapper broadcasts rank 0's weights)."""
    resume = resume and (run.out_dir / CHECKPOINT).is_file()
    run.optimizer, state = start_state(run.model, run.optimizer, run.config, run.out_dir, run.identity,
                                        resume=resume, main=run.info.is_main)
    if run.info.world_size > 1 and not run.config.fsdp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        run.train_model = DDP(run.model, device_ids=[run.device] if run.device.type == "cuda" else None)
    return state


def _save_initial_snapshot(run: _Run, state: State) -> None:
    """The initial weights as snapshot 0, when snapshots are kept and training starts from the beginning."""
    if state.epoch == 0 and state.stop_reason is None and snapshot_due(run.config.snapshots, 0, last=False):
        initial = state_dict_cpu(run.model) if run.info.is_main or is_fsdp(run.model) else {}  # FSDP: all gather
        if run.info.is_main:
            save_snapshot(run.out_dir, 0, initial)


def _record_epoch(run: _Run, state: State, row: dict[str, Any]) -> None:
    """Add the finished epoch ``row`` to ``state`` (a better validation accuracy: the new best weights), apply
    the stopping rule, and write the epoch's files: best weights, history, snapshot, checkpoint."""
    config, model, main, out_dir = run.config, run.model, run.info.is_main, run.out_dir
    epoch = state.epoch
    state.history.append(row)
    state.epoch = epoch + 1
    improved = row["val_acc"] > state.best["val_acc"]
    if improved:
        state.best = {"val_acc": row["val_acc"], "epoch": epoch + 1}
        state.best_state = state_dict_cpu(model)
    state.stop_reason = _stop_reason(config, row, epoch, state.best)
    last = state.stop_reason is not None or epoch + 1 == config.epochs
    snap = None
    if snapshot_due(config.snapshots, epoch + 1, last) and (main or is_fsdp(model)):
        snap = state_dict_cpu(model)  # FSDP: every process gathers
    sharded = save_sharded(out_dir, epoch + 1, model, run.optimizer) if is_fsdp(model) else None  # every process
    if main:
        if improved:
            torch_save(out_dir / BEST_MODEL, state.best_state)
        write_json(out_dir / HISTORY, state.history)
        if snap is not None:  # before the checkpoint: a resume never skips it
            save_snapshot(out_dir, epoch + 1, snap)
        save_checkpoint(out_dir / CHECKPOINT, identity=run.identity, epoch=epoch + 1,
                        model=sharded or state_dict_cpu(model), optimizer=sharded or run.optimizer.state_dict(),
                        history=state.history, best=state.best, stop_reason=state.stop_reason)
    if sharded:
        drop_old_sharded(out_dir, sharded, run.info)
    if run.show:
        print(f"epoch {epoch + 1}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f} | "
              f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f} | {row['samples_per_second']:.0f} samples/s",
              flush=True)
    barrier()


def _train_lengths(model: nn.Module, data: TrainData, config: TrainConfig) -> torch.Tensor | None:
    """The training samples' sequence lengths (N,) for ``length_buckets`` (None when it is off)."""
    if not config.length_buckets:
        return None
    lengths = getattr(model, "sequence_lengths", None)
    if not callable(lengths):
        raise ValueError(f"length_buckets = {config.length_buckets} needs a model with sequence_lengths(*inputs) "
                         f"(e.g. TextTransformer); {type(model).__name__} has none")
    return lengths(*data.train.inputs).cpu()


@dataclass
class _Run:
    """What every epoch of one :func:`fit` needs (built once, after the resume)."""

    model: nn.Module
    train_model: nn.Module  #: ``model`` or its DDP wrapper
    optimizer: MultiOptimizer
    config: TrainConfig
    data: TrainData
    device: torch.device
    info: DistInfo
    augment: Augment | None
    show: bool  #: progress bars and epoch lines (main process, progress on)
    base_lrs: list[float]  #: each group's step before any schedule
    scheduled: bool  #: a warm-up or a non-constant schedule
    out_dir: Path = Path(".")  #: the run's files (written by the main process)
    identity: dict[str, Any] = dataclasses.field(default_factory=dict)  #: ``config.identity()`` (the checkpoint's)
    trim: Callable[..., tuple[torch.Tensor, ...]] | None = None  #: the model's ``trim_padding`` (if on)
    lengths: torch.Tensor | None = None  #: training sequence lengths (``length_buckets`` on)
    sparse_params: list[torch.Tensor] = dataclasses.field(default_factory=list)  #: weights with sparse gradients


def _non_finite(run: _Run, epoch: int, step: int, what: str, advice: str, bar: Any) -> NonFiniteLossError:
    """The error "``what`` at epoch E, batch B (optimizer, lr): ``advice``" (0-based ``epoch``, ``step``)."""
    if bar is not None:
        bar.close()
    c = run.config
    return NonFiniteLossError(f"{what} at epoch {epoch + 1}, batch {step + 1} (optimizer {c.optimizer}, lr {c.lr:g}): "
                              f"{advice}")


def _train_step(run: _Run, epoch: int, step: int, steps: int, idx: torch.Tensor, bar: Any) -> torch.Tensor:
    """One optimizer step on the global batch ``idx``; returns its (loss sum, correct, count), summed over processes."""
    c, info, device = run.config, run.info, run.device
    inputs = tuple(t[idx] for t in run.data.train.inputs)
    if run.augment is not None:
        gen = torch.Generator().manual_seed(derive_seed(c.seed, epoch, step, "augment"))
        inputs = tuple(run.augment(inputs, gen))
    sl = _shard(len(idx), info)
    inputs = tuple(t[sl] for t in inputs)
    inputs = tuple(t.to(device, non_blocking=True) for t in (run.trim(*inputs) if run.trim else inputs))
    labels = run.data.train.labels[idx][sl].to(device, non_blocking=True)
    with _autocast(device, c.amp):
        out = run.train_model(*inputs)
    per_sample, correct = loss_and_correct(out, labels)
    local_sum = per_sample.sum()
    scale = info.world_size / (len(idx) if c.loss_reduction == "mean" else 1)
    stats = torch.stack([local_sum.detach().double(), correct.double().sum(), torch.tensor(
        float(len(labels)), dtype=torch.float64, device=device)])
    stats = all_reduce_sum(stats).cpu()  # reduced on the device (nccl needs CUDA tensors)
    if not math.isfinite(float(stats[0])):
        raise _non_finite(run, epoch, step, f"training loss became {float(stats[0])}", "lower the learning rate, set a "
                          "gradient clip (--grad-clip), or switch off mixed precision", bar)
    if run.scheduled:
        factor = c.lr_factor(epoch * steps + step, steps)
        for group, base in zip(run.optimizer.param_groups, run.base_lrs):
            group["lr"] = base * factor
    run.optimizer.zero_grad(set_to_none=True)
    (local_sum * scale).backward()
    if run.sparse_params:
        coalesce_sparse_grads(run.sparse_params)
    if c.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), c.grad_clip)
    try:
        run.optimizer.step()
    except FloatingPointError as exc:  # e.g. mirrorattn.optim.NonFiniteGradientError
        raise _non_finite(run, epoch, step, "non-finite gradient or update",
                          f"{exc}; lower the learning rate or set --grad-clip", bar) from None
    return stats


def _train_epoch(run: _Run, epoch: int) -> dict[str, Any]:
    """Train one epoch (seeded order and dropout) and return its history row without the validation entries."""
    c, info = run.config, run.info
    steps = math.ceil(len(run.data.train) / c.batch_size)
    torch.manual_seed(derive_seed(c.seed, epoch, info.rank, "dropout"))
    order = torch.randperm(len(run.data.train), generator=torch.Generator().manual_seed(
        derive_seed(c.seed, epoch, "order")))
    run.model.train()
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count (global)
    bar = _progress_bar(steps, f"epoch {epoch + 1}/{c.epochs}", run.show)
    if run.lengths is not None:
        batches = bucketed_batches(order, c.batch_size, run.lengths, c.length_buckets,
                                   torch.Generator().manual_seed(derive_seed(c.seed, epoch, "buckets")))
    else:
        batches = list(order.split(c.batch_size))
    t0 = time.perf_counter()
    for step in range(steps):
        idx = batches[step]
        if len(idx) < info.world_size:
            continue  # a last batch too small to give every process a sample
        totals += _train_step(run, epoch, step, steps, idx, bar)
        if bar is not None:
            bar.update(1)
            if (step + 1) % c.log_every == 0 or step + 1 == steps:
                seconds = time.perf_counter() - t0
                bar.set_postfix(loss=f"{float(totals[0] / totals[2]):.4f}", acc=f"{float(totals[1] / totals[2]):.4f}",
                                sps=f"{float(totals[2]) / max(seconds, 1e-9):.0f}", refresh=False)
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    count = max(1.0, float(totals[2]))
    return {"epoch": epoch + 1, "train_loss": float(totals[0]) / count, "train_acc": float(totals[1]) / count,
            "train_seconds": seconds, "samples_per_second": count / max(seconds, 1e-9), "lr": c.lr,
            "lr_last": float(run.optimizer.param_groups[0]["lr"])}  # lr_last: after any schedule


def _evaluate_epoch(run: _Run, row: dict[str, Any]) -> dict[str, float]:
    """Add the validation (and, if asked, test) loss and accuracy to ``row``; return the validation ones."""
    val = evaluate(run.model, run.data.val, run.config, run.device, run.info)
    row.update(val_loss=val["loss"], val_acc=val["acc"])
    if run.config.eval_test_every_epoch and run.data.test is not None:
        test = evaluate(run.model, run.data.test, run.config, run.device, run.info)
        row.update(test_loss=test["loss"], test_acc=test["acc"])
    return val


def _stop_reason(config: TrainConfig, row: dict[str, Any], epoch: int, best: dict[str, Any]) -> str | None:
    """Why training stops after ``epoch`` (0-based): the training-accuracy rule or the patience; None: go on."""
    if config.stop_train_acc is not None and row["train_acc"] >= config.stop_train_acc:
        return f"train_acc {row['train_acc']:.4f} >= {config.stop_train_acc}"
    if config.patience is not None and epoch + 1 - best["epoch"] >= config.patience:
        return f"no better validation accuracy for {config.patience} epochs"
    return None


def _finish(run: _Run, state: State) -> dict[str, Any]:
    """:func:`fit`'s result (also ``fit_result.json``); loads the validation-best weights into the model and
    measures the test split (at the last epoch too, unless the run diverged: its last weights are not finite)."""
    history, best = state.history, state.best
    seconds = sum(r["train_seconds"] for r in history)
    at_best, last = (history[best["epoch"] - 1] if best["epoch"] > 0 else {}), (history[-1] if history else {})
    result: dict[str, Any] = {
        "test_acc": None, "test_acc_last": None, "test_loss": None,
        "val_acc_best": best["val_acc"] if history else None, "val_acc_last": last.get("val_acc"),
        "val_loss_best": at_best.get("val_loss"), "train_acc_last": last.get("train_acc"),
        "best_epoch": best["epoch"], "epochs_run": len(history),
        "stop_reason": state.stop_reason or ("max_epochs" if history else None),
        "train_seconds": seconds,
        "samples_per_second": sum(r["train_seconds"] * r["samples_per_second"] for r in history) / max(1e-9, seconds)
        if history else None,
        "history": copy.deepcopy(history),
        "diverged": state.diverged is not None,
    }
    if state.diverged is not None:
        result["error"] = str(state.diverged)
    test = run.data.test
    test_last = None
    if test is not None and state.diverged is None:
        test_last = evaluate(run.model, test, run.config, run.device, run.info)
        result["test_acc_last"] = test_last["acc"]
    load_weights_into(run.model, state.best_state)
    if test is not None and (state.diverged is None or best["epoch"] > 0):
        last_is_best = best["epoch"] == len(history) and test_last is not None
        at_best_test = test_last if last_is_best else evaluate(run.model, test, run.config, run.device, run.info)
        result.update(test_acc=at_best_test["acc"], test_loss=at_best_test["loss"])
    if run.info.is_main:
        write_json(run.out_dir / "fit_result.json", result)
    return result
