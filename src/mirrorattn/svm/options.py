"""The keyword options every max-margin solver takes, and the fields they give its result.

    attention_svm(X, z, alpha, 1.75, mask=mask, solver="clarabel", active_set="auto", tol=1e-8, support_tol=1e-6)

:class:`SVMOptions` types those keywords (``**options: Unpack[SVMOptions]``); :class:`SolveSettings`
holds them with their defaults, runs the solver core with them and turns its solution into the
fields shared by every result (:class:`mirrorattn.svm.result.MaxMarginResult`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np

from mirrorattn.mirror import dual_exponent, lp_norm
from mirrorattn.svm.core import CoreSolution, Objective, solve


class SVMOptions(TypedDict, total=False):
    """Keyword options of every solver, all optional (defaults in brackets, held by :class:`SolveSettings`).

    mask: (n, T) bool, True = real token, False = padding (ignored by the problem) [None: all real].
    solver: a cvxpy conic solver name ("clarabel", "scs"; power cones for l_p, SDP for nuclear) ["clarabel"].
    active_set: "auto" (constraint generation above 5,000 constraints), "on" or "off" ["auto"].
    tol: solver tolerance and the largest margin violation the active set leaves unadded [1e-8].
    support_tol: a constraint is a support (tight) one when its margin is <= 1 + support_tol [1e-6].
    shared_query: attention_svm only - solve the exact d-variable reduction when every sample has the same
        query z (:mod:`mirrorattn.svm.attention`); False solves the d x d problem as it is [True].
    """

    mask: Any
    solver: str
    active_set: str | bool
    tol: float
    support_tol: float
    shared_query: bool


@dataclass(frozen=True)
class SolveSettings:
    """The :class:`SVMOptions` of one call, defaults filled in."""

    mask: Any = None
    solver: str = "clarabel"
    active_set: str | bool = "auto"
    tol: float = 1e-8
    support_tol: float = 1e-6
    shared_query: bool = True

    @classmethod
    def of(cls, function: str, options: dict[str, Any]) -> SolveSettings:
        """The settings of ``options``; a ``TypeError`` naming ``function`` for an unknown keyword."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in options if k not in names]
        if unknown:
            raise TypeError(f"{function}() got an unexpected keyword argument {unknown[0]!r}; "
                            f"the solver options are {sorted(names)}")
        return cls(**options)

    def solve(self, cs: Any, objective: Objective, what: str, polish_p: float | None = None,
              subsolver: Any = None) -> CoreSolution:
        """Solve the constraint set ``cs`` with :func:`mirrorattn.svm.core.solve` under these settings."""
        return solve(cs, objective, solver=self.solver, active_set=self.active_set, tol=self.tol, what=what,
                     polish_p=polish_p, subsolver=subsolver)

    def result_fields(self, cs: Any, sol: CoreSolution, p: float | str, objective: float) -> dict[str, Any]:
        """The :class:`MaxMarginResult` fields of ``sol`` on the constraint grid ``cs`` (arrays shaped ``cs.shape``).

        ``margins`` is NaN where ``cs.valid`` is False (alpha, padding); ``objective`` is the norm of the
        solution recomputed by the caller.
        """
        valid = cs.valid
        return {
            "objective": float(objective),
            "status": sol.status,
            "min_margin": float(sol.margins[valid].min()),
            "support": valid & (sol.margins <= 1.0 + self.support_tol),
            "duals": sol.duals,
            "margins": np.where(valid, sol.margins, np.nan),
            "solve_seconds": float(sol.seconds),
            "iterations": int(sol.iterations),
            "p": p,
            "n_constraints": cs.n_constraints,
            "method": sol.method,
            "n_working": sol.n_working,
            "rescale": float(sol.rescale),
            "support_tol": float(self.support_tol),
            "solver": str(self.solver).upper(),
            "polished": sol.polished,
            "duality_gap": duality_gap(cs, sol.duals, float(objective), p),
        }


def duality_gap(cs: Any, duals: np.ndarray, objective: float, p: float | str) -> float:
    """(objective - D(lam)) / objective: the relative gap between a primal objective and the dual bound of
    the multipliers ``duals`` alone, D(lam) = sum(lam) / ||A^T lam||_* (||.||_* the dual norm: l_q, 1/p + 1/q = 1,
    or the spectral norm for ``p == "nuclear"``; ``cs.adjoint`` forms A^T lam from the constraints' factors).

    For every lam >= 0 and feasible w, sum(lam) <= lam^T A w <= ||A^T lam||_* ||w||, so D(lam) is a lower bound
    on the optimum whatever w is (weak duality) and the gap is >= 0 up to rounding; it is the dual
    max 1^T lam - ||A^T lam||_q^q / q of min ||w||_p^p / p maximised over the scale of lam (the p-th root of
    p times that value). NaN when every multiplier is 0.
    """
    lam = np.maximum(np.asarray(duals, dtype=np.float64), 0.0)
    v = cs.adjoint(lam)
    if p == "nuclear":
        dual_norm = float(np.linalg.norm(v.reshape(cs.d, cs.d), 2))
    else:
        dual_norm = float(lp_norm(v, dual_exponent(float(p))))
    if dual_norm <= 0 or not lam.any():
        return float("nan")
    return (objective - float(lam.sum()) / dual_norm) / objective


__all__ = ["SVMOptions", "SolveSettings", "duality_gap"]
