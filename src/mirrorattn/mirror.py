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


#: largest whole exponent handled by repeated squaring (p = 1.005 gives 200)
MAX_INT_EXPONENT = 256

Kind = tuple  # ("identity",) | ("sqrt",) | ("int", n) | ("halfint", n) | ("third", n, k) | ("pow", e)


def exponent_kind(e: float) -> Kind:
    """Classify the (already snapped) exponent ``e > 0`` of sign(u)|u|^e into a fast path of :func:`signed_pow`.

    ``identity`` (e = 1: p = 2), ``sqrt`` (e = 1/2: p = 3), ``int`` (a whole e, e.g. 1/(1.1 - 1) = 10: repeated
    squaring), ``halfint`` (n + 1/2: repeated squaring times a square root), ``third`` (n + 1/3 or n + 2/3 with
    n >= 1, e.g. 4/3 for p = 1.75: ``pow`` here, a cube root in the optimizer's compiled kernels), ``pow`` else.
    """
    if e == 1.0:
        return ("identity",)
    if e == 0.5:
        return ("sqrt",)
    if e == float(int(e)) and 1 < e <= MAX_INT_EXPONENT:
        return ("int", int(e))
    if (2.0 * e) == float(int(2.0 * e)) and 1 < e <= MAX_INT_EXPONENT:
        return ("halfint", int(e))  # e = n + 1/2
    t = round(3.0 * e)
    if abs(3.0 * e - t) <= 1e-12 * t and t % 3 and 3 <= t <= 3 * MAX_INT_EXPONENT:
        return ("third", t // 3, t % 3)  # e = n + k/3, n >= 1
    return ("pow", float(e))


def kind_exponent(kind: Kind) -> float:
    """The exponent e that ``kind`` stands for (the inverse of :func:`exponent_kind`)."""
    k = kind[0]
    if k == "identity":
        return 1.0
    if k == "sqrt":
        return 0.5
    if k == "int":
        return float(kind[1])
    if k == "halfint":
        return kind[1] + 0.5
    if k == "third":
        return kind[1] + kind[2] / 3.0
    return float(kind[1])


def pow_int(a: Array, n: int) -> Array:
    """a**n for a whole n >= 1 by repeated squaring (out of place; exact up to n-1 roundings)."""
    result = None
    base = a
    while True:
        if n & 1:
            result = base if result is None else result * base
        n >>= 1
        if not n:
            return result
        base = base * base


def abs_pow(a: Array, kind: Kind) -> Array:
    """a^e of ``a >= 0`` (a tensor or a NumPy array) for the exponent ``kind`` of e (no sign handling: what a
    norm's sum of |x|^q needs): repeated squaring and square roots where the kind has them, else ``pow``."""
    k = kind[0]
    if k == "identity":
        return a
    if k == "int":
        return pow_int(a, kind[1])
    if k in ("sqrt", "halfint"):
        root = a.sqrt() if _is_torch(a) else np.sqrt(a)
        return root if k == "sqrt" else pow_int(a, kind[1]) * root
    return a.pow(kind_exponent(kind)) if _is_torch(a) else np.power(a, kind_exponent(kind))


def signed_pow(u: Array, kind: Kind, *, out: Array | None = None) -> Array:
    """sign(u) |u|^e of a tensor or a NumPy array for the exponent ``kind`` of e (:func:`exponent_kind`): the
    optimizer's step (``int``: u |u|^(n-1) by repeated squaring; ``sqrt``, ``halfint``: square roots; else
    ``pow``). The same operations in the same order for both kinds of array, so equal bit for bit where
    torch and NumPy round alike (multiplications, square roots; ``pow`` may differ in the last place).

    ``out``: written in place (a tensor of any float dtype: the result is rounded to it) and returned; else a
    new array, except for ``identity``, which returns ``u`` itself.
    """
    k, torch_u = kind[0], _is_torch(u)
    if k == "int" and kind[1] > 1 and not torch_u:
        return _numpy_signed_pow_int(np.asarray(u), kind[1], out)
    if k == "identity":
        r = u
    elif k == "int":
        r = u if kind[1] == 1 else u * pow_int(abs(u), kind[1] - 1)  # u |u|^(n-1) = sign(u) |u|^n
    elif torch_u:
        a = u.abs()
        if out is not None and out.dtype == u.dtype and k in ("sqrt", "pow", "third"):
            return torch.copysign(a.sqrt_() if k == "sqrt" else a.pow_(kind_exponent(kind)), u, out=out)
        r = torch.copysign(abs_pow(a, kind), u)
    else:
        return np.copysign(abs_pow(np.abs(u), kind), u, out=out)
    if out is None:
        return r
    if torch_u:
        return out.copy_(r)
    np.copyto(out, r)
    return out


def _numpy_signed_pow_int(u: np.ndarray, n: int, out: np.ndarray | None) -> np.ndarray:
    """u |u|^(n-1) = sign(u)|u|^n of a NumPy array for a whole n >= 2: :func:`pow_int`'s multiplications in the same
    order (so the same bits), in place in at most two temporaries and the result (a fresh array per power costs
    more than the arithmetic once the arrays leave the caches). Written into ``out`` when given (directly when it
    has u's dtype and shape and does not overlap u)."""
    direct = out is not None and out.dtype == u.dtype and out.shape == u.shape and not np.shares_memory(out, u)
    res_buf = out if direct else np.empty_like(u)
    a = np.empty_like(u)
    np.abs(u, out=a)
    base, res, m = a, None, n - 1
    while True:
        if m & 1:
            if res is None:
                res = base
            else:
                np.multiply(res, base, out=res_buf)
                res = res_buf
        m >>= 1
        if not m:
            break
        if res is base:  # the result so far is this power (once at most: res moves to res_buf after): keep it
            base = np.multiply(base, base, out=np.empty_like(u))
        else:
            np.multiply(base, base, out=base)
    np.multiply(u, res, out=res_buf)
    if out is None or direct:
        return res_buf
    np.copyto(out, res_buf)
    return out


def signed_pow_list(us: list[torch.Tensor], kind: Kind) -> list[torch.Tensor]:
    """[:func:`signed_pow` (u, kind) for u in us], bit for bit, with ``torch._foreach_*`` ops for the ``int`` and
    ``identity`` kinds (a few calls for the whole list, the same operations in the same order)."""
    k = kind[0]
    if k == "identity":
        return us
    if k != "int":
        return [signed_pow(u, kind) for u in us]
    n = kind[1]
    if n == 1:
        return us
    m, result = n - 1, None
    base = torch._foreach_abs(us)
    while True:
        if m & 1:
            result = base if result is None else torch._foreach_mul(result, base)
        m >>= 1
        if not m:
            return torch._foreach_mul(us, result)
        base = torch._foreach_mul(base, base)


def _signed_pow(x: Array, e: float) -> Array:
    """sign(x) * |x|^e as a new array: for torch ``pow`` (exact paths for e = 1 and 1/2 only; the mirror map
    rounds once, where :func:`signed_pow`'s repeated squaring rounds up to n - 1 times), for NumPy
    :func:`signed_power`."""
    if not _is_torch(x):
        return signed_power(np.asarray(x), e)
    if e == 1.0:
        return x.clone()
    return signed_pow(x, ("sqrt",) if e == 0.5 else ("pow", float(e)))


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


def lp_norms(g: Array, q: float, batch_dims: int = 1) -> Array:
    """||g_i||_q of every slice g_i = g[i_1, ..., i_b] over the dimensions after the first b = ``batch_dims``,
    shaped g.shape[:b] + (1, ...) to broadcast against g (b = 0: one norm, a 0-d array or tensor); computed on
    g_i / max|g_i| so that |g|^q cannot overflow or underflow (equal to ``lp_norm(g, q, batch_dims)``, tested).

    No checks and few temporaries: the optimizer's normalised step and the synthetic experiments run it every
    iteration. |x|^q through the exponent's fast path (:func:`abs_pow`; NumPy: exact paths for q = 2 and 3/2);
    a torch tensor with b = 0 through ``torch.linalg.vector_norm`` (one fused reduction).
    """
    lead = tuple(g.shape[:batch_dims])
    shape = lead + (1,) * (g.ndim - batch_dims) if batch_dims else ()
    if _is_torch(g):
        if not batch_dims:
            m = g.abs().amax()
            return torch.linalg.vector_norm(g / m.clamp_min(torch.finfo(g.dtype).tiny), q) * m
        r = g.reshape(lead + (-1,)).abs()
        m = r.amax(dim=-1, keepdim=True).clamp_min_(torch.finfo(g.dtype).tiny)
        r = abs_pow(r.div_(m), exponent_kind(q))
        return (r.sum(dim=-1, keepdim=True).pow_(1.0 / q) * m).reshape(shape)
    if not batch_dims:  # one norm: scalar arithmetic after the two reductions
        r = np.abs(g)
        m = r.max(initial=0.0)
        if not m > 0.0:
            return m * 0.0  # 0 (NaN for a NaN in g)
        r /= m
        return m * np.add.reduce(abs_pow(r, exponent_kind(q)), axis=None) ** (1.0 / q)
    r = np.abs(g).reshape((math.prod(lead), -1))
    m = r.max(axis=1, keepdims=True)
    safe = np.where(m > 0, m, 1.0)
    r /= safe
    if q == 2.0:
        r *= r
    elif q == 1.5:
        r *= np.sqrt(r)
    else:
        np.power(r, q, out=r)
    s = r.sum(axis=1, keepdims=True)
    return np.where(m > 0, safe * s ** (1.0 / q), 0.0).reshape(shape)


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
    "abs_pow",
    "bregman_divergence",
    "check_p",
    "check_p_range",
    "directional_bregman",
    "dual_exponent",
    "exponent_kind",
    "forward_exponent",
    "inverse_exponent",
    "inverse_mirror_map",
    "kind_exponent",
    "lp_norm",
    "lp_norms",
    "lp_potential",
    "mirror_map",
    "normalize_lp",
    "pow_int",
    "snap_exponent",
    "signed_pow",
    "signed_pow_list",
    "signed_power",
]
