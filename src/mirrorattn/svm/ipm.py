"""The working-set solve of a small l_p max-margin problem by a dense primal-dual interior-point method.

For up to a few hundred variables (the attention's d x d with d <= 31, every decoder) the conic
solver spends its time factorising a KKT system whose constraint block is dense (Clarabel's sparse
LDL has no dense kernels: ~30 ms per iteration at 600 rows x 256 variables). This module solves

    min f(w) = ||w||_p^p / p   s.t.  A w - s = 1,  s >= 0      (multipliers lam >= 0)

by Mehrotra's predictor-corrector, whose Newton step needs one Cholesky factorisation of an
n_vars x n_vars matrix (O(k m^2) to form for k rows and m variables, O(m^3) to factor) and two solves:

- p >= 2 (:class:`_Primal`): iterates (w, s, lam), matrix H + A^T diag(lam / s) A with the bounded
  separable Hessian H = diag((p - 1) |w|^(p - 2));
- p < 2 (:class:`_Dual`): |w|^(p - 2) blows up where w_j -> 0 (p = 1.1 solutions have many tiny entries),
  so the iterates are (s, lam) with w = grad f*(A^T lam) = sign(u) |u|^(q - 1) (q = p / (p - 1) >= 2: smooth).
  Its Newton matrix diag(s / lam) + A Phi A^T (Phi = Hess f*, k x k) is solved through the m x m matrix
  I + B^T diag(lam / s) B, B = A Phi^(1/2) (Woodbury), with iterative refinement (Woodbury loses digits
  as s -> 0 on the support).

Steps keep s, lam > 0 (fraction to the boundary) and are halved until the merit (the largest of the
residuals and the complementarity, relative) falls; far from the optimum a few steps are taken
although it rises. Where the steps stall at rounding error short of the tolerance, Newton on the
support set (:func:`mirrorattn.svm.polish.polish_working_set`) finishes; where the iteration fails
(an infeasible working set, a stall) the round falls back to the conic solver. The multipliers lam
are those of f; the duals of the norm objective ||w||_p are lam / ||w||_p^(p - 1).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import scipy.linalg

from mirrorattn.mirror import lp_norm, signed_power
from mirrorattn.svm.polish import polish_working_set

#: the working sets of problems with at most this many variables are solved here (attention: d <= 31)
IPM_MAX_VARS = 1023
#: the p range: outside it |w|^(p - 2) is too badly scaled for a Newton step (the conic solver is used)
IPM_P_RANGE = (1.05, 10.0)
_MAX_ITER = 200
#: relative residuals and complementarity at which the iteration stops
_TOL = 1e-10
#: ... and the level accepted when the steps stall at rounding error (Newton on the support set then finishes)
_ACCEPT = 1e-5
_STEP_TO_BOUNDARY = 0.99
#: a shorter step to the boundary counts as a stall
_MIN_STEP = 1e-6
#: steps taken although the merit did not fall (Mehrotra's own rule), at most this many per solve
_NONMONOTONE = 20
#: a warm start shifts the last multipliers by this fraction of their mean and the slacks by this much
_WARM_SHIFT, _WARM_SLACK = 0.01, 0.1
#: iterative-refinement steps of the dual form's Woodbury solve
_REFINE = 4


def ipm_applies(n_vars: int, p: float) -> bool:
    """Whether :func:`solve_lp_ipm` is the working-set solver for ``n_vars`` variables and exponent ``p``."""
    return n_vars <= IPM_MAX_VARS and IPM_P_RANGE[0] <= p <= IPM_P_RANGE[1]


def _derivatives(w: np.ndarray, p: float) -> tuple[np.ndarray, np.ndarray]:
    """(grad f, diag of Hess f) at w for f = ||w||_p^p / p, p >= 2."""
    g = signed_power(w, p - 1.0)
    return g, (np.ones_like(w) if p == 2.0 else (p - 1.0) * np.abs(w) ** (p - 2.0))


def _start(A: np.ndarray, p: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A first (w, s, lam) of the primal form: w along A^T 1 with mean margin 2, s = max(A w - 1, 1),
    lam balancing grad f."""
    v = A.sum(axis=0)
    w = v * (2.0 * A.shape[0] / max(float(v @ v), 1e-300)) if v.any() else np.ones(A.shape[1])
    s = np.maximum(A @ w - 1.0, 1.0)
    g, _ = _derivatives(w, p)
    lam = np.full(A.shape[0], max(float(np.abs(g).max()) / max(float(np.abs(A).sum(axis=0).max()), 1e-300), 1e-8))
    return w, s, lam


