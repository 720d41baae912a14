"""The training loop's speed measures: trimmed padding, sparse embedding gradients, length buckets.

Each is chosen by a :class:`~mirrorattn.train.config.TrainConfig` field and by what the model offers:

- ``trim_padding`` (default on): a model with ``trim_padding(*inputs) -> inputs`` (the text
  transformer) gets every batch cut after its last real token. Exact: padded keys are masked and
  no pooling reads a padded position.
- ``sparse_embedding`` (default on): the modules of ``model.sparse_gradient_modules()`` (the text
  transformer's token embedding) get ``sparse=True`` for the run when the optimizer that updates
  their weight does so exactly with a sparse gradient (:func:`sparse_update_is_exact`), there is
  one process (DDP averages dense gradients) and no gradient clipping; dense otherwise. A batch's
  sparse gradient holds only the rows of its tokens; every other row has gradient 0, which the
  exact update leaves untouched.
- ``trim_padding`` also switches on ``model.group_lengths`` where the model has it (the text transformer,
  one process: :func:`enable_length_groups`): the model computes each batch in groups of similar length, each
  padded only to its own longest sample (:mod:`mirrorattn.models.length_groups`; the same batches, the same
  outputs up to float rounding; dropout draws other random numbers, as the trimmed padding does).
- ``length_buckets`` (default 0, off): batches of similar lengths (:func:`bucketed_batches`); this
  changes which samples share a batch, so it is part of the run's identity.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

__all__ = ["bucketed_batches", "coalesce_sparse_grads", "enable_length_groups", "enable_sparse_gradients",
           "input_trimmer", "sparse_update_is_exact"]


def input_trimmer(model: nn.Module, enabled: bool) -> Callable[..., tuple[torch.Tensor, ...]] | None:
    """``model.trim_padding`` when ``enabled`` and the model has one, else None."""
    trim = getattr(model, "trim_padding", None) if enabled else None
    return trim if callable(trim) else None


def enable_length_groups(model: nn.Module, *, enabled: bool, world_size: int) -> list[nn.Module]:
    """Switch on ``group_lengths`` of ``model``'s modules that have one (off now); returns them (the caller switches
    them back after training). Nothing is switched when not ``enabled`` or with several processes (DDP and FSDP
    hooks expect one call of every layer per forward)."""
    if not enabled or world_size > 1:
        return []
    switched = [m for m in model.modules() if getattr(m, "group_lengths", None) is False]
    for m in switched:
        m.group_lengths = True
    return switched


def sparse_update_is_exact(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> bool:
    """Whether ``optimizer`` updates ``param`` from a sparse gradient exactly as from the dense one.

    True for ``torch.optim.SGD`` without momentum, weight decay or the fused kernel, and for
    :class:`~mirrorattn.optim.LpMirrorDescent` without weight decay or normalisation (both move
    only the rows present in the gradient). False for every other optimizer (Adam's moments decay
    every row) and for a parameter the optimizer does not hold.
    """
    from mirrorattn.optim import LpMirrorDescent

    members = getattr(optimizer, "optimizers", [optimizer])  # a MultiOptimizer: the member that holds it
    for opt in members:
        for group in opt.param_groups:
            if not any(p is param for p in group["params"]):
                continue
            if type(opt) is torch.optim.SGD:
                return group["momentum"] == 0 and group["weight_decay"] == 0 and not group.get("fused")
            if isinstance(opt, LpMirrorDescent):
                return group["weight_decay"] == 0 and not group["normalized"]
            return False
    return False


def enable_sparse_gradients(model: nn.Module, optimizer: torch.optim.Optimizer, *, enabled: bool,
                            world_size: int, grad_clip: float | None) -> list[nn.Embedding]:
    """Switch ``sparse=True`` on the model's ``sparse_gradient_modules()`` whose update stays exact.

    Returns the modules switched (the caller switches them back after training). Nothing is switched
    when not ``enabled``, under DDP (``world_size > 1``: its reducer averages dense gradients), with
    gradient clipping (it reads the dense norm), or for a module the optimizer cannot update
    exactly from a sparse gradient (:func:`sparse_update_is_exact`).
    """
    get = getattr(model, "sparse_gradient_modules", None)
    if not enabled or world_size > 1 or grad_clip is not None or not callable(get):
        return []
    switched = []
    for module in get():
        if isinstance(module, nn.Embedding) and not module.sparse and module.max_norm is None \
                and module.weight.requires_grad and sparse_update_is_exact(optimizer, module.weight):
            module.sparse = True
            switched.append(module)
    return switched


def coalesce_sparse_grads(params: list[torch.Tensor]) -> None:
    """Replace each sparse gradient of ``params`` by its coalesced form (one entry per row, duplicates
    summed as the dense gradient sums them: :func:`mirrorattn.optim.lpmd.coalesce_rows`); the optimizers
    then update each row once, with the dense gradient's values."""
    from mirrorattn.optim.lpmd import coalesce_rows

    for p in params:
        g = p.grad
        if g is not None and g.is_sparse and not g.is_coalesced():
            p.grad = coalesce_rows(g)


def bucketed_batches(order: torch.Tensor, batch_size: int, lengths: torch.Tensor, window: int,
                     generator: torch.Generator) -> list[torch.Tensor]:
    """Batches of ``order`` (a shuffled index permutation) whose members have similar ``lengths``.

    ``order`` is cut into windows of ``window`` batches; each window is sorted by length (stable)
    and cut into batches of ``batch_size``; the batches of the epoch are then put in a random order
    (``generator``). Every index appears once; there are ``ceil(N / batch_size)`` batches, all full
    but the last window's last one, as without buckets.
    """
    span = window * batch_size
    batches: list[torch.Tensor] = []
    for start in range(0, len(order), span):
        chunk = order[start : start + span]
        chunk = chunk[torch.sort(lengths[chunk], stable=True).indices]
        batches += list(chunk.split(batch_size))
    perm = torch.randperm(len(batches), generator=generator)
    return [batches[int(i)] for i in perm]
