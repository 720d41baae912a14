"""The l_p mirror map, its inverse, the potential and Bregman divergences.

Small pure functions shared by the optimizer, the metrics, the experiments and the tests
(paper.md section 2). Every function accepts a NumPy array or a torch tensor and returns the
same kind. ``p`` must be a finite number greater than 1.

Potential:       psi(w)        = ||w||_p^p / p            (entrywise)
Mirror map:      grad psi(w)   = sign(w) |w|^(p-1)
Inverse map:     grad psi*(u)  = sign(u) |u|^(1/(p-1))
Bregman:         D(a, b)       = psi(a) - psi(b) - <grad psi(b), a - b>

Reductions run over every axis except the first ``batch_dims`` ones, so that a stack of seeds
(a leading seed axis) gets one value per seed.
"""

from __future__ import annotations

import math
from typing import Any, Union

import numpy as np
import torch

Array = Union[np.ndarray, torch.Tensor]

#: relative distance within which an exponent is snapped to a nearby integer or half-integer
_SNAP_RTOL = 1e-9


def check_p(p: Any, name: str = "p") -> float:
    """Return ``p`` as a float, or raise ``ValueError`` unless it is finite and > 1."""
    try:
        pf = float(p)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number > 1 (finite), got {p!r}") from None
    if not math.isfinite(pf) or pf <= 1.0:
        raise ValueError(
            f"{name} must be a finite real number > 1 (p = 2 is gradient descent; "
            f"p close to 1 gives sparse solutions), got {p!r}"
        )
    return pf


#: The exponents the max-margin solvers (:mod:`mirrorattn.svm`, ``mirrorattn svm``) and the synthetic
#: experiments (``mirrorattn synthetic --ps``) accept: P_MIN <= p <= P_MAX. Measured (issue 12) on unit-norm
#: instances (n, T, d) = (4, 4, 3), (6, 8, 10) and (800, 8, 5), by the certified duality gap of every answer:
#: the solvers are exact to <= 6e-7 for every p tried from 1 + 2e-16 to 1e9, but the float64 mirror descent
#: of the experiments is not: it turns NaN for p = 1.0001 (|u|^(1/(p-1)) overflows after a few steps) and for
#: p = 1000 (sign(w)|w|^(p-1) overflows at |w| > 2); it still runs at 1.0002 and 500. The bounds keep a
#: factor of 5 inside both ends. (:class:`mirrorattn.optim.LpMirrorDescent` takes any finite p > 1 and checks
#: that its dual variable is finite instead.)
P_MIN = 1.001
P_MAX = 100.0


def check_p_range(p: Any, name: str = "p") -> float:
    """``p`` as a float, or ``ValueError`` unless P_MIN <= p <= P_MAX (the range of the solvers and experiments)."""
    pf = check_p(p, name)
    if not P_MIN <= pf <= P_MAX:
        raise ValueError(
            f"{name} = {p!r} is outside [{P_MIN:g}, {P_MAX:g}], the range of p that the l_p-SVM solvers and the "
            f"synthetic experiments support (beyond it the mirror map |w|^(p-1) over- or underflows float64); "
            "choose p in that range"
        )
    return pf


def snap_exponent(e: float) -> float:
    """Snap ``e`` to the nearest integer or half-integer when within 1e-9 relative.

    ``1/(1.1 - 1)`` is 9.999999999999991 in floating point; snapping makes it 10 so that the
    exact integer-power path is taken. The change to the result is ~1e-15 * log|u| relative.
    """
    for cand in (round(e), round(2.0 * e) / 2.0):
        if cand != 0 and abs(e - cand) <= _SNAP_RTOL * max(1.0, abs(e)):
            return float(cand)
    return float(e)


def dual_exponent(p: float) -> float:
    """The dual exponent q = p / (p - 1) (snapped), so that 1/p + 1/q = 1."""
    p = check_p(p)
    return snap_exponent(p / (p - 1.0))


def forward_exponent(p: float) -> float:
    """Exponent of the mirror map, p - 1 (snapped)."""
    return snap_exponent(check_p(p) - 1.0)


def inverse_exponent(p: float) -> float:
    """Exponent of the inverse mirror map, 1 / (p - 1) (snapped: p = 1.1 gives exactly 10)."""
    return snap_exponent(1.0 / (check_p(p) - 1.0))


def _is_torch(x: Array) -> bool:
    return isinstance(x, torch.Tensor)


def _signed_pow(x: Array, e: float) -> Array:
    """sign(x) * |x|^e, with fast exact paths for e = 1, 2, 1/2 and small integers."""
    if e == 1.0:
        return x.clone() if _is_torch(x) else np.array(x, copy=True)
    if _is_torch(x):
        a = x.abs()
        if e == 0.5:
            m = a.sqrt()
        elif e == float(int(e)) and 0 < e <= 64:
            m = a.pow(int(e))
        else:
            m = a.pow(e)
        return torch.sign(x) * m
    return signed_power(np.asarray(x), e)


def signed_power(u: np.ndarray, e: float) -> np.ndarray:
    """sign(u) |u|^e of a NumPy array as a new array, with one temporary (the NumPy mirror maps, and the
    synthetic experiments' step, which runs it every iteration): exact paths for e = 1, 1/2 and whole e <= 64."""
    if e == 1.0:
        return np.array(u, copy=True)
    a = np.abs(u)
    if e == 0.5:
        np.sqrt(a, out=a)
    elif e == float(int(e)) and 0 < e <= 64:
        a = a ** int(e)
    else:
        np.power(a, e, out=a)
    return np.copysign(a, u, out=a)


