"""The training configuration shared by the text and vision experiments."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["DEVICE_TYPES", "LR_SCHEDULES", "RESUME_NEUTRAL_FIELDS", "SNAPSHOT_MODES", "TrainConfig", "check_device",
           "check_optimizer"]

#: accepted values of ``TrainConfig.lr_schedule``
LR_SCHEDULES = ("constant", "cosine")
#: accepted values of ``TrainConfig.snapshots`` (:func:`mirrorattn.train.checkpoint.snapshot_due`)
SNAPSHOT_MODES = ("none", "log", "every")
#: device types ``TrainConfig.device`` may name (besides "auto"), with an optional index: "cuda:1"
DEVICE_TYPES = ("cpu", "cuda", "mps")


def check_device(device: str) -> None:
    """``ValueError`` (one line) unless ``device`` is "auto", "cpu", "cuda", "cuda:N" or "mps" and is present here.

    Parsed with :class:`torch.device`; "cuda" (or "cuda:N") needs CUDA with more than N devices, "mps" Apple's
    Metal backend.
    """
    import torch

    hint = "use auto, cpu, cuda, cuda:N or mps"
    if not isinstance(device, str):
        raise ValueError(f"device must be a string ({hint}), got {device!r}")
    if device == "auto":
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        dev = None
    if dev is None or dev.type not in DEVICE_TYPES or device.strip() != device:
        raise ValueError(f"device {device!r} is not a device name; {hint}")
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {device!r} asked for, but CUDA is not available on this machine; "
                             "use --device cpu or auto")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device {device!r} asked for, but this machine has {count} CUDA device(s) "
                             f"(cuda:0 to cuda:{count - 1})")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} asked for, but Apple's MPS backend is not available here; "
                         "use --device cpu or auto")


def check_optimizer(spec: str, lr: float) -> None:
    """``ValueError`` (one line) unless ``spec`` names a registered optimizer with arguments it accepts.

    Builds the optimizer on a one-element dummy parameter (cheap), so that bad arguments (``lp-md:p=0.5``,
    ``adam:foo=1``) are found before any training.
    """
    import torch

    from mirrorattn.optim.registry import build_optimizer

    try:
        build_optimizer(spec, [torch.zeros(1, requires_grad=True)], lr=float(lr))
    except (ValueError, TypeError, KeyError) as exc:  # TypeError, KeyError: a factory's own complaint
        message = str(exc).strip("'\"")
        raise ValueError(message if repr(spec) in message else f"optimizer {spec!r}: {message}") from None


@dataclass
class TrainConfig:
    """How :func:`mirrorattn.train.fit` trains a classifier.

    Optimizer: ``optimizer`` is a registry spec of :mod:`mirrorattn.optim` ("sgd", "adam",
    "adamw", "lp-md:1.1", ...). With ``md_scope="all"`` it updates every parameter (as the
    authors). With ``md_scope="attention"`` it updates only the query/key projection weights
    (:func:`mirrorattn.models.layers.qk_parameters`) and ``other_optimizer`` ("adamw" or "sgd",
    step ``other_lr``, default ``lr``) updates the rest; the two are stepped together.

    Loss: binary cross-entropy on one logit (models with output (B,)) or cross-entropy (output
    (B, C)); ``loss_reduction`` "mean" over the global batch or "sum" (the authors' summed BCE,
    whose gradient scales with the batch size).

    Step-size schedule (:func:`lr_factor`): ``lr_schedule`` "constant" or "cosine" (decay to 0 over
    all ``epochs``), after a linear warm-up over the first ``warmup_epochs`` (a fraction is
    allowed); the factor multiplies every group's step, of both optimizers. It depends only on the
    step index, so resumed runs follow it exactly; with a schedule, ``epochs`` is part of the run's
    identity (raising it would change the schedule).
    """

    optimizer: str = "adam"  #: the optimizer, a registry spec of mirrorattn.optim ("sgd", "adam", "lp-md:1.1" ...)
    lr: float = 1e-3  #: its step size
    #: "all" (the optimizer trains every parameter) or "attention" (only the query / key weights)
    md_scope: str = "all"
    other_optimizer: str = "adamw"  #: optimizer of the other parameters when md_scope = "attention"
    other_lr: float | None = None  #: step of other_optimizer (None: lr)
    weight_decay: float = 0.0  #: decoupled weight decay (0: none, as the paper)
    epochs: int = 10  #: maximum number of epochs (a cap when a stopping rule is set)
    batch_size: int = 64  #: training samples per step, the GLOBAL batch size (split across DDP ranks)
    eval_batch_size: int = 256  #: samples per evaluation batch and process (memory only; no effect on results)
    grad_clip: float | None = None  #: clip the global gradient l2 norm to this (None: off)
    amp: bool = False  #: bfloat16 autocast of the forward pass (GPUs)
    loss_reduction: str = "mean"  #: "mean" or "sum" of the loss over the global batch ("sum": the authors' text loss)
    seed: int = 0  #: data order, dropout and augmentation (model init is seeded by the caller)
    stop_train_acc: float | None = 0.995  #: stop once an epoch's training accuracy reaches this, in (0, 1]
    patience: int | None = None  #: stop after this many epochs without a better validation accuracy
    device: str = "auto"  #: auto (cuda if present, else cpu), cpu, cuda, cuda:N or mps
    log_every: int = 20  #: progress-bar refresh interval in batches
    eval_test_every_epoch: bool = False  #: also evaluate the test split each epoch (curves)
    lr_schedule: str = "constant"  #: "constant" or "cosine" (to 0 at the end of the last epoch)
    warmup_epochs: float = 0.0  #: linear warm-up from 0 over this many epochs (fractions allowed)
    #: pad each batch only to its longest real sequence (models with ``trim_padding``, e.g. the text
    #: transformer; exact: padded keys are masked), in training and evaluation; in training on one process
    #: also length groups inside each batch (models with ``group_lengths``: each group padded to its own
    #: longest; the same outputs up to float rounding, other dropout draws)
    trim_padding: bool = True
    #: a sparse gradient for the model's ``sparse_gradient_modules()`` (the token embedding) where the
    #: optimizer updates it exactly (SGD without momentum and weight decay, l_p-MD without weight decay
    #: and normalisation), one process, no gradient clipping; dense otherwise
    sparse_embedding: bool = True
    #: 0: off. k >= 2: each epoch's shuffled order is cut into windows of k batches, each window sorted
    #: by sequence length and cut into batches, the batches then shuffled - fewer padded tokens per
    #: batch, but other batches than without it (part of the run's identity; needs ``sequence_lengths``)
    length_buckets: int = 0
    #: model weights kept for later analysis in ``snapshots/epoch_NNNN.pt`` (:mod:`mirrorattn.train.checkpoint`):
    #: "none", "log" (the initial weights, epochs 1-4, 6, 8, 12, 16, 24, ... (2^k and 3 * 2^k) and the last)
    #: or "every" (the initial weights and every epoch); no effect on the result, so not part of the identity
    snapshots: str = "none"
    #: shard the model's parameters, gradients and optimizer state across the torchrun processes with FSDP2
    #: (``fully_shard``, :mod:`mirrorattn.train.fsdp`) instead of DDP's replicas, with a sharded
    #: ``torch.distributed.checkpoint`` checkpoint; needs torchrun (a one-line error without it)
    fsdp: bool = False

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field and the allowed values."""
        if self.md_scope not in ("all", "attention"):
            raise ValueError(f"md_scope must be 'all' or 'attention', got {self.md_scope!r}")
        if self.other_optimizer not in ("adamw", "sgd", "adam"):
            raise ValueError(f"other_optimizer must be 'adamw', 'adam' or 'sgd', got {self.other_optimizer!r}")
        if self.loss_reduction not in ("mean", "sum"):
            raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {self.loss_reduction!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.other_lr is not None and not self.other_lr > 0:
            raise ValueError(f"other_lr must be positive, got {self.other_lr}")
        for name in ("epochs", "batch_size", "eval_batch_size", "log_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be positive or None, got {self.grad_clip}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.stop_train_acc is not None and not 0 < self.stop_train_acc <= 1:
            raise ValueError(f"stop_train_acc must be in (0, 1] or None, got {self.stop_train_acc}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be a positive integer or None, got {self.patience}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        for name in ("trim_padding", "sparse_embedding", "fsdp"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if isinstance(self.length_buckets, bool) or int(self.length_buckets) != self.length_buckets \
                or self.length_buckets < 0 or self.length_buckets == 1:
            raise ValueError(f"length_buckets must be 0 (off) or an integer >= 2, got {self.length_buckets!r}")
        if not (math.isfinite(self.warmup_epochs) and 0 <= self.warmup_epochs <= self.epochs):
            raise ValueError(f"warmup_epochs must be in [0, epochs = {self.epochs}], got {self.warmup_epochs}")
        if self.snapshots not in SNAPSHOT_MODES:
            raise ValueError(f"snapshots must be one of {', '.join(SNAPSHOT_MODES)}, got {self.snapshots!r}")
        check_device(self.device)
        check_optimizer(self.optimizer, self.lr)

    def lr_factor(self, step: int, steps_per_epoch: int) -> float:
        """Multiplier of the step size at global step ``step`` (0-based) of the run."""
        warm = self.warmup_epochs * steps_per_epoch
        if step < warm:
            return (step + 1) / warm
        if self.lr_schedule == "constant":
            return 1.0
        total = self.epochs * steps_per_epoch
        t = min(1.0, (step - warm) / max(1.0, total - warm))
        return 0.5 * (1.0 + math.cos(math.pi * t))

    def identity(self) -> dict[str, Any]:
        """The fields that define the training result (what a resumed run must share)."""
        d = dataclasses.asdict(self)
        for name in RESUME_NEUTRAL_FIELDS:
            if name == "epochs" and self.lr_schedule != "constant":
                continue  # the schedule's length
            d.pop(name, None)
        if self.lr_schedule == "constant" and not self.warmup_epochs:
            del d["lr_schedule"], d["warmup_epochs"]  # runs from before schedules existed still resume
        for name, neutral in _FAST_PATH_DEFAULTS.items():
            if d.get(name) == neutral and type(d.get(name)) is type(neutral):
                del d[name]  # the fast path's defaults: the runs from before it keep their identity and hash
        return d


#: the training-speed fields at the values left out of :meth:`TrainConfig.identity` (trimming and sparse
#: gradients give the old results up to float rounding; no length buckets is the old batch composition;
#: no FSDP the runs from before it - an FSDP run differs by float rounding but resumes only from its own
#: sharded checkpoint, so fsdp = True is part of its identity)
_FAST_PATH_DEFAULTS: dict[str, Any] = {"trim_padding": True, "sparse_embedding": True, "length_buckets": 0,
                                       "fsdp": False}

#: fields that may differ between a run and its resumption (more epochs, logging, device)
RESUME_NEUTRAL_FIELDS: tuple[str, ...] = (
    "epochs", "log_every", "device", "eval_batch_size", "stop_train_acc", "patience", "snapshots"
)
