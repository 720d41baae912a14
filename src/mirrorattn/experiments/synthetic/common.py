"""Helpers shared by the synthetic experiments: initial weights, safe directional divergences,
SVM solves that record failures instead of dropping seeds, and progress bars."""

from __future__ import annotations

import math
import sys
from typing import Any, Callable

import numpy as np

from mirrorattn.mirror import bregman_divergence, check_p, lp_norm

__all__ = [
    "check_ps",
    "directional_divergence",
    "init_weights",
    "progress_bar",
    "quantile_band",
    "solve_or_record",
]


def check_ps(ps: Any, name: str = "ps") -> tuple[float, ...]:
    """A non-empty tuple of valid exponents p > 1, or a clear ``ValueError``."""
    if isinstance(ps, (int, float)):
        ps = (ps,)
    ps = tuple(check_p(p, name) for p in ps)
    if not ps:
        raise ValueError(f"{name} must list at least one p > 1")
    if len(set(ps)) != len(ps):
        raise ValueError(f"{name} has repeated values: {ps}")
    return ps


def init_weights(seeds: list[int], shape: tuple[int, ...], scale: float, stream: int = 1) -> np.ndarray:
    """Initial weights N(0, scale^2) per seed, (S, *shape), from ``default_rng([seed, stream])``.

    The stream is separate from the data stream (``default_rng(seed)``), and the same seed gives
    the same W_0 whatever p is trained.
    """
    if not (scale >= 0 and math.isfinite(scale)):
        raise ValueError(f"init scale must be a finite number >= 0, got {scale}")
    out = np.zeros((len(seeds),) + tuple(shape))
    for i, s in enumerate(seeds):
        out[i] = scale * np.random.default_rng([int(s), stream]).standard_normal(shape)
    return out


def directional_divergence(a: np.ndarray, b: np.ndarray, p: float, batch_dims: int) -> np.ndarray:
    """D_psi(a / ||a||_p, b / ||b||_p) per batch entry; NaN where either array is zero or NaN.

    ``a`` and ``b`` broadcast against each other on the batch axes.
    """
    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    na = np.asarray(lp_norm(np.nan_to_num(a), p, batch_dims))
    nb = np.asarray(lp_norm(np.nan_to_num(b), p, batch_dims))
    bad = (na == 0) | (nb == 0) | np.isnan(a).any(axis=tuple(range(batch_dims, a.ndim)))
    bad |= np.isnan(b).any(axis=tuple(range(batch_dims, b.ndim)))
    tail = (1,) * (a.ndim - batch_dims)
    an = np.nan_to_num(a) / np.where(na == 0, 1.0, na).reshape(na.shape + tail)
    bn = np.nan_to_num(b) / np.where(nb == 0, 1.0, nb).reshape(nb.shape + tail)
    d = np.asarray(bregman_divergence(an, bn, p, batch_dims), dtype=np.float64)
    return np.where(bad, np.nan, np.maximum(d, 0.0))


def quantile_band(values: np.ndarray, lo: float = 0.1, hi: float = 0.9, axis: int = -1) -> tuple[np.ndarray, ...]:
    """Mean and the (lo, hi) quantiles along ``axis``, ignoring NaN (seeds whose SVM failed)."""
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return (
                np.nanmean(values, axis=axis),
                np.nanquantile(values, lo, axis=axis),
                np.nanquantile(values, hi, axis=axis),
            )


def solve_or_record(fn: Callable[[], Any]) -> tuple[Any, str, str]:
    """Run a solver call; return (result or None, status, reason). SVM errors are recorded, not raised."""
    from mirrorattn.svm import InfeasibleSVMError, SVMError

    try:
        res = fn()
    except InfeasibleSVMError as exc:
        return None, "infeasible", str(exc)
    except SVMError as exc:
        return None, "failed", str(exc)
    return res, str(res.status), ""


def progress_bar(total: int, desc: str, unit: str = "it", position: int = 0, enabled: bool = True) -> Any:
    """A tqdm progress bar on stderr (disabled when ``enabled`` is false)."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        position=position,
        leave=True,
        disable=not enabled,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5,
    )


def token_tools() -> tuple[Callable, Callable, Callable]:
    """(token_scores, globally_optimal_tokens, is_locally_optimal) from :mod:`mirrorattn.tokens`."""
    from mirrorattn.tokens import globally_optimal_tokens, is_locally_optimal, token_scores

    return token_scores, globally_optimal_tokens, is_locally_optimal
