"""FSDP2 for the training loop: sharding a model with ``fully_shard``, its sharded checkpoint, its full weights.

With ``TrainConfig.fsdp`` under ``torchrun`` every block of the model's ``blocks`` (the text transformer's
and the ViT's ``nn.ModuleList``) and then the model itself are sharded with
``torch.distributed.fsdp.fully_shard``: each process holds a shard of every parameter (DTensors),
gathered for a block's forward and backward, and the gradients are reduce-scattered (averaged) instead of
DDP's all-reduce. The optimizer is built on the sharded parameters (``LpMirrorDescent`` steps each shard,
:mod:`mirrorattn.optim._sharded`).

Checkpoints: every process writes its shards of the model and optimizer state
(``torch.distributed.checkpoint.state_dict.get_state_dict``, saved with ``torch.distributed.checkpoint``)
to ``checkpoint_dcp/epoch_NNNN/`` in the run folder; ``checkpoint.pt`` (rank 0) holds the rest (history,
best epoch, RNG states) and names that folder, so it is the one file whose atomic write makes an epoch's
checkpoint current. Older epoch folders are removed once a newer one is named. The validation-best
weights and snapshots are gathered into one full state dict on rank 0 (``best_model.pt`` reads as
without FSDP).

Without ``torchrun`` (no process group), ``fsdp=True`` is a one-line ``ValueError``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from mirrorattn.train.distributed import DistInfo, barrier

__all__ = ["SHARDED_DIR", "check_fsdp", "full_state_dict", "is_fsdp", "load_full_state_dict", "load_sharded",
           "save_sharded", "shard_model", "unsharded_copy"]

#: folder of the sharded checkpoints in a run folder (one ``epoch_NNNN`` subfolder per kept epoch)
SHARDED_DIR = "checkpoint_dcp"
#: the key of ``checkpoint.pt``'s model and optimizer entries under FSDP: the sharded folder, relative to the run
_MARK = "sharded_checkpoint"


def check_fsdp(info: DistInfo) -> None:
    """``ValueError`` (one line) unless a process group is active (the process was started by ``torchrun``)."""
    if not info.active:
        raise ValueError("fsdp (--fsdp) shards the model across torchrun processes; start the command with "
                         "torchrun --nproc_per_node N -m mirrorattn.torchrun ... (one process trains without it)")


def shard_model(model: nn.Module) -> nn.Module:
    """``fully_shard`` every module of each ``nn.ModuleList`` named ``blocks``, then the model (in place)."""
    from torch.distributed.fsdp import fully_shard

    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] == "blocks" and isinstance(module, nn.ModuleList):
            for block in module:
                fully_shard(block)
    fully_shard(model)
    return model


def is_fsdp(model: nn.Module) -> bool:
    """True for a model sharded by :func:`shard_model` (``fully_shard``)."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, FSDPModule)


def _resharded(model: nn.Module) -> nn.Module:
    """``model`` with every FSDP module's parameters back to their shards (the root keeps its parameters
    gathered after a forward without backward, e.g. an evaluation, where a state dict would see plain tensors)."""
    for module in model.modules():
        if is_fsdp(module):
            module.reshard()
    return model


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The gathered full weights on rank 0's CPU (other ranks: {}); every process must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    _resharded(model)
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load full weights held by rank 0 (:func:`full_state_dict`) into every process's shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(_resharded(model), state, options=options)


def unsharded_copy(model: nn.Module, build: Callable[[], nn.Module]) -> nn.Module:
    """A plain module ``build()`` holding the sharded ``model``'s weights, on every process and on the model's
    device (for code that reads whole weights, e.g. an analysis after training). Every process must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(_resharded(model), options=StateDictOptions(full_state_dict=True))
    plain = build()
    plain.load_state_dict(state)
    return plain.to(next(iter(state.values())).device) if state else plain


def _optimizers(optimizer: Any) -> list[torch.optim.Optimizer]:
    return list(getattr(optimizer, "optimizers", [optimizer]))  # a MultiOptimizer's members


def save_sharded(out_dir: Path, epoch: int, model: nn.Module, optimizer: Any) -> dict[str, str]:
    """Write every process's shards of the model and optimizer state to ``checkpoint_dcp/epoch_NNNN``;
    returns the entry for ``checkpoint.pt``'s model and optimizer. Every process must call it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    rel = f"{SHARDED_DIR}/epoch_{int(epoch):04d}"
    msd, osd = get_state_dict(_resharded(model), _optimizers(optimizer))
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=Path(out_dir) / rel)
    return {_MARK: rel}


def drop_old_sharded(out_dir: Path, entry: dict[str, str], info: DistInfo) -> None:
    """After ``checkpoint.pt`` names ``entry``: rank 0 removes the other epoch folders (all processes wait)."""
    barrier()
    if info.is_main:
        keep = Path(out_dir) / entry[_MARK]
        for folder in (Path(out_dir) / SHARDED_DIR).glob("epoch_*"):
            if folder != keep:
                shutil.rmtree(folder, ignore_errors=True)


def load_sharded(run_dir: Path, model: nn.Module, optimizer: Any, ckpt: dict[str, Any]) -> bool:
    """Load the sharded model and optimizer state that ``ckpt`` (a ``checkpoint.pt``) names; False (nothing
    loaded) when it names none (a checkpoint written without FSDP). ``ValueError`` when the model is not
    sharded or the folder is missing."""
    entry = ckpt.get("model")
    if not (isinstance(entry, dict) and _MARK in entry):
        return False
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    folder = Path(run_dir) / entry[_MARK]
    if not is_fsdp(model) or not folder.is_dir():
        raise ValueError(f"the checkpoint's weights are sharded in {folder}, which "
                         f"{'is missing' if is_fsdp(model) else 'only a run with fsdp can load'}")
    optimizers = _optimizers(optimizer)
    msd, osd = get_state_dict(_resharded(model), optimizers)
    state = {"model": msd, "optim": osd}
    dcp.load(state, checkpoint_id=folder)
    set_state_dict(model, optimizers, model_state_dict=state["model"], optim_state_dict=state["optim"])
    return True
