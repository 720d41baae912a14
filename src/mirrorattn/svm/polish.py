"""Newton polish of an l_p max-margin solution on its support set.

An interior-point solve meets the objective to ~1e-9 but W itself only to ~1e-5 (the objective
is flat near the optimum). Given the support set S (constraints with a positive dual), the
optimum of min ||w||_p^p / p s.t. A_S w = 1 satisfies

    w = grad psi*(A_S^T mu)        (psi = ||.||_p^p / p, grad psi* the inverse mirror map)
    A_S grad psi*(A_S^T mu) = 1,

a smooth system of |S| equations in mu, solved by Newton from the solver's duals. The polished
point is kept only if Newton converged, every mu >= 0, every constraint of the full problem
holds (margin >= 1 - tol) and the objective did not rise; otherwise the solver's answer stays.
The duals of the norm objective ||w||_p are mu / ||w||_p^(p-1).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import scipy.linalg

from mirrorattn.mirror import inverse_exponent, inverse_mirror_map, lp_norm

_MAX_NEWTON = 50
_RESIDUAL_TOL = 1e-13
_ACCEPT_TOL = 1e-10
_MAX_ROUNDS = 8


def _solve_gram(B: np.ndarray, rhs: np.ndarray) -> np.ndarray | None:
    """The solution of (B B^T) x = rhs: Cholesky (B @ B.T is one symmetric product), LU where that fails
    (numerically semi-definite), None when singular."""
    J = B @ B.T
    try:
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(J, lower=True, check_finite=False), rhs,
                                      check_finite=False)
    except (np.linalg.LinAlgError, ValueError):
        pass
    try:
        return np.linalg.solve(J, rhs)
    except np.linalg.LinAlgError:
        return None


def newton_support(A_S: np.ndarray, mu0: np.ndarray, p: float) -> np.ndarray | None:
    """Solve A_S grad psi*(A_S^T mu) = 1 for mu by damped Newton; ``None`` if it fails."""
    e = inverse_exponent(p)
    mu = mu0.astype(np.float64).copy()

    def residual(m: np.ndarray) -> np.ndarray:
        return A_S @ inverse_mirror_map(A_S.T @ m, p) - 1.0

    r = residual(mu)
    for _ in range(_MAX_NEWTON):
        nr = float(np.abs(r).max())
        if nr <= _RESIDUAL_TOL:
            return mu
        u = A_S.T @ mu
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            dmap = e * np.abs(u) ** (e - 1.0)
        if not np.all(np.isfinite(dmap)):
            return None
        step = _solve_gram(A_S * np.sqrt(dmap), -r)
        if step is None:
            return None
        t = 1.0
        while t > 1e-6:
            cand = mu + t * step
            rc = residual(cand)
            if np.all(np.isfinite(rc)) and float(np.abs(rc).max()) < nr:
                mu, r = cand, rc
                break
            t *= 0.5
        else:
            break  # no further decrease: rounding level reached (or Newton failed; checked below)
    return mu if float(np.abs(r).max()) <= _ACCEPT_TOL else None


def _clearly_full_row_rank(A: np.ndarray) -> bool:
    """True when the rows of A are independent with sigma_min / sigma_max > 1e-5 (so that SVD's rank agrees):
    lambda_min(A A^T) >= 1 / ||L^-1||_F^2 for the Cholesky factor L, against trace(A A^T) >= lambda_max.
    A third of an SVD's cost (d = 64: 2,000 x 4,096 rows); False says nothing (the SVD decides)."""
    G = A @ A.T
    try:
        L = scipy.linalg.cholesky(G, lower=True, check_finite=False)
    except (np.linalg.LinAlgError, ValueError):
        return False
    inv = scipy.linalg.solve_triangular(L, np.eye(len(G)), lower=True, check_finite=False)
    return 1.0 / float(np.sum(inv * inv)) > 1e-10 * float(np.trace(G))


def _independent(A_S: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mask of a maximal linearly independent subset of the rows, largest weights first (pivoted QR)."""
    keep = np.ones(A_S.shape[0], dtype=bool)
    if A_S.shape[0] <= A_S.shape[1] and (_clearly_full_row_rank(A_S) or np.linalg.matrix_rank(A_S) == A_S.shape[0]):
        return keep
    _, R, piv = scipy.linalg.qr(A_S.T * weights, mode="economic", pivoting=True)
    diag = np.abs(np.diag(R))
    rank = int(np.sum(diag > 1e-10 * diag.max()))
    keep[:] = False
    keep[piv[:rank]] = True
    return keep


def _norm_power(w: np.ndarray, p: float) -> float | None:
    """||w||_p^(p-1), the factor between the duals of ||w||_p and of ||w||_p^p / p; ``None`` when it
    overflows or underflows (large p: the polish is then skipped, the solver's answer stays)."""
    with np.errstate(over="ignore", under="ignore"):
        s = np.float64(lp_norm(w, p)) ** (p - 1.0)
    return float(s) if np.isfinite(s) and s > 0 else None


def polish_lp(
    w: np.ndarray,
    lam: np.ndarray,
    rows: Callable[[np.ndarray], np.ndarray],
    flat: np.ndarray,
    margins_all: Callable[[np.ndarray], np.ndarray],
    valid: np.ndarray,
    p: float,
    tol: float,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Polished (w, duals on ``flat``) or ``None`` when no KKT point was certified.

    ``lam`` are the solver's duals (for the norm objective) on the working set ``flat``. The
    support guess (positive dual and margin within 1e-4 of 1) is corrected for a few rounds, as a
    primal-dual active set method: rows with a negative multiplier leave, working-set rows that the
    polished point violates join. The answer is returned only with a full KKT certificate:
    multipliers >= 0, every constraint of the problem at margin >= 1 - tol, support rows at
    margin 1 (to 1e-10) and stationarity (exact by construction).
    """
    if lam.size == 0 or lam.max() <= 0:
        return None
    marg_w = margins_all(w).reshape(-1)[flat]
    on = (lam > 1e-6 * lam.max()) & (marg_w <= 1.0 + 1e-4)
    scale = _norm_power(w, p)
    if scale is None:
        return None
    mu_full = lam * scale
    for _ in range(_MAX_ROUNDS):
        idx = np.flatnonzero(on)
        keep = _independent(rows(flat[idx]), np.maximum(mu_full[idx], 1e-300))
        on[idx[~keep]] = False
        idx = idx[keep]
        A_S = rows(flat[idx])
        mu = newton_support(A_S, np.maximum(mu_full[idx], 0.0), p)
        if mu is None:
            return None
        mu_full[:] = 0.0
        mu_full[idx] = mu
        if np.any(mu < 0):
            on[idx[mu < 0]] = False
            continue
        w_new = inverse_mirror_map(A_S.T @ mu, p)
        marg_grid = margins_all(w_new).reshape(-1)
        if marg_grid[valid.reshape(-1)].min() >= 1.0 - tol:
            scale = _norm_power(w_new, p)
            return None if scale is None else (w_new, mu_full / scale)
        bad = marg_grid[flat] < 1.0 - tol
        if not bad.any():
            return None  # violated constraints outside the working set: not a solution yet
        on |= bad
    return None


def polish_working_set(cs: Any, flat: np.ndarray, w: np.ndarray, duals: np.ndarray,
                       p: float) -> tuple[np.ndarray, np.ndarray] | None:
    """The exact optimum (w, duals) of the constraints ``flat`` of ``cs`` alone (a working set) by :func:`polish_lp`
    from an approximate one, or None. The working-set solvers finish with it where their own iteration stalls."""
    work = np.zeros(cs.valid.size, dtype=bool)
    work[flat] = True

    def margins(v: np.ndarray) -> np.ndarray:
        m = cs.margins(v).reshape(-1)
        m[~work] = np.inf
        return m

    return polish_lp(w, duals, cs.rows, flat, margins, work, p, 1e-9)


__all__ = ["newton_support", "polish_lp", "polish_working_set"]
