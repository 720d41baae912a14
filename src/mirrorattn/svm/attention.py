"""l_p-AttSVM: minimise ||W||_p (entrywise) s.t. (x_{i,alpha_i} - x_it)^T W z_i >= 1 (paper.md section 3).

Formulation (see :func:`lp_objective`): cvxpy's ``pnorm`` as an exact second-order-cone tower
when p is a rational with a small denominator (1.75, 3, 1.1, ...), else exact 3-D power cones;
either one falls back to the other if Clarabel stalls. Solved by Clarabel. The reported ``objective`` is ||W||_p
recomputed in float64 from the returned W, and W is rescaled by 1/min margin when the solver's
answer falls short of margin 1 by its tolerance, so that it is exactly feasible.

Shared query: when every sample has the same query z (a 1-block transformer's [CLS] state is the
same vector for every input), the problem reduces exactly to a d-variable l_p-SVM. With v = W z,
min over W with W z = v of ||W||_p is ||v||_p / ||z||_q (Hoelder, 1/p + 1/q = 1, attained row by row
at w_j = v_j s, s = sign(z)|z|^(q-1) / ||z||_q^q), so W_mm = v* s^T with v* = argmin ||v||_p s.t.
(x_{i,alpha_i} - x_it)^T v >= 1: d variables instead of d^2 (:func:`_shared_query_svm`).

A query per sample and d^2 >= 1,024 variables (d >= 32, 1.05 <= p <= 10, Clarabel): the working sets are
solved on the smooth dual with rank-one rows (:mod:`mirrorattn.svm.dual`; ``method`` ends in " (dual)"),
the answer polished to a KKT certificate as always. Up to 1,023 variables (d <= 31, the shared-query
reduction) a dense interior-point method solves them (:mod:`mirrorattn.svm.ipm`; ``method`` unchanged).
Every result carries the duality gap of its duals (:func:`mirrorattn.svm.options.duality_gap`).
"""

from __future__ import annotations

import dataclasses
import functools
from fractions import Fraction
from typing import Any, Callable, Unpack

import cvxpy as cp
import numpy as np

from mirrorattn.mirror import lp_norm, signed_power
from mirrorattn.svm.constraints import AttentionConstraints, SharedQueryConstraints, solver_p
from mirrorattn.svm.core import CoreSolution, _exactly_feasible
from mirrorattn.svm.dual import DualSubsolver, dual_applies
from mirrorattn.svm.ipm import IPMSubsolver, ipm_applies
from mirrorattn.svm.options import SolveSettings, SVMOptions
from mirrorattn.svm.result import AttentionSVMResult

#: cvxpy's default ``max_denom`` of ``pnorm``: the tower is exact when 1/p is a fraction with this denominator or less
_TOWER_MAX_DENOM = 1024


def lp_objective(p: float) -> list[Callable[[cp.Variable], cp.Expression]]:
    """cvxpy formulations of ||w||_p, in the order to try them (all exact where used first).

    p = 2: one second-order cone. 1/p a fraction with denominator <= 1024 (1.75 = 7/4, 3, 1.1, 1000 ...):
    cvxpy's second-order-cone tower for ``pnorm`` is then exact, and Clarabel solves it more
    reliably than power cones on large problems; exact 3-D power cones (``approx=False``) are the
    fallback. Other p: power cones first, the (rationally approximated) tower as the fallback
    (none where the rounded p is not > 1, see :func:`soc_tower_exponent`);
    the Newton polish on the support set uses the exact p either way. The same p gives the same
    function objects, so that the solver core can reuse its canonicalised problems.
    """
    return list(_lp_forms(float(p)))


@functools.lru_cache(maxsize=64)
def _lp_forms(p: float) -> tuple[Callable[[cp.Variable], cp.Expression], ...]:
    if p == 2.0:
        return (lambda w: cp.norm(w, 2),)

    def soc(w: cp.Variable) -> cp.Expression:
        return cp.pnorm(w, p)

    def powcone(w: cp.Variable) -> cp.Expression:
        return cp.pnorm(w, p, approx=False)

    tower = soc_tower_exponent(p)
    if tower == p:
        return (soc, powcone)
    # cvxpy's tower rounds 1/p to a denominator <= 1024; a rounded p of 1 (p < ~1.0005) is not even convex
    return (powcone, soc) if tower > 1.0 else (powcone,)


def soc_tower_exponent(p: float) -> float:
    """The p that cvxpy's second-order-cone tower for ``pnorm(w, p)`` really uses: 1 / (1/p rounded to a
    fraction with denominator <= 1024), as ``cvxpy.utilities.power_tools.pow_high`` rounds it; 0 when
    1/p rounds to 0 (p > 2048)."""
    inv = Fraction(1 / Fraction(p)).limit_denominator(_TOWER_MAX_DENOM)
    return float(1 / inv) if inv else 0.0


