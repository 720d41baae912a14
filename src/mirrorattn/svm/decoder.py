"""l_p-SVM of the decoder: minimise ||v||_p s.t. y_i x_{i,alpha_i}^T v >= 1; and the joint problem.

Same formulation as :mod:`mirrorattn.svm.attention` (exact power cones, objective recomputed in
float64, exactly feasible answer).
"""

from __future__ import annotations

from typing import Any, Unpack

from mirrorattn.mirror import lp_norm
from mirrorattn.svm.attention import attention_svm, lp_objective, working_set_solver
from mirrorattn.svm.constraints import AttentionConstraints, DecoderConstraints, solver_p
from mirrorattn.svm.options import SolveSettings, SVMOptions
from mirrorattn.svm.result import DecoderSVMResult, JointSVMResult


def decoder_svm(X: Any, y: Any, alpha: Any, p: float, **options: Unpack[SVMOptions]) -> DecoderSVMResult:
    """Solve the decoder l_p-SVM on the selected tokens.

    Args:
        X: (n, T, d) tokens; only x_{i,alpha_i} enters the problem.
        y: (n,) labels in {-1, +1}.
        alpha: (n,) int selected tokens.
        p: exponent in [P_MIN, P_MAX] = [1.001, 100] (``mirrorattn.mirror``).
        **options: ``mask``, ``solver``, ``active_set``, ``tol``, ``support_tol``: as for :func:`attention_svm`.

    Returns:
        :class:`DecoderSVMResult` with ``v`` (d,), ``objective`` = ||v||_p, ``duals`` (n,) ...
    """
    settings = SolveSettings.of("decoder_svm", options)
    p = solver_p(p)
    cs = DecoderConstraints(X, y, alpha, settings.mask)
    sol = settings.solve(cs, lp_objective(p), "decoder l_p-SVM", polish_p=p,
                         subsolver=working_set_solver(cs, p, settings))
    fields = settings.result_fields(cs, sol, p, float(lp_norm(sol.w, p)))
    # one constraint per sample: the (n, 1) grid's single column
    fields.update({k: fields[k][:, 0] for k in ("support", "duals", "margins")})
    return DecoderSVMResult(v=sol.w, **fields)


def joint_svm(
    X: Any, z: Any, y: Any, alpha: Any, p: float, *, p_decoder: float | None = None, **options: Unpack[SVMOptions]
) -> JointSVMResult:
    """Solve l_p-AttSVM for W and the l_p-SVM for v on the same selected tokens.

    ``p_decoder`` defaults to ``p``; ``options`` (``mask``, ``solver``, ``active_set``, ``tol``,
    ``support_tol``) go to both solvers. Returns :class:`JointSVMResult` (``attention``, ``decoder``).
    Both problems' input is checked before either is solved.
    """
    settings = SolveSettings.of("joint_svm", options)  # an unknown keyword fails before any solve
    solver_p(p)
    solver_p(p if p_decoder is None else p_decoder, "p_decoder")
    AttentionConstraints(X, z, alpha, settings.mask)
    DecoderConstraints(X, y, alpha, settings.mask)
    att = attention_svm(X, z, alpha, p, **options)
    dec = decoder_svm(X, y, alpha, p if p_decoder is None else p_decoder, **options)
    return JointSVMResult(attention=att, decoder=dec)


__all__ = ["decoder_svm", "joint_svm"]