def lp_norms(g: np.ndarray, q: float) -> np.ndarray:
    """||g_s||_q of every g_s = g[s] (the first axis is the batch), shaped (S, 1, ...) to broadcast against g;
    scaled by max|g_s| first, as :func:`lp_norm` (equal to ``lp_norm(g, q, batch_dims=1)``, tested), with one
    temporary and no checks (the synthetic experiments' normalised step runs it every iteration)."""
    r = np.abs(g)
    m = r.reshape(r.shape[0], -1).max(axis=1).reshape((-1,) + (1,) * (g.ndim - 1))
    safe = np.where(m > 0, m, 1.0)
    r /= safe
    if q == 2.0:
        r *= r
    elif q == 1.5:
        r *= np.sqrt(r)
    else:
        np.power(r, q, out=r)
    s = r.reshape(r.shape[0], -1).sum(axis=1).reshape(m.shape)
    return np.where(m > 0, safe * s ** (1.0 / q), 0.0)


def mirror_map(w: Array, p: float) -> Array:
    """grad psi(w) = sign(w) |w|^(p-1), elementwise."""
    return _signed_pow(w, forward_exponent(p))


def inverse_mirror_map(u: Array, p: float) -> Array:
    """grad psi*(u) = sign(u) |u|^(1/(p-1)), elementwise; inverse of :func:`mirror_map`."""
    return _signed_pow(u, inverse_exponent(p))


def _axes(x: Array, batch_dims: int) -> tuple[int, ...]:
    nd = x.ndim
    if not 0 <= batch_dims <= nd:
        raise ValueError(f"batch_dims must be in [0, {nd}] for an array of {nd} dims, got {batch_dims}")
    return tuple(range(batch_dims, nd))


def _sum(x: Array, axes: tuple[int, ...]) -> Array:
    if _is_torch(x):
        return x.sum(dim=axes) if axes else x
    return np.sum(x, axis=axes) if axes else x


def _amax(x: Array, axes: tuple[int, ...]) -> Array:
    if _is_torch(x):
        return x.abs().amax(dim=axes) if axes else x.abs()
    return np.max(np.abs(x), axis=axes) if axes else np.abs(x)


def lp_norm(w: Array, p: float, batch_dims: int = 0) -> Array:
    """Entrywise l_p norm (sum |w|^p)^(1/p), scaled by max|w| first so that it cannot overflow."""
    p = check_p(p) if p != math.inf else p
    axes = _axes(w, batch_dims)
    m = _amax(w, axes)
    if _is_torch(w):
        safe = torch.where(m > 0, m, torch.ones_like(m))
        shape = tuple(m.shape) + (1,) * len(axes)
        r = _sum((w.abs() / safe.reshape(shape)).pow(p), axes).pow(1.0 / p)
        return torch.where(m > 0, safe * r, torch.zeros_like(r))
    w = np.asarray(w)
    m = np.asarray(m)
    safe = np.where(m > 0, m, 1.0)
    shape = m.shape + (1,) * len(axes)
    r = _sum((np.abs(w) / safe.reshape(shape)) ** p, axes) ** (1.0 / p)
    out = np.where(m > 0, safe * r, 0.0)
    return out if out.ndim else float(out)


def lp_potential(w: Array, p: float, batch_dims: int = 0) -> Array:
    """psi(w) = ||w||_p^p / p."""
    p = check_p(p)
    axes = _axes(w, batch_dims)
    a = w.abs() if _is_torch(w) else np.abs(np.asarray(w))
    out = _sum(a**p, axes) / p
    return out if _is_torch(out) or np.ndim(out) else float(out)


def bregman_divergence(a: Array, b: Array, p: float, batch_dims: int = 0) -> Array:
    """D_psi(a, b) = psi(a) - psi(b) - <grad psi(b), a - b>  (>= 0, zero iff a == b).

    Computed as ||a||_p^p / p + (p-1) ||b||_p^p / p - <grad psi(b), a>.
    """
    p = check_p(p)
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"bregman_divergence needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    axes = _axes(a, batch_dims)
    inner = _sum(mirror_map(b, p) * a, axes)
    out = lp_potential(a, p, batch_dims) + (p - 1.0) * lp_potential(b, p, batch_dims) - inner
    return out if _is_torch(out) or np.ndim(out) else float(out)


def normalize_lp(w: Array, p: float, batch_dims: int = 0) -> Array:
    """w / ||w||_p (per batch entry). A zero array raises ``ValueError``: it has no direction."""
    n = lp_norm(w, p, batch_dims)
    zero = bool((n == 0).any()) if _is_torch(n) else bool(np.any(np.asarray(n) == 0))
    if zero:
        raise ValueError("cannot normalise a zero array: it has no direction")
    nd = w.ndim - batch_dims
    if _is_torch(n):
        return w / n.reshape(tuple(n.shape) + (1,) * nd)
    return np.asarray(w) / np.reshape(n, np.shape(n) + (1,) * nd)


def directional_bregman(a: Array, b: Array, p: float, batch_dims: int = 0) -> Array:
    """D_psi(a / ||a||_p, b / ||b||_p): the Bregman divergence between the two directions."""
    return bregman_divergence(normalize_lp(a, p, batch_dims), normalize_lp(b, p, batch_dims), p, batch_dims)


__all__ = [
    "P_MAX",
    "P_MIN",
    "bregman_divergence",
    "check_p",
    "check_p_range",
    "directional_bregman",
    "dual_exponent",
    "forward_exponent",
    "inverse_exponent",
    "inverse_mirror_map",
    "lp_norm",
    "lp_norms",
    "lp_potential",
    "mirror_map",
    "normalize_lp",
    "snap_exponent",
    "signed_power",
]
