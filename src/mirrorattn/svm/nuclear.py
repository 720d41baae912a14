"""Nuclear-norm AttSVM, the K/Q form's counterpart: minimise ||W||_* s.t. the l_p-AttSVM constraints.

Solved with cvxpy's ``normNuc`` (a semidefinite cone, exact) by Clarabel, one-shot or by
constraint generation; the reported objective is the nuclear norm recomputed from the singular
values of the returned W.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import cvxpy as cp
import numpy as np

from mirrorattn.svm.attention import finish_attention
from mirrorattn.svm.constraints import AttentionConstraints
from mirrorattn.svm.core import solve
from mirrorattn.svm.result import AttentionSVMResult


@functools.lru_cache(maxsize=16)
def _nuclear_objective(d: int) -> Callable[[cp.Variable], cp.Expression]:
    """||reshape(w, (d, d))||_*, one function object per d (the solver core reuses its problems)."""

    def objective(w: cp.Variable) -> cp.Expression:
        return cp.normNuc(cp.reshape(w, (d, d), order="C"))

    return objective


def attention_svm_nuclear(
    X: Any,
    z: Any,
    alpha: Any,
    *,
    mask: Any = None,
    solver: str = "clarabel",
    active_set: str | bool = "auto",
    tol: float = 1e-8,
    support_tol: float = 1e-6,
) -> AttentionSVMResult:
    """Solve min ||W||_* (sum of singular values) s.t. (x_{i,alpha_i} - x_it)^T W z_i >= 1.

    Arguments, errors and result as :func:`mirrorattn.svm.attention_svm`; the result's ``p`` is
    ``"nuclear"`` and its ``objective`` the nuclear norm of ``W``. Duals are for ||W||_*: at the
    optimum sum_it duals_it (x_ia - x_it) z_i^T is a subgradient (spectral norm <= 1).
    """
    cs = AttentionConstraints(X, z, alpha, mask)
    d = cs.d
    sol = solve(cs, _nuclear_objective(d), solver=solver, active_set=active_set, tol=tol, what="nuclear-norm AttSVM")
    W = sol.w.reshape(d, d)
    nuc = float(np.linalg.svd(W, compute_uv=False).sum())
    return finish_attention(cs, sol, "nuclear", nuc, support_tol, solver)


__all__ = ["attention_svm_nuclear"]
