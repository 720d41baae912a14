"""Token selection over training (issue 15, items 3 and 4): the optimal-token share and the last layer's
distance to its l_p-AttSVM directions at every weight snapshot of a run.

A run trained with ``snapshots = "log"`` (``--snapshots log``; the text and vision ``converge`` presets set
it) keeps its weights in ``RUN_DIR/snapshots/epoch_NNNN.pt`` (epoch 0 = the initial weights;
:func:`mirrorattn.train.checkpoint.list_snapshots`). :func:`selection_trend` loads each in turn and measures,
on ONE fixed sample (the runs' seeded analysis sample, :func:`~mirrorattn.experiments.token_selection.sample_indices`):

* the optimal-token share, the attention mass on the optimal token and the attended token's rank
  (:func:`~mirrorattn.experiments.token_selection.token_selection_metrics`), and the chance level;
* with ``svm_samples`` > 0, for each head h of the last layer and each p: the cosine and the directional
  Bregman divergence D_psi(W_mm, W_h(epoch)) (l_p; :func:`mirrorattn.mirror.directional_bregman`, the same
  definition as :func:`~mirrorattn.experiments.token_selection.layer_attention_svm`) between the head's
  key-query matrix at that epoch and a FIXED target W_mm.

The target. W_mm is the l_p-AttSVM of the LAST snapshot's (X, z, alpha): its last-layer input states, its
[CLS] state and its heads' attention argmax, solved once per head and p on the first ``svm_samples`` of the
sample (samples the solver names infeasible are dropped: ``n_used`` / ``n_dropped``). The theory says the
trained W approaches the max-margin direction of the tokens it ends up selecting; like the synthetic
experiments, which measure every iterate against one fixed AttSVM solution, the trend measures every
snapshot against the solution of the final selection on the final states. A target re-solved per epoch
would move with the states and the selection, and the curve would no longer say whether W converges to
one direction. The last point of the trend is therefore exactly :func:`layer_attention_svm` of the last
snapshot's model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mirrorattn.experiments.token_selection import (
    head_attention_svm,
    head_matrices,
    head_selection,
    last_attention,
    layer_inputs,
    sample_indices,
    token_selection_metrics,
)
from mirrorattn.metrics import cosine_correlation
from mirrorattn.mirror import directional_bregman

__all__ = ["TREND_SCALARS", "no_snapshots_message", "run_selection_trend", "selection_trend", "target_divergences"]

#: the per-epoch lists of a trend taken from :func:`token_selection_metrics`
TREND_SCALARS = ("optimal_token_share", "optimal_token_mass", "attended_token_rank", "chance_share")

Snapshot = tuple[int, Path | dict[str, torch.Tensor]]


def no_snapshots_message(run: Path) -> str:
    """The one-line error for a run that kept no weight snapshots."""
    return (f"{run} kept no weight snapshots (snapshots/epoch_NNNN.pt), so it has no trend over training: train it "
            "with `--snapshots log` (the converge presets keep them)")


def _load(model: nn.Module, snapshot: Snapshot) -> None:
    """Put a snapshot's weights (a path or a state dict) into ``model``; a ValueError naming the file if they
    do not fit."""
    from mirrorattn.train.checkpoint import load_weights

    epoch, source = snapshot
    state = source if isinstance(source, dict) else load_weights(source)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = (str(exc).splitlines()[1:2] or [str(exc)])[0].strip()
        where = "a state dict" if isinstance(source, dict) else source
        raise ValueError(f"the weight snapshot of epoch {epoch} ({where}) does not fit the model: {first}") from None


def target_divergences(Ws: np.ndarray, targets: list[dict[str, np.ndarray]]) -> list[dict[str, dict[str, float]]]:
    """Per head h and p: {"cosine": cos(W_mm, W_h), "directional_bregman": D_psi(W_mm, W_h) in l_p} for the
    matrices ``Ws`` (H, D, D) against ``targets`` (per head {str(p): W_mm})."""
    return [{key: {"cosine": cosine_correlation(Wmm, W),
                   "directional_bregman": float(directional_bregman(Wmm, W, float(key)))}
             for key, Wmm in target.items()} for W, target in zip(Ws, targets)]


def _final_targets(model: nn.Module, inputs: torch.Tensor, mask: torch.Tensor | None, ps: tuple[float, ...],
                   batch: int, options: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, np.ndarray]]]:
    """The model's (the last snapshot's) per-head AttSVM records and W_mm matrices (one solve per head and p)."""
    X, probs, real = layer_inputs(model, inputs, mask, batch)
    records, targets = [], []
    for h, W in enumerate(head_matrices(last_attention(model))):
        rows, mats = head_attention_svm(X, real, head_selection(probs[:, h], real), W, ps, **options)
        records.append(rows)
        targets.append(mats)
    return records, targets


def selection_trend(model: nn.Module, snapshots: list[Snapshot], inputs: torch.Tensor, mask: torch.Tensor | None,
                    labels: torch.Tensor, *, svm_samples: int = 0, ps: tuple[float, ...] = (1.1, 2.0, 3.0),
                    batch: int = 128, **options: Any) -> dict[str, Any]:
    """Token selection of a model at each of its weight ``snapshots`` ((epoch, path or state dict), by epoch)
    on one fixed sample (text: ids + mask; ViT: images, mask None; ``labels`` (n,)).

    The target of the AttSVM comparison is fixed: per head and p the l_p-AttSVM of the LAST snapshot's
    states and selection on the first ``svm_samples`` samples (see the module docstring). Returns
    {"epochs": [...], "target_epoch", "n", "svm_samples", "ps": [str(p)], one list per epoch for each of
    :data:`TREND_SCALARS` and "optimal_token_share_per_head" ([epoch][head]), "heads": [per head {"p": {str(p):
    {"cosine": [...], "directional_bregman": [...] (one per epoch), and the target's solve: "objective",
    "n_used", "n_dropped", "dropped", "n_constraints", "method", "solve_seconds"}}}] ([] without
    ``svm_samples``), "seconds"}. ``model`` holds its own weights again afterwards; ``options`` go to the solver.
    """
    if not snapshots:
        raise ValueError("selection_trend needs at least one weight snapshot")
    start = time.perf_counter()
    snapshots = sorted(snapshots, key=lambda s: s[0])
    own = {k: v.detach().clone() for k, v in model.state_dict().items()}
    n_svm = min(int(svm_samples), len(inputs))
    keys = [f"{float(p):g}" for p in ps]
    try:
        records, targets = [], []
        if n_svm > 0:
            _load(model, snapshots[-1])
            records, targets = _final_targets(model, inputs[:n_svm], None if mask is None else mask[:n_svm],
                                              tuple(ps), batch, options)
        points = []
        for snap in snapshots:
            _load(model, snap)
            met = token_selection_metrics(model, inputs, mask, labels, batch=batch)
            points.append((met, target_divergences(head_matrices(last_attention(model)), targets)))
    finally:
        model.load_state_dict(own)
    out: dict[str, Any] = {"epochs": [int(e) for e, _ in snapshots], "target_epoch": int(snapshots[-1][0]),
                           "n": len(inputs), "svm_samples": n_svm, "ps": keys if n_svm else []}
    for key in TREND_SCALARS:
        out[key] = [met[key] for met, _ in points]
    out["optimal_token_share_per_head"] = [met["optimal_token_share_per_head"] for met, _ in points]
    out["heads"] = [{"p": {key: {"cosine": [div[h][key]["cosine"] for _, div in points],
                                 "directional_bregman": [div[h][key]["directional_bregman"] for _, div in points],
                                 **{k: v for k, v in records[h][key].items()
                                    if k not in ("cosine", "directional_bregman")}}
                           for key in keys}} for h in range(len(targets))]
    out["seconds"] = time.perf_counter() - start
    return out


def run_selection_trend(run: Path, model: nn.Module, split: Any, cap: int, *, svm_samples: int = 0,
                        ps: tuple[float, ...] = (1.1, 2.0, 3.0), **options: Any) -> dict[str, Any]:
    """:func:`selection_trend` of a run folder's snapshots on the fixed, seeded sample of at most ``cap`` items
    of its test ``split`` (the AttSVM on its first ``svm_samples``); a ValueError saying how to get snapshots
    when the run kept none."""
    from mirrorattn.train.checkpoint import list_snapshots

    snapshots = list_snapshots(run)
    if not snapshots:
        raise ValueError(no_snapshots_message(run))
    idx = sample_indices(len(split), cap)
    inputs = split.inputs if isinstance(split.inputs, (tuple, list)) else (split.inputs,)
    mask = inputs[1][idx] if len(inputs) > 1 else None
    return selection_trend(model, list(snapshots), inputs[0][idx], mask, split.labels[idx],
                           svm_samples=svm_samples, ps=ps, **options)
