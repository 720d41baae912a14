"""Building the optimizer(s) of a run: one optimizer, or l_p-MD on query/key weights + another elsewhere."""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from mirrorattn.models.layers import qk_parameters
from mirrorattn.optim import build_optimizer
from mirrorattn.train.config import TrainConfig

__all__ = ["MultiOptimizer", "build_optimizers", "make_optimizer", "split_md_scope"]


def make_optimizer(
    spec: str, params: Iterable[nn.Parameter], lr: float, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """An optimizer from a registry spec ("sgd", "adam", "adamw", "lp-md:1.1", ...).

    Uses :func:`mirrorattn.optim.build_optimizer`; raises ``ValueError`` for an unknown spec.
    """
    kwargs: dict[str, Any] = {"weight_decay": weight_decay} if weight_decay else {}
    return build_optimizer(spec, list(params), lr=lr, **kwargs)


def split_md_scope(model: nn.Module, md_scope: str) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(parameters for the main optimizer, parameters for the other optimizer).

    ``"all"``: every trainable parameter, and none. ``"attention"``: the q_proj/k_proj weights of
    every :class:`~mirrorattn.models.layers.MultiHeadSelfAttention`, and every other trainable
    parameter. Raises ``ValueError`` if the model has no attention layer for the attention scope.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    if md_scope == "all":
        return trainable, []
    if md_scope != "attention":
        raise ValueError(f"md_scope must be 'all' or 'attention', got {md_scope!r}")
    qk = [p for p in qk_parameters(model) if p.requires_grad]
    if not qk:
        raise ValueError("md_scope='attention' needs a model with MultiHeadSelfAttention layers (q_proj/k_proj)")
    ids = {id(p) for p in qk}
    return qk, [p for p in trainable if id(p) not in ids]


class MultiOptimizer:
    """Several optimizers stepped together, with one ``state_dict``.

    ``param_groups`` is the concatenation of the members' groups (so learning-rate changes and
    logging see all of them). Not meant to be passed to a learning-rate scheduler per member.
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        if not optimizers:
            raise ValueError("MultiOptimizer needs at least one optimizer")
        self.optimizers = list(optimizers)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for opt in self.optimizers for g in opt.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def state_dict(self) -> dict[str, Any]:
        return {"multi": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        states = state_dict.get("multi")
        if states is None or len(states) != len(self.optimizers):
            raise ValueError("optimizer state does not match: a different number of optimizers")
        for opt, sd in zip(self.optimizers, states):
            opt.load_state_dict(sd)

    def __repr__(self) -> str:
        return "MultiOptimizer(" + ", ".join(type(o).__name__ for o in self.optimizers) + ")"


def build_optimizers(model: nn.Module, config: TrainConfig) -> MultiOptimizer:
    """The optimizer(s) of ``config`` over ``model``'s trainable parameters (see :class:`TrainConfig`)."""
    main, other = split_md_scope(model, config.md_scope)
    opts = [make_optimizer(config.optimizer, main, config.lr, config.weight_decay)]
    if other:
        other_lr = config.other_lr if config.other_lr is not None else config.lr
        opts.append(make_optimizer(config.other_optimizer, other, other_lr, config.weight_decay))
    return MultiOptimizer(opts)