def _merit(r_d: np.ndarray, r_p: np.ndarray, s: np.ndarray, lam: np.ndarray, gscale: float) -> float:
    """max(relative dual residual, primal residual, complementarity s^T lam relative to sum(lam))."""
    gap = float(s @ lam) / max(float(lam.sum()), 1e-300)
    return max(float(np.abs(r_d).max()) / gscale if r_d.size else 0.0, float(np.abs(r_p).max()), gap)


def _max_step(x: np.ndarray, dx: np.ndarray) -> float:
    neg = dx < 0
    return float(min(1.0, (-x[neg] / dx[neg]).min())) if neg.any() else 1.0


class _Primal:
    """Iterates (w, s, lam), Newton matrix H + A^T diag(lam / s) A (p >= 2: the Hessian of f is bounded)."""

    def __init__(self, A: np.ndarray, p: float) -> None:
        self.A, self.p = A, p

    def start(self) -> tuple[np.ndarray, ...]:
        """(s, lam, w) of :func:`_start`."""
        w, s, lam = _start(self.A, self.p)
        return s, lam, w

    def evaluate(self, s: np.ndarray, lam: np.ndarray, w: np.ndarray, trial: bool = False) -> tuple[float, Any]:
        """(merit, state for :meth:`direction`) at the point; a ``trial`` point of the line search keeps the
        gradient scale of the last point that was not one (so that merits compare)."""
        g, h = _derivatives(w, self.p)
        r_d, r_p = g - self.A.T @ lam, self.A @ w - s - 1.0
        if not trial:
            self.gscale = max(1.0, float(np.abs(g).max()))
        return _merit(r_d, r_p, s, lam, self.gscale), (r_d, r_p, h)

    def direction(self, s: np.ndarray, lam: np.ndarray, state: Any) -> Callable[[np.ndarray], tuple] | None:
        """The Newton step (ds, dlam, dw) as a function of the complementarity residual r_c; None if singular."""
        r_d, r_p, h = state
        A = self.A
        K = (A.T * (lam / s)) @ A
        K[np.diag_indices_from(K)] += h
        chol = _cholesky(K)
        if chol is None:
            return None

        def step(r_c: np.ndarray) -> tuple[np.ndarray, ...]:
            dw = scipy.linalg.cho_solve(chol, -r_d - A.T @ ((r_c + lam * r_p) / s), check_finite=False)
            ds = A @ dw + r_p
            return ds, (-r_c - lam * ds) / s, dw

        return step


