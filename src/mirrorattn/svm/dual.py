"""The working-set solve of a large l_p-AttSVM on its dual, with the rows kept as rank-one factors.

For d x d variables (d = 64: 4,096) with a query per sample, the conic solver's KKT systems are
dense in every variable and a working set of a few hundred rows takes minutes. The problem
``min ||W||_p^p / p s.t. a_i^T W z_i >= 1`` (a_i = x_{i,alpha_i} - x_it) has the smooth dual

    max_{lam >= 0}  sum_i lam_i - ||M(lam)||_q^q / q,   M(lam) = sum_i lam_i a_i z_i^T,  1/p + 1/q = 1,

whose gradient in lam_i is ``1 - a_i^T W z_i`` with W = sign(M) |M|^(q-1) (the inverse mirror map):
each evaluation is two (k x d) x (d x d) matrix products, never the k x d^2 matrix. It is
maximised by L-BFGS-B (SciPy) from the last round's multipliers; the core's constraint
generation then adds what the answer violates, and its Newton polish (:mod:`mirrorattn.svm.polish`)
makes the final answer exact with a KKT certificate. When L-BFGS-B stalls short of the working-set
optimum, Newton on the support (the same polish, on the working set) finishes it; when that fails too
the round falls back to the conic solver; when it is unbounded (the working set is infeasible) the core's
Farkas certificate names the samples.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from mirrorattn.mirror import dual_exponent, inverse_mirror_map, lp_norm
from mirrorattn.svm.polish import polish_working_set

#: attention problems with at least this many variables (d >= 32) and a query per sample use the dual
DUAL_MIN_VARS = 1024
#: the p range the dual is used for: q = p / (p - 1) below ~21 keeps |M|^q finite and L-BFGS-B well scaled
DUAL_P_RANGE = (1.05, 10.0)
#: a round counts as converged when every working-set margin is at least 1 - this
_ACCEPT_SLACK = 1e-6
#: L-BFGS-B runs per working set at most (each from where the last stopped)
_RESTARTS = 5
_LBFGS = {"maxiter": 20_000, "ftol": 1e-15, "gtol": 1e-11, "maxcor": 30}


def dual_applies(n_vars: int, p: float) -> bool:
    """Whether :class:`DualSubsolver` is the working-set solver for ``n_vars`` variables and exponent ``p``."""
    return n_vars >= DUAL_MIN_VARS and DUAL_P_RANGE[0] <= p <= DUAL_P_RANGE[1]


class DualSubsolver:
    """Working-set solves of an :class:`~mirrorattn.svm.constraints.AttentionConstraints` problem on the dual.

    ``self(flat)`` returns ``(w, duals, status)`` as the conic solve of the rows ``flat`` would (duals of the
    norm objective ||W||_p), or ``None`` when L-BFGS-B did not reach the working-set optimum (the caller
    falls back to the conic solver). Multipliers are remembered between calls (warm starts).
    """

    def __init__(self, cs, p: float) -> None:  # noqa: ANN001 - an AttentionConstraints (import cycle)
        self.cs, self.p, self.q = cs, float(p), dual_exponent(p)
        self.last = np.zeros(cs.valid.size)
        self.unbounded = False

    def _primal(self, lam: np.ndarray, a: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(M = sum_i lam_i a_i z_i^T, W = grad psi*(M), the margins a_i^T W z_i) of the multipliers ``lam``."""
        M = (a * lam[:, None]).T @ z
        W = inverse_mirror_map(M, self.p)  # sign(M) |M|^(q-1)
        return M, W, np.einsum("kd,kd->k", a, z @ W.T)

    def _objective(self, a: np.ndarray, z: np.ndarray):  # noqa: ANN202 - (value, gradient) callable
        def f(lam: np.ndarray) -> tuple[float, np.ndarray]:
            M, _, margins = self._primal(lam, a, z)
            return float((np.abs(M) ** self.q).sum() / self.q - lam.sum()), margins - 1.0

        return f

    def _start(self, flat: np.ndarray, a: np.ndarray, z: np.ndarray) -> np.ndarray:
        """The last multipliers of these rows; in a first round the best multiple of all-ones (closed form)."""
        lam = self.last[flat].copy()
        if lam.any():
            return lam
        norm_q = float(np.sum(np.abs(a.T @ z) ** self.q))
        return np.full(len(flat), (len(flat) / max(norm_q, 1e-300)) ** (1.0 / (self.q - 1.0)))

    def _maximise(self, flat: np.ndarray, a: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, float,
                                                                                  np.ndarray]:
        """(multipliers, W, dual objective, working-set margins) after L-BFGS-B, restarted (a fresh curvature
        model) from where it stopped while the margins still fall short of 1 and the objective still falls."""
        f = self._objective(a, z)
        lam, best = self._start(flat, a, z), np.inf
        for _ in range(_RESTARTS):
            with np.errstate(over="ignore", invalid="ignore"):
                res = minimize(f, lam, jac=True, method="L-BFGS-B", bounds=[(0.0, None)] * len(flat), options=_LBFGS)
            lam = np.maximum(res.x, 0.0)
            with np.errstate(over="ignore", invalid="ignore"):
                _, W, margins = self._primal(lam, a, z)
            if not (np.all(np.isfinite(W)) and np.isfinite(res.fun)) or res.fun >= best:
                break
            best = float(res.fun)
            if float(margins.min()) >= 1.0 - _ACCEPT_SLACK:
                break
        return lam, W, float(res.fun), margins

    def __call__(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, str] | None:
        a, z = self.cs.factors(flat)
        lam, W, fun, margins = self._maximise(flat, a, z)
        if not np.all(np.isfinite(W)) or not np.isfinite(fun):
            self.unbounded = True
            return None
        duals = lam / float(lp_norm(W, self.p)) ** (self.p - 1.0)  # of ||W||_p, from those of ||W||_p^p / p
        if float(margins.min()) < 1.0 - _ACCEPT_SLACK:
            self.unbounded = bool(fun < -1e12 * max(1.0, float(len(flat))))
            out = None if self.unbounded else self._newton(flat, W.ravel(), duals)
            if out is None:
                return None
            w, duals = out
            W = w.reshape(W.shape)
            lam = duals * float(lp_norm(W, self.p)) ** (self.p - 1.0)
        self.last[:] = 0.0
        self.last[flat] = lam
        return W.ravel(), duals, "optimal"

    def _newton(self, flat: np.ndarray, w: np.ndarray, duals: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The working set's exact optimum by Newton on its support from where L-BFGS-B stopped (L-BFGS-B stalls
        where W has zeros and q < 2 makes the dual's curvature unbounded), or None."""
        return polish_working_set(self.cs, flat, w, duals, self.p)


__all__ = ["DUAL_MIN_VARS", "DUAL_P_RANGE", "DualSubsolver", "dual_applies"]
