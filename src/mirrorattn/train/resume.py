"""Where one :func:`~mirrorattn.train.fit` starts: fresh, or from its run folder's checkpoint.

The checkpoint (``checkpoint.pt``) and the validation-best weights (``best_model.pt``) are read with
``weights_only=True``; one that cannot be read so, is of other settings, or does not fit the model
leaves the run to start over (one line on stderr from the main process). Under FSDP the weights are
gathered on rank 0 and the model and optimizer state come from the sharded checkpoint
(:mod:`mirrorattn.train.fsdp`).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mirrorattn.train.checkpoint import CheckpointError, load_checkpoint, load_weights, set_rng_state
from mirrorattn.train.config import TrainConfig
from mirrorattn.train.fsdp import full_state_dict, is_fsdp, load_full_state_dict, load_sharded
from mirrorattn.train.param_groups import MultiOptimizer, build_optimizers

__all__ = ["BEST_MODEL", "CHECKPOINT", "HISTORY", "State", "load_weights_into", "start_state", "state_dict_cpu"]

CHECKPOINT = "checkpoint.pt"
BEST_MODEL = "best_model.pt"
HISTORY = "history.json"
#: what fit's checkpoint holds besides the version (its save_checkpoint payload and the RNG states)
_CHECKPOINT_KEYS = ("identity", "epoch", "model", "optimizer", "history", "best", "rng")


def state_dict_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights on the CPU; under FSDP gathered on rank 0 ({} elsewhere; every process must call it)."""
    if is_fsdp(model):
        return full_state_dict(model)
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def load_weights_into(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load what :func:`state_dict_cpu` gave (under FSDP: rank 0's full weights into every process's shards)."""
    if is_fsdp(model):
        load_full_state_dict(model, state)
    else:
        model.load_state_dict(state)


def _read_resume_state(out_dir: Path, identity: dict[str, Any], main: bool
                       ) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """The checkpoint and validation-best weights of ``out_dir``, both read with ``weights_only=True``.

    None (and one line on stderr from the main process: the run starts over) when either cannot be read
    safely - a checkpoint is not a finished result. ``ValueError`` when the checkpoint is of other settings.
    """
    ckpt_path = out_dir / CHECKPOINT
    try:
        ckpt = load_checkpoint(ckpt_path, required=_CHECKPOINT_KEYS)
        if ckpt.get("identity") != identity:
            raise ValueError(
                f"cannot resume {ckpt_path}: it was trained with different settings "
                f"({ckpt.get('identity')} vs {identity}); use a new output folder or start over"
            )
        best_path = out_dir / BEST_MODEL
        if not best_path.is_file():
            raise CheckpointError(f"weights file {best_path} is missing beside {ckpt_path}")
        best_state = load_weights(best_path)
    except CheckpointError as exc:
        if main:
            print(f"{exc}; training this run starts over from epoch 1", file=sys.stderr, flush=True)
        return None
    return ckpt, best_state


def _load_resume_state(model: nn.Module, optimizer: MultiOptimizer, ckpt: dict[str, Any],
                       best_state: dict[str, torch.Tensor], main: bool, path: Path) -> tuple | None:
    """Load ``ckpt`` into ``model``, ``optimizer`` and the RNGs; ``(history, best, stop_reason, epoch, best_state)``.

    None (one line on stderr from the main process) when its contents do not fit the model or optimizer
    (a checkpoint of plain types, but not of this run): the caller restores the fresh model.
    """
    try:
        if not load_sharded(path.parent, model, optimizer, ckpt):  # an FSDP run's sharded checkpoint, else:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
        history, best = list(ckpt["history"]), dict(ckpt["best"])
        resumed = (history, best, ckpt.get("stop_reason"), int(ckpt["epoch"]), best_state)
        set_rng_state(ckpt["rng"])
    except (RuntimeError, KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        if main:
            why = " ".join(str(exc).split())[:160]
            print(f"checkpoint {path} does not fit this run ({why}); training this run starts over from epoch 1",
                  file=sys.stderr, flush=True)
        return None
    return resumed


def start_state(model: nn.Module, optimizer: MultiOptimizer, config: TrainConfig, out_dir: Path,
                 identity: dict[str, Any], *, resume: bool, main: bool) -> tuple[MultiOptimizer, State]:
    """The optimizer and the state to train from: a fresh start, or the checkpoint's state when ``resume``
    and it can be read and fits the model (else a fresh start)."""
    fresh = State([], {"val_acc": -math.inf, "epoch": 0}, state_dict_cpu(model))
    restored = _read_resume_state(out_dir, identity, main) if resume else None
    if restored is None:
        return optimizer, fresh
    resumed = _load_resume_state(model, optimizer, *restored, main, out_dir / CHECKPOINT)
    if resumed is None:  # the checkpoint did not fit the model: back to the fresh model
        load_weights_into(model, fresh.best_state)
        return build_optimizers(model, config), fresh
    history, best, stop_reason, epoch, best_state = resumed
    return optimizer, State(history, best, best_state, stop_reason, epoch)


@dataclass
class State:
    """What one :func:`fit` has so far (what its checkpoint keeps): the history, the validation-best epoch
    and weights, why it stopped (None: it goes on) and the epochs done."""

    history: list[dict[str, Any]]
    best: dict[str, Any]  #: ``{"val_acc", "epoch"}`` (1-based; 0: none yet)
    best_state: dict[str, torch.Tensor]  #: the validation-best weights (the initial ones before any epoch)
    stop_reason: str | None = None
    epoch: int = 0  #: epochs completed
    diverged: Exception | None = None  #: the NonFiniteLossError that ended it (``fit(keep_diverged=True)``)
