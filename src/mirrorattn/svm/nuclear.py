"""Nuclear-norm AttSVM, the K/Q form's counterpart: minimise ||W||_* s.t. the l_p-AttSVM constraints.

Solved with cvxpy's ``normNuc`` (a semidefinite cone, exact) by Clarabel, one-shot or by
constraint generation; the reported objective is the nuclear norm recomputed from the singular
values of the returned W.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Unpack

import cvxpy as cp
import numpy as np

from mirrorattn.svm.attention import finish_attention
from mirrorattn.svm.constraints import AttentionConstraints
from mirrorattn.svm.options import SolveSettings, SVMOptions
from mirrorattn.svm.result import AttentionSVMResult


@functools.lru_cache(maxsize=16)
def _nuclear_objective(d: int) -> Callable[[cp.Variable], cp.Expression]:
    """||reshape(w, (d, d))||_*, one function object per d (the solver core reuses its problems)."""

    def objective(w: cp.Variable) -> cp.Expression:
        return cp.normNuc(cp.reshape(w, (d, d), order="C"))

    return objective


def attention_svm_nuclear(X: Any, z: Any, alpha: Any, **options: Unpack[SVMOptions]) -> AttentionSVMResult:
    """Solve min ||W||_* (sum of singular values) s.t. (x_{i,alpha_i} - x_it)^T W z_i >= 1.

    Arguments, options, errors and result as :func:`mirrorattn.svm.attention_svm`; the result's ``p`` is
    ``"nuclear"`` and its ``objective`` the nuclear norm of ``W``. Duals are for ||W||_*: at the
    optimum sum_it duals_it (x_ia - x_it) z_i^T is a subgradient (spectral norm <= 1).
    """
    settings = SolveSettings.of("attention_svm_nuclear", options)
    cs = AttentionConstraints(X, z, alpha, settings.mask)
    sol = settings.solve(cs, _nuclear_objective(cs.d), "nuclear-norm AttSVM")
    nuc = float(np.linalg.svd(sol.w.reshape(cs.d, cs.d), compute_uv=False).sum())
    return finish_attention(cs, sol, "nuclear", nuc, settings)


__all__ = ["attention_svm_nuclear"]
