"""l_p mirror descent (paper.md section 2) over a leading seed axis: :func:`run_md` drives
:class:`~mirrorattn.optim.LpMirrorDescent` on float64 tensors.

Every parameter array has shape (S, ...), one optimizer group with ``batch_dims=1``: the dual
variable u = grad psi(W) is the optimizer's state, and the normalised variant divides each seed's
gradient of each tensor by that seed's own dual norm, g_s / (||g_s||_q + eps). So seed s follows
exactly the iterates it would follow if trained alone.

Only the iterates at a given list of iterations (e.g. a log-spaced grid) are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from mirrorattn.mirror import check_p
from mirrorattn.optim import LpMirrorDescent

__all__ = ["DEFAULT_EPS", "MDTrace", "log_grid", "run_md"]

#: the eps added to the dual norm in the normalised update (float64 machine epsilon, as the authors)
DEFAULT_EPS = float(np.finfo(np.float64).eps)

GradFn = Callable[..., tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]]


def log_grid(iterations: int, points: int) -> np.ndarray:
    """Iterations 0, and about ``points`` log-spaced values in [1, iterations] (unique, sorted, int)."""
    if iterations < 0 or points < 1:
        raise ValueError(f"need iterations >= 0 and points >= 1, got {iterations}, {points}")
    if iterations == 0:
        return np.array([0])
    grid = np.round(np.logspace(0.0, np.log10(iterations), points)).astype(int)
    return np.unique(np.concatenate([[0], grid, [iterations]]))


@dataclass
class MDTrace:
    """What :func:`run_md` keeps: iterates and per-seed values at the recorded iterations."""

    iterations: np.ndarray  #: (G,) recorded iteration numbers (k = number of steps taken)
    params: dict[str, np.ndarray]  #: name -> (G, S, ...) iterates
    loss: np.ndarray  #: (G, S)
    extras: dict[str, np.ndarray] = field(default_factory=dict)  #: name -> (G, S, ...)
    final: dict[str, np.ndarray] = field(default_factory=dict)  #: name -> (S, ...) last iterate


def run_md(
    grad_fn: GradFn,
    params0: Mapping[str, np.ndarray],
    p: float,
    eta: float,
    iterations: int,
    record_at: Sequence[int],
    normalized: bool = True,
    trainable: Sequence[str] | None = None,
    eps: float = DEFAULT_EPS,
    progress: Callable[[int], None] | None = None,
) -> MDTrace:
    """Run ``iterations`` mirror steps of :class:`~mirrorattn.optim.LpMirrorDescent` (float64, one group with
    ``batch_dims=1``: every seed on its own); keep the iterates whose step count is in ``record_at``.

    ``grad_fn(params, record)`` returns (loss (S,), grads name -> (S, ...), extras name -> (S, ...));
    ``record`` is True at the recorded iterations (extras are only kept there, so it may skip them
    otherwise).
    Only the parameters in ``trainable`` (default: all) are updated. ``progress(k)`` is called
    every 100 steps with the number of steps done since the last call.
    """
    rec = sorted({int(k) for k in record_at})
    if rec and (rec[0] < 0 or rec[-1] > iterations):
        raise ValueError(f"record_at must lie in [0, {iterations}]")
    check_p(p)
    if not eta > 0:
        raise ValueError(f"step size eta must be > 0, got {eta}")
    # float64 tensors; ``params`` holds NumPy views of them, which the optimizer's in-place steps update
    tensors = {k: torch.tensor(np.asarray(v, dtype=np.float64)) for k, v in params0.items()}
    params = {k: t.numpy() for k, t in tensors.items()}
    names = list(trainable) if trainable is not None else list(tensors)
    for n in names:  # the gradient tensors, written in place through NumPy views every step
        tensors[n].grad = torch.zeros_like(tensors[n])
    grad_views = {n: tensors[n].grad.numpy() for n in names}
    opt = LpMirrorDescent([tensors[n] for n in names], lr=eta, p=p, normalized=normalized, eps=eps, batch_dims=1)
    kept: dict[str, list[np.ndarray]] = {k: [] for k in params}
    losses: list[np.ndarray] = []
    extras: dict[str, list[np.ndarray]] = {}
    ri = 0
    last = 0
    for k in range(iterations + 1):
        record = ri < len(rec) and rec[ri] == k
        loss, grads, extra = grad_fn(params, record)
        if record:
            for name, val in params.items():
                kept[name].append(val.copy())
            losses.append(np.asarray(loss).copy())
            for name, val in extra.items():
                extras.setdefault(name, []).append(np.asarray(val).copy())
            ri += 1
        if k == iterations:
            break
        for n in names:
            np.copyto(grad_views[n], grads[n])
        opt.step()
        if progress is not None and (k + 1) % 100 == 0:
            progress(k + 1 - last)
            last = k + 1
    if progress is not None and iterations > last:
        progress(iterations - last)
    return MDTrace(
        iterations=np.asarray(rec, dtype=int),
        params={k: np.stack(v) for k, v in kept.items()},
        loss=np.stack(losses),
        extras={k: np.stack(v) for k, v in extras.items()},
        final={k: v.copy() for k, v in params.items()},
    )
