"""l_p-SVM of the decoder: minimise ||v||_p s.t. y_i x_{i,alpha_i}^T v >= 1; and the joint problem.

Same formulation as :mod:`mirrorattn.svm.attention` (exact power cones, objective recomputed in
float64, exactly feasible answer).
"""

from __future__ import annotations

from typing import Any

from mirrorattn.mirror import check_p, lp_norm
from mirrorattn.svm.attention import attention_svm, lp_objective
from mirrorattn.svm.constraints import DecoderConstraints
from mirrorattn.svm.core import solve
from mirrorattn.svm.result import DecoderSVMResult, JointSVMResult


def decoder_svm(
    X: Any,
    y: Any,
    alpha: Any,
    p: float,
    *,
    mask: Any = None,
    solver: str = "clarabel",
    active_set: str | bool = "auto",
    tol: float = 1e-8,
    support_tol: float = 1e-6,
) -> DecoderSVMResult:
    """Solve the decoder l_p-SVM on the selected tokens.

    Args:
        X: (n, T, d) tokens; only x_{i,alpha_i} enters the problem.
        y: (n,) labels in {-1, +1}.
        alpha: (n,) int selected tokens.
        p: exponent > 1.
        mask, solver, active_set, tol, support_tol: as for :func:`attention_svm`.

    Returns:
        :class:`DecoderSVMResult` with ``v`` (d,), ``objective`` = ||v||_p, ``duals`` (n,) ...
    """
    p = check_p(p)
    cs = DecoderConstraints(X, y, alpha, mask)
    sol = solve(cs, lp_objective(p), solver=solver, active_set=active_set, tol=tol, what="decoder l_p-SVM", polish_p=p)
    margins = sol.margins[:, 0]
    return DecoderSVMResult(
        v=sol.w,
        objective=float(lp_norm(sol.w, p)),
        status=sol.status,
        min_margin=float(margins.min()),
        support=margins <= 1.0 + support_tol,
        duals=sol.duals[:, 0],
        margins=margins,
        solve_seconds=float(sol.seconds),
        iterations=int(sol.iterations),
        p=p,
        n_constraints=cs.n_constraints,
        method=sol.method,
        n_working=sol.n_working,
        rescale=float(sol.rescale),
        support_tol=float(support_tol),
        solver=str(solver).upper(),
        polished=sol.polished,
    )


def joint_svm(
    X: Any,
    z: Any,
    y: Any,
    alpha: Any,
    p: float,
    *,
    p_decoder: float | None = None,
    mask: Any = None,
    solver: str = "clarabel",
    active_set: str | bool = "auto",
    tol: float = 1e-8,
    support_tol: float = 1e-6,
) -> JointSVMResult:
    """Solve l_p-AttSVM for W and the l_p-SVM for v on the same selected tokens.

    ``p_decoder`` defaults to ``p``. Returns :class:`JointSVMResult` (``attention``, ``decoder``).
    """
    kw: dict[str, Any] = {"mask": mask, "solver": solver, "active_set": active_set, "tol": tol}
    kw["support_tol"] = support_tol
    att = attention_svm(X, z, alpha, p, **kw)
    dec = decoder_svm(X, y, alpha, p if p_decoder is None else p_decoder, **kw)
    return JointSVMResult(attention=att, decoder=dec)


__all__ = ["decoder_svm", "joint_svm"]
