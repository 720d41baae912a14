"""Token scores and token optimality (paper.md sections 1 and 3).

- token score: gamma_it = y_i v^T x_it;
- globally optimal token of sample i: argmax_t gamma_it (must be unique);
- support tokens of an AttSVM solution: the t whose constraint is tight (margin = 1);
- alpha is locally optimal if, for every sample, gamma_{i,alpha_i} > gamma_it for each of its
  support tokens t; globally optimal if alpha_i is the argmax of gamma_i for every i;
- selected token of a model: argmax_t of softmax(X_i W z_i) (= argmax of the scores X_i W z_i).

Functions accept NumPy arrays or torch tensors and return the same kind (bool/int arrays);
``is_locally_optimal`` returns a Python bool.
"""

from __future__ import annotations

from typing import Any, Union

import numpy as np
import torch

Array = Union[np.ndarray, torch.Tensor]


def _is_torch(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if _is_torch(x) else np.asarray(x)


def _where(name: str, index: tuple[int, ...]) -> str:
    return f"{name}[{', '.join(str(int(i)) for i in index)}]" if index else name


def check_real(a: Any, name: str, *, finite: bool = True, where: Any = None,
               error: type[Exception] = ValueError) -> None:
    """Raise ``error`` (one line naming ``name``) unless ``a`` is a real numeric array (NumPy or torch).

    Bool, integer and floating dtypes pass; complex, object, string and other dtypes do not. With
    ``finite``, NaN/inf also fail, the message naming the first offending index; ``where`` (a bool
    array broadcastable to ``a``, e.g. a padding mask) limits that check to the entries where it is True.
    """
    if _is_torch(a):
        if a.is_complex():
            raise error(f"{name} is complex ({a.dtype}); pass real numbers (e.g. its .real part)")
        bad = ~torch.isfinite(a) if finite and a.is_floating_point() else None
        if bad is not None and where is not None:
            bad &= torch.as_tensor(where, dtype=torch.bool, device=a.device)
        first = tuple(torch.nonzero(bad)[0].tolist()) if bad is not None and bool(bad.any()) else None
    else:
        arr = a if isinstance(a, np.ndarray) else np.asarray(a)
        kind = arr.dtype.kind
        if kind == "c":
            raise error(f"{name} is complex (dtype {arr.dtype}); pass real numbers (e.g. its .real part)")
        if kind not in "biuf":
            raise error(f"{name} must be a real numeric array (bool, int or float), got dtype {arr.dtype}")
        bad = ~np.isfinite(arr) if finite and kind == "f" else None
        if bad is not None and where is not None:
            bad &= np.asarray(_np(where), dtype=bool)
        first = np.unravel_index(int(np.argmax(bad)), bad.shape) if bad is not None and bad.any() else None
    if first is not None:
        raise error(f"{name} holds NaN or inf (first at {_where(name, tuple(first))}); fix or drop those entries")


def real_array(a: Any, name: str, *, finite: bool = True, where: Any = None,
               error: type[Exception] = ValueError) -> np.ndarray:
    """``a`` (NumPy array, torch tensor or nested lists) as a float64 NumPy array, checked by :func:`check_real`.

    Bool and integer arrays are cast to float64; ragged lists, ``None``, strings, objects and complex
    numbers raise ``error`` naming ``name``.
    """
    try:
        arr = np.asarray(_np(a))
    except (TypeError, ValueError) as exc:  # ragged nested lists
        raise error(f"{name} must be a real numeric array: {' '.join(str(exc).split())}") from None
    check_real(arr, name, finite=finite, where=where, error=error)
    return arr.astype(np.float64, copy=False)


def token_scores(X: Array, y: Array, v: Array) -> Array:
    """gamma (n, T) with gamma_it = y_i * (x_it . v), for X (n, T, d), y (n,), v (d,).

    All three must be real and finite (``ValueError`` naming the array and the first bad index).
    """
    for a, name in ((X, "X"), (y, "y"), (v, "v")):
        check_real(a, name)
    if X.ndim != 3 or tuple(v.shape) != (X.shape[2],) or tuple(y.shape) != (X.shape[0],):
        raise ValueError(
            f"token_scores needs X (n, T, d), y (n,), v (d,); got X {tuple(X.shape)}, y {tuple(y.shape)}, "
            f"v {tuple(v.shape)}"
        )
    if _is_torch(X):
        return y.to(X.dtype)[:, None] * (X @ v.to(X.dtype))
    return np.asarray(y, dtype=np.float64)[:, None] * (np.asarray(X, dtype=np.float64) @ np.asarray(v, np.float64))


class NonUniqueTokenError(ValueError):
    """Two real tokens of a sample share the best score: its globally optimal token is not unique."""


def _masked(gamma: np.ndarray, mask: Any) -> np.ndarray:
    """gamma as float64 with padding (mask False) at -inf; real tokens must be finite."""
    check_real(gamma, "gamma", finite=False)
    g = np.array(gamma, dtype=np.float64)
    if mask is None:
        check_real(g, "gamma")
        return g
    m = _np(mask).astype(bool)
    if m.shape != g.shape:
        raise ValueError(f"mask must have the shape of gamma {g.shape}, got {m.shape}")
    if not m.any(axis=1).all():
        raise ValueError(f"samples {np.flatnonzero(~m.any(axis=1)).tolist()} have no real token in mask")
    check_real(g, "gamma", where=m)
    g[~m] = -np.inf
    return g


def globally_optimal_tokens(gamma: Array, mask: Any = None, *, ties: str = "raise", tie_tol: float = 1e-12) -> Array:
    """argmax_t gamma_it per sample, (n,) ints, over real tokens (mask True) only.

    ``ties="raise"`` (default) raises :class:`NonUniqueTokenError` (a ``ValueError``) naming the samples
    whose two best scores are within ``tie_tol`` (relative to the largest |gamma|): the globally
    optimal token is then not unique, as the theory assumes. ``ties="first"`` returns the first maximiser instead.
    """
    if ties not in ("raise", "first"):
        raise ValueError(f"ties must be 'raise' or 'first', got {ties!r}")
    g = _masked(_np(gamma), mask)
    if g.ndim != 2:
        raise ValueError(f"gamma must have shape (n, T), got {g.shape}")
    idx = np.argmax(g, axis=1)
    if ties == "raise" and g.shape[1] > 1:
        top2 = -np.sort(-g, axis=1)[:, :2]
        finite = np.isfinite(top2[:, 1])
        scale = max(float(np.abs(g[np.isfinite(g)]).max(initial=0.0)), 1e-300)
        tied = finite & (top2[:, 0] - top2[:, 1] <= tie_tol * scale)
        if tied.any():
            raise NonUniqueTokenError(
                f"the globally optimal token is not unique in samples {np.flatnonzero(tied).tolist()[:20]} "
                "(two tokens share the best score); pass ties='first' to take the first one"
            )
    return torch.as_tensor(idx, device=gamma.device) if _is_torch(gamma) else idx


def support_tokens(result: Any, tol: float | None = None) -> np.ndarray:
    """Support tokens (n, T) bool of an AttSVM result: constraints with margin <= 1 + tol.

    ``tol`` defaults to the result's own ``support_tol``; the selected token and padding are never
    support tokens.
    """
    t = result.support_tol if tol is None else float(tol)
    m = np.asarray(result.margins)
    return np.isfinite(m) & (m <= 1.0 + t)


def locally_optimal_samples(alpha: Array, result: Any, gamma: Array, tol: float | None = None) -> np.ndarray:
    """(n,) bool: gamma_{i,alpha_i} > gamma_it for every support token t of sample i.

    A sample without support tokens counts as locally optimal (nothing to check).
    """
    a = _np(alpha).astype(np.int64)
    g = real_array(gamma, "gamma", finite=False)
    sup = support_tokens(result, tol)
    if g.shape != sup.shape or a.shape != (g.shape[0],):
        raise ValueError(f"alpha (n,), gamma (n, T) and the result's support {sup.shape} must agree")
    if not np.array_equal(a, np.asarray(result.alpha)):
        raise ValueError("alpha differs from the alpha the SVM result was solved for")
    used = sup.copy()
    used[np.arange(len(a)), a] = True
    check_real(g, "gamma", where=used)  # the selected and support tokens' scores decide
    ga = g[np.arange(len(a)), a][:, None]
    return ~np.any(sup & ~(ga > g), axis=1)


def is_locally_optimal(alpha: Array, result: Any, gamma: Array, tol: float | None = None) -> bool:
    """True when every sample is locally optimal (see :func:`locally_optimal_samples`)."""
    return bool(locally_optimal_samples(alpha, result, gamma, tol).all())


def is_globally_optimal(alpha: Array, gamma: Array, mask: Any = None) -> bool:
    """True when alpha_i is the unique argmax of gamma_i for every sample."""
    try:
        best = _np(globally_optimal_tokens(gamma, mask))
    except NonUniqueTokenError:
        return False
    return bool(np.array_equal(best, _np(alpha).astype(np.int64)))


def selected_tokens(X: Array, z: Array, W: Array, mask: Any = None) -> Array:
    """argmax_t softmax(X_i W z_i): the token each sample's attention selects.

    X (n, T, d), z (n, d), W (d, d) -> (n,) ints; W (S, d, d) (a leading seed axis) -> (S, n).
    Padding tokens (mask False) are never selected (and may hold anything); every other entry of X, z and
    W must be real and finite. Same array kind as X.
    """
    if X.ndim != 3 or z.ndim != 2 or W.ndim not in (2, 3):
        raise ValueError(
            f"selected_tokens needs X (n, T, d), z (n, d), W (d, d) or (S, d, d); got {tuple(X.shape)}, "
            f"{tuple(z.shape)}, {tuple(W.shape)}"
        )
    real = None if mask is None else _np(mask).astype(bool)
    if real is not None and real.shape != tuple(X.shape[:2]):
        raise ValueError(f"mask must have shape (n, T) = {tuple(X.shape[:2])}, got {real.shape}")
    check_real(X, "X", where=None if real is None else real[..., None])
    check_real(z, "z")
    check_real(W, "W")
    if _is_torch(X):
        Wt = W.to(X.dtype)
        s = torch.einsum("ntd,...de,ne->...nt", X, Wt, z.to(X.dtype))
        if mask is not None:
            s = s.masked_fill(~torch.as_tensor(mask, dtype=torch.bool, device=s.device), float("-inf"))
        return s.argmax(dim=-1)
    s = np.einsum("ntd,...de,ne->...nt", np.asarray(X), np.asarray(W), np.asarray(z))
    if mask is not None:
        s = np.where(_np(mask).astype(bool), s, -np.inf)
    return np.argmax(s, axis=-1)


__all__ = [
    "NonUniqueTokenError",
    "check_real",
    "globally_optimal_tokens",
    "is_globally_optimal",
    "is_locally_optimal",
    "locally_optimal_samples",
    "selected_tokens",
    "support_tokens",
    "real_array",
    "token_scores",
]