class _Dual:
    """Iterates (s, lam) with w = grad f*(A^T lam) (p < 2: q >= 2 keeps grad f* smooth where w_j -> 0);
    Newton matrix diag(s / lam) + A Phi A^T (Phi = Hess f*) solved through the m x m matrix I + B^T diag(lam / s) B,
    B = A Phi^(1/2) (Woodbury)."""

    def __init__(self, A: np.ndarray, p: float) -> None:
        self.A, self.p, self.q = A, p, p / (p - 1.0)

    def primal(self, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(w = grad f*(A^T lam), diag of Hess f* there)."""
        u = self.A.T @ lam
        return signed_power(u, self.q - 1.0), (self.q - 1.0) * np.abs(u) ** (self.q - 2.0)

    def start(self) -> tuple[np.ndarray, ...]:
        """lam = c 1 with the mean margin of grad f*(A^T lam) equal to 2, s = max(A w - 1, 1)."""
        k = self.A.shape[0]
        w1, _ = self.primal(np.ones(k))
        mean = float((self.A @ w1).mean())
        c = (2.0 / mean) ** (1.0 / (self.q - 1.0)) if mean > 0 else 1.0
        lam = np.full(k, c)
        w, _ = self.primal(lam)
        return np.maximum(self.A @ w - 1.0, 1.0), lam

    def evaluate(self, s: np.ndarray, lam: np.ndarray, trial: bool = False) -> tuple[float, Any]:
        """(merit, state for :meth:`direction`) at the point (no dual residual: it is 0 by construction)."""
        w, phi = self.primal(lam)
        r_p = self.A @ w - s - 1.0
        return _merit(np.empty(0), r_p, s, lam, 1.0), (r_p, phi)

    def direction(self, s: np.ndarray, lam: np.ndarray, state: Any) -> Callable[[np.ndarray], tuple] | None:
        """The Newton step (ds, dlam) as a function of the complementarity residual r_c; None if singular."""
        r_p, phi = state
        B = self.A * np.sqrt(phi)
        E = lam / s  # the inverse of N = diag(s / lam)
        K = (B.T * E) @ B
        K[np.diag_indices_from(K)] += 1.0
        chol = _cholesky(K)
        if chol is None:
            return None

        def solve(b: np.ndarray) -> np.ndarray:
            return E * b - E * (B @ scipy.linalg.cho_solve(chol, B.T @ (E * b), check_finite=False))

        def step(r_c: np.ndarray) -> tuple[np.ndarray, ...]:
            b = -r_p - r_c / lam
            dlam = solve(b)
            for _ in range(_REFINE):  # Woodbury loses digits as s -> 0 on the support: iterative refinement
                res = b - s / lam * dlam - B @ (B.T @ dlam)
                if float(np.abs(res).max()) <= 1e-13 * float(np.abs(b).max()):
                    break
                dlam += solve(res)
            ds = self.A @ (phi * (self.A.T @ dlam)) + r_p
            return ds, dlam

        return step


def _cholesky(K: np.ndarray) -> Any:
    try:
        return scipy.linalg.cho_factor(K, lower=True, check_finite=False)
    except (np.linalg.LinAlgError, ValueError):
        return None


def _iterate(form: Any, x: tuple[np.ndarray, ...]) -> tuple[tuple[np.ndarray, ...], float] | None:
    """Mehrotra predictor-corrector on ``form`` (:class:`_Primal` or :class:`_Dual`) from ``x``: the last point
    (s, lam[, w]) and its merit when that is at most :data:`_TOL`, or where the steps stall at a merit of at most
    :data:`_ACCEPT`; else None."""
    free = _NONMONOTONE
    for _ in range(_MAX_ITER):
        merit, state = form.evaluate(*x)
        if not np.isfinite(merit):
            return None
        if merit <= _TOL:
            return x, merit
        step = form.direction(x[0], x[1], state)
        if step is None:  # a singular Newton matrix: rounding level (s -> 0 on the support), or a failure
            return (x, merit) if merit <= _ACCEPT else None
        s, lam = x[0], x[1]
        mu = float(s @ lam) / len(s)
        d = step(s * lam)  # predictor (affine scaling)
        a_aff = min(_max_step(s, d[0]), _max_step(lam, d[1]))
        sigma = min((float((s + a_aff * d[0]) @ (lam + a_aff * d[1])) / len(s) / max(mu, 1e-300)) ** 3, 1.0)
        d = step(s * lam + d[0] * d[1] - sigma * mu)  # corrector
        alpha = _STEP_TO_BOUNDARY * min(_max_step(s, d[0]), _max_step(lam, d[1]))
        nxt = _line_search(form, x, d, alpha, merit) if alpha > _MIN_STEP else None
        if nxt is None and merit <= _ACCEPT:  # rounding level: Newton on the support finishes
            return x, merit
        if nxt is None:  # far from the optimum the merit may rise for a while: take the step (a few times)
            free -= 1
            if free < 0 or alpha <= _MIN_STEP:
                return None
            nxt = tuple(xi + alpha * di for xi, di in zip(x, d))
        x = nxt
    return None


def _line_search(form: Any, x: tuple, dx: tuple, alpha: float, merit: float) -> tuple[np.ndarray, ...] | None:
    """``x + alpha dx`` with alpha halved (at most 8 times) until the merit falls by a tenth of what Newton's
    model predicts, or None when it never does."""
    for _ in range(8):
        cand = tuple(xi + alpha * di for xi, di in zip(x, dx))
        if form.evaluate(*cand, trial=True)[0] <= (1.0 - 0.1 * alpha) * merit:  # Newton's model: 1 - alpha
            return cand
        alpha *= 0.5
    return None


def _warm_start(A: np.ndarray, p: float, lam0: np.ndarray) -> tuple[np.ndarray, ...]:
    """A start near multipliers ``lam0`` (the last working set's; 0 on new rows): lam0 + 1% of their mean,
    w = grad f*(A^T lam), s = max(A w - 1, 0) + 0.1 (measured at 30,000 constraints, d = 16: p = 1.1 from ~85 to
    ~30 iterations per working set; shifts of 10% and 0.5 failed)."""
    lam = lam0 + _WARM_SHIFT * float(lam0[lam0 > 0].mean())
    w = signed_power(A.T @ lam, 1.0 / (p - 1.0))
    s = np.maximum(A @ w - 1.0, 0.0) + _WARM_SLACK
    return (s, lam) if p < 2.0 else (s, lam, w)


def solve_lp_ipm(A: np.ndarray, p: float, lam0: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray,
                                                                                     float] | None:
    """(w, lam, merit): w minimising ||w||_p^p / p s.t. A w >= 1 with multipliers lam (of that objective) to the
    relative accuracy ``merit`` (:data:`_TOL`; up to :data:`_ACCEPT` where rounding stalls the steps), or None
    when the iteration did not converge (infeasible rows, or a stall). p < 2 iterates on the multipliers
    (:class:`_Dual`), p >= 2 on (w, s, lam) (:class:`_Primal`). ``lam0`` (>= 0, one per row): a warm start,
    from the cold one if that fails."""
    form = _Dual(A, p) if p < 2.0 else _Primal(A, p)
    out = None
    if lam0 is not None and np.any(lam0 > 0):
        out = _iterate(form, _warm_start(A, p, lam0))
    if out is None:
        out = _iterate(form, form.start())
    if out is None:
        return None
    x, merit = out
    w = x[2] if len(x) > 2 else form.primal(x[1])[0]
    return w, x[1], merit


class IPMSubsolver:
    """Working-set solves of a constraint set by :func:`solve_lp_ipm`, each warm-started from the last one's
    multipliers: ``self(flat)`` returns ``(w, duals of ||w||_p, "optimal")`` or ``None`` (the core then uses the
    conic solver)."""

    unbounded = False

    def __init__(self, cs: Any, p: float) -> None:
        self.cs, self.p = cs, float(p)
        self.last = np.zeros(cs.valid.size)  # the last working set's multipliers (warm starts)

    def __call__(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, str] | None:
        out = solve_lp_ipm(self.cs.rows(flat), self.p, self.last[flat])
        if out is None:
            return None
        w, lam, merit = out
        self.last[:] = 0.0
        self.last[flat] = lam
        scale = float(lp_norm(w, self.p)) ** (self.p - 1.0)
        if not (np.isfinite(scale) and scale > 0):
            return None
        if merit > _TOL:  # stalled at rounding error short of _TOL: Newton on the support set finishes
            done = polish_working_set(self.cs, flat, w, lam / scale, self.p)
            return None if done is None else (*done, "optimal")
        return w, lam / scale, "optimal"


__all__ = ["IPM_MAX_VARS", "IPM_P_RANGE", "IPMSubsolver", "ipm_applies", "solve_lp_ipm"]
