"""Convergence and sparsity metrics (paper.md sections 2 and 5).

Every function accepts NumPy arrays or torch tensors. Scalar results are Python floats for
unbatched input; per-row results (``attention_entropy`` etc.) keep the array kind of the input
(NumPy in -> NumPy out, torch in -> torch out). ``directional_bregman`` is the optimizer module's
function, re-exported.
"""

from __future__ import annotations

import math
from typing import Any, Union

import numpy as np
import torch

from mirrorattn.mirror import check_p, directional_bregman, lp_norm, normalize_lp

Array = Union[np.ndarray, torch.Tensor]


def _is_torch(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def _f64(x: Any) -> np.ndarray:
    if _is_torch(x):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _same_kind(out: np.ndarray, like: Any) -> Array:
    if _is_torch(like):
        return torch.as_tensor(out, dtype=like.dtype if like.is_floating_point() else torch.float64, device=like.device)
    return out


def cosine_correlation(A: Array, B: Array) -> float:
    """<A, B> / (||A||_F ||B||_F), the cosine of the angle between two matrices (in [-1, 1])."""
    a, b = _f64(A).ravel(), _f64(B).ravel()
    if a.shape != b.shape:
        raise ValueError(f"cosine_correlation needs equal shapes, got {tuple(A.shape)} and {tuple(B.shape)}")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        raise ValueError("cosine_correlation of a zero array is undefined (it has no direction)")
    return float(np.dot(a / na, b / nb))


def lp_distance(A: Array, B: Array, p: float) -> float:
    """|| A / ||A||_p - B / ||B||_p ||_p (entrywise): distance of the two l_p directions, in [0, 2]."""
    p = check_p(p)
    a, b = _f64(A), _f64(B)
    if a.shape != b.shape:
        raise ValueError(f"lp_distance needs equal shapes, got {a.shape} and {b.shape}")
    return float(lp_norm(normalize_lp(a, p) - normalize_lp(b, p), p))


def _check_probs(probs: np.ndarray) -> None:
    if probs.ndim < 1:
        raise ValueError("probs must have a last axis of probabilities (..., T)")
    if np.any(probs < -1e-9) or not np.all(np.isfinite(probs)):
        raise ValueError("probs must be finite and non-negative (softmax outputs)")


def attention_entropy(probs: Array, mask: Any = None) -> Array:
    """Shannon entropy -sum_t p_t log p_t (nats) over the last axis; shape (...,), same kind as input.

    Padding (mask False) is excluded; 0 log 0 = 0. Zero means all mass on one token.
    """
    p = _f64(probs)
    _check_probs(p)
    if mask is not None:
        p = np.where(_f64(mask).astype(bool), p, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return _same_kind(terms.sum(axis=-1), probs)


def max_probability(probs: Array) -> Array:
    """Largest attention probability per row, max_t p_t; shape (...,), same kind as input."""
    p = _f64(probs)
    _check_probs(p)
    return _same_kind(p.max(axis=-1), probs)


def selected_mass(probs: Array, index: Any) -> Array:
    """Probability on a given token per row: probs[..., index[...]]; shape (...,)."""
    p = _f64(probs)
    _check_probs(p)
    idx = _f64(index).astype(np.int64)
    if idx.shape != p.shape[:-1]:
        raise ValueError(f"index must have shape {p.shape[:-1]} (one token per row), got {idx.shape}")
    if np.any(idx < 0) or np.any(idx >= p.shape[-1]):
        raise ValueError(f"index out of range [0, {p.shape[-1]})")
    return _same_kind(np.take_along_axis(p, idx[..., None], axis=-1)[..., 0], probs)


def topk_mass(probs: Array, k: int) -> Array:
    """Total probability of the k largest entries per row; shape (...,)."""
    p = _f64(probs)
    _check_probs(p)
    if not 1 <= int(k) <= p.shape[-1]:
        raise ValueError(f"k must be in [1, {p.shape[-1]}], got {k}")
    return _same_kind(-np.sort(-p, axis=-1)[..., : int(k)].sum(axis=-1), probs)


def weight_sparsity(w: Array, threshold: float) -> dict[str, float]:
    """Entries with |w| > threshold: ``{"fraction": ..., "count": ..., "total": ...}``.

    The paper counts |entry| > 0.06 in K / Q / V of trained transformers (fewer = sparser).
    """
    a = np.abs(_f64(w))
    if not math.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold}")
    count = int((a > threshold).sum())
    return {"fraction": count / a.size if a.size else 0.0, "count": count, "total": int(a.size)}


def hoyer_sparsity(w: Array) -> float:
    """Hoyer's measure (sqrt(N) - ||w||_1 / ||w||_2) / (sqrt(N) - 1): 0 for all-equal |w|, 1 for one nonzero."""
    a = _f64(w).ravel()
    n = a.size
    if n < 2:
        raise ValueError("hoyer_sparsity needs at least 2 entries")
    l2 = np.linalg.norm(a)
    if l2 == 0:
        raise ValueError("hoyer_sparsity of a zero array is undefined")
    return float((math.sqrt(n) - np.abs(a).sum() / l2) / (math.sqrt(n) - 1.0))


def relative_change(after: Any, before: Any) -> float:
    """||after - before||_F / ||before||_F over arrays (or lists of arrays, concatenated) of equal shapes.

    How far training moved a weight from its initial value (issue 14: the query/key weights must move).
    """
    a = np.concatenate([_f64(x).ravel() for x in (after if isinstance(after, (list, tuple)) else [after])])
    b = np.concatenate([_f64(x).ravel() for x in (before if isinstance(before, (list, tuple)) else [before])])
    if a.shape != b.shape:
        raise ValueError(f"relative_change needs arrays of equal size, got {a.size} and {b.size}")
    norm = np.linalg.norm(b)
    if norm == 0:
        raise ValueError("relative_change from an all-zero initial value is undefined")
    return float(np.linalg.norm(a - b) / norm)


__all__ = [
    "attention_entropy",
    "cosine_correlation",
    "directional_bregman",
    "hoyer_sparsity",
    "lp_distance",
    "max_probability",
    "relative_change",
    "selected_mass",
    "topk_mass",
    "weight_sparsity",
]