def working_set_solver(cs: Any, p: float, settings: SolveSettings) -> DualSubsolver | IPMSubsolver | None:
    """The working-set solver of an l_p problem with Clarabel asked for: the smooth dual for d x d attention
    problems from :data:`~mirrorattn.svm.dual.DUAL_MIN_VARS` variables, the dense interior-point method up to
    :data:`~mirrorattn.svm.ipm.IPM_MAX_VARS`, else None (Clarabel through cvxpy, also the fallback of both)."""
    if settings.solver.upper() != "CLARABEL":
        return None
    if isinstance(cs, AttentionConstraints) and not isinstance(cs, SharedQueryConstraints) and dual_applies(
            cs.n_vars, p):
        return DualSubsolver(cs, p)
    return IPMSubsolver(cs, p) if ipm_applies(cs.n_vars, p) else None


def finish_attention(cs: AttentionConstraints, sol: CoreSolution, p: Any, objective: float,
                     settings: SolveSettings) -> AttentionSVMResult:
    """Wrap a core solution of the attention constraints into an :class:`AttentionSVMResult`."""
    fields = settings.result_fields(cs, sol, p, objective)
    return AttentionSVMResult(W=sol.w.reshape(cs.d, cs.d), alpha=cs.alpha.copy(), history=sol.history, **fields)


#: queries that differ by at most this (relative to the largest entry) count as one shared query
_SHARED_QUERY_RTOL = 1e-12


def shared_query(z: np.ndarray) -> np.ndarray | None:
    """The query every row of ``z`` (n, d) equals (to :data:`_SHARED_QUERY_RTOL`), else None."""
    scale = float(np.abs(z[0]).max())
    if scale == 0.0 or float(np.abs(z - z[0]).max()) > _SHARED_QUERY_RTOL * scale:
        return None
    return z[0].copy()


def _shared_query_svm(cs: AttentionConstraints, z: np.ndarray, p: float,
                      settings: SolveSettings) -> AttentionSVMResult:
    """l_p-AttSVM of ``cs`` whose samples share the query ``z``: the d-variable l_p-SVM of v = W z, then
    W_mm = v s^T (module docstring); duals scale by 1 / ||z||_q (the gradient of ||v s^T||_p is
    grad ||v||_p z^T / ||z||_q). ``method`` gets the suffix " (shared query)"."""
    reduced = SharedQueryConstraints(cs)
    sol = settings.solve(reduced, lp_objective(p), "l_p-AttSVM (shared query)", polish_p=p,
                         subsolver=working_set_solver(reduced, p, settings))
    q = p / (p - 1.0)
    zq = float(lp_norm(z, q))
    s = signed_power(z, q - 1.0) / zq**q  # the gradient of ||z||_q^q / q, over ||z||_q^q
    w, margins, rescale = _exactly_feasible(cs, np.outer(sol.w, s).ravel(), "l_p-AttSVM (shared query)")
    full = dataclasses.replace(sol, w=w, margins=margins, duals=sol.duals / zq, rescale=sol.rescale * rescale,
                               method=f"{sol.method} (shared query)")
    return finish_attention(cs, full, p, float(lp_norm(w.reshape(cs.d, cs.d), p)), settings)


def attention_svm(X: Any, z: Any, alpha: Any, p: float, **options: Unpack[SVMOptions]) -> AttentionSVMResult:
    """Solve l_p-AttSVM for selected tokens ``alpha``.

    Args:
        X: (n, T, d) tokens (NumPy or torch; converted to float64).
        z: (n, d) query ("cross") tokens.
        alpha: (n,) int selected token of each sample (must be a real token).
        p: exponent of the entrywise norm ||W||_p, in [P_MIN, P_MAX] = [1.001, 100] (``mirrorattn.mirror``).
        **options: ``mask`` (n, T) bool, True = real token (default: all real), ``solver`` ("clarabel"),
            ``active_set`` ("auto": constraint generation above 5,000 constraints), ``tol`` (1e-8) and
            ``support_tol`` (1e-6), ``shared_query`` (True): see :class:`~mirrorattn.svm.options.SVMOptions`.

    Returns:
        :class:`AttentionSVMResult` (W (d, d), objective = ||W||_p exactly, duals (n, T), ...). When every
        sample has the same query z the exact d-variable reduction of the module docstring is solved
        (``method`` ends in " (shared query)").

    Raises:
        SVMInputError: malformed input (shapes, complex/non-numeric arrays, NaN/inf, alpha out of range or on
            padding, p outside the supported range).
        InfeasibleSVMError: a sample cannot be separated (names the samples).
        SVMError: the solver failed (says what to try).
        TypeError: an unknown keyword option.
    """
    settings = SolveSettings.of("attention_svm", options)
    p = solver_p(p)
    cs = AttentionConstraints(X, z, alpha, settings.mask)
    z0 = shared_query(cs.z) if settings.shared_query and cs.n > 1 and cs.d > 1 else None
    if z0 is not None:
        return _shared_query_svm(cs, z0, p, settings)
    sub = working_set_solver(cs, p, settings)
    sol = settings.solve(cs, lp_objective(p), "l_p-AttSVM", polish_p=p, subsolver=sub)
    if isinstance(sub, DualSubsolver):
        sol = dataclasses.replace(sol, method=f"{sol.method} (dual)")
    return finish_attention(cs, sol, p, float(lp_norm(sol.w.reshape(cs.d, cs.d), p)), settings)


__all__ = ["attention_svm", "lp_objective"]
