"""A cheap approximate solution of an l_p max-margin problem, to seed the active set.

The dual of  min ||w||_p^p / p  s.t.  A w >= 1  is

    max_{lambda >= 0}  1^T lambda - ||A^T lambda||_q^q / q,      q = p / (p - 1),

with w(lambda) = grad psi*(A^T lambda) (the inverse mirror map). Its gradient is 1 - A w(lambda),
i.e. 1 - margins; both A^T lambda and the margins cost O(n T d + n d^2) through the constraint
set's structure, never the (m, d^2) matrix. A few hundred L-BFGS-B steps give a w whose
lowest-margin constraints are (nearly) the support set; the active set starts from those.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize

from mirrorattn.mirror import dual_exponent, inverse_mirror_map, lp_potential


def approximate_lp_solution(cs: Any, p: float, maxiter: int = 300) -> np.ndarray | None:
    """Approximate minimiser w (n_vars,) by L-BFGS-B on the dual; ``None`` if it produced no direction."""
    q = dual_exponent(p)
    valid = cs.valid.reshape(-1)
    lam_grid = np.zeros(valid.size)

    def fun(lam: np.ndarray) -> tuple[float, np.ndarray]:
        lam_grid[valid] = lam
        u = cs.rmatvec(lam_grid)
        w = inverse_mirror_map(u, p)
        marg = cs.margins(w).reshape(-1)[valid]
        f = -(lam.sum() - float(lp_potential(u, q))) if np.any(u) else -lam.sum()
        return f, -(1.0 - marg)

    res = minimize(fun, np.zeros(int(valid.sum())), jac=True, method="L-BFGS-B",
                   bounds=[(0.0, None)] * int(valid.sum()), options={"maxiter": maxiter})
    lam_grid[valid] = res.x
    w = inverse_mirror_map(cs.rmatvec(lam_grid), p)
    return w if np.all(np.isfinite(w)) and np.any(w) else None


__all__ = ["approximate_lp_solution"]
