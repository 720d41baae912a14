"""Result records of the max-margin solvers (plain dataclasses of NumPy arrays and floats)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np


@dataclass
class AttentionSVMResult:
    """Solution of l_p-AttSVM (or its nuclear-norm counterpart) for selected tokens ``alpha``.

    Attributes:
        W: (d, d) float64, the minimiser, exactly feasible (every margin >= 1, see ``rescale``).
        objective: ||W||_p (entrywise) recomputed in float64 from ``W`` (nuclear norm for
            ``p == "nuclear"``).
        status: the solver's status (``"optimal"``; anything else raises instead).
        min_margin: min over constraints of (x_{i,alpha_i} - x_it)^T W z_i (>= 1).
        support: (n, T) bool, the tight constraints: margin <= 1 + ``support_tol``.
        duals: (n, T) float64 Lagrange multipliers (>= 0; 0 at alpha, padding and constraints
            outside the active set), for the objective ||W||_p itself (not its p-th power).
        margins: (n, T) float64, the margin of every constraint; NaN at alpha and padding.
        solve_seconds: wall time of the whole call, seconds.
        iterations: number of conic solves (1 for the one-shot method).
        p: the exponent, or ``"nuclear"``.
        alpha: (n,) int64, the selected tokens.
        n_constraints: number of constraints (real tokens other than alpha, over all samples).
        method: ``"one-shot"`` or ``"active-set"``.
        n_working: number of constraints in the final working set (== n_constraints one-shot).
        rescale: factor W was multiplied by after the solve so that min margin >= 1 exactly
            (1.0 when the solver's answer was already feasible; 1 + O(solver tolerance)).
        support_tol: tolerance used for ``support``.
        polished: True when W was refined by Newton on the support set (see
            :mod:`mirrorattn.svm.polish`); W and the duals are then exact to ~1e-12.
        solver: the conic solver used.
    """

    W: np.ndarray
    objective: float
    status: str
    min_margin: float
    support: np.ndarray
    duals: np.ndarray
    margins: np.ndarray
    solve_seconds: float
    iterations: int
    p: Union[float, str]
    alpha: np.ndarray
    n_constraints: int
    method: str
    n_working: int
    rescale: float = 1.0
    support_tol: float = 1e-6
    solver: str = "CLARABEL"
    polished: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly scalars (no arrays)."""
        return {
            "objective": self.objective,
            "status": self.status,
            "min_margin": self.min_margin,
            "n_support": int(self.support.sum()),
            "n_constraints": self.n_constraints,
            "n_working": self.n_working,
            "method": self.method,
            "iterations": self.iterations,
            "solve_seconds": self.solve_seconds,
            "rescale": self.rescale,
            "polished": self.polished,
            "p": self.p,
            "solver": self.solver,
        }


@dataclass
class DecoderSVMResult:
    """Solution of the l_p-SVM for the decoder: minimise ||v||_p s.t. y_i x_{i,alpha_i}^T v >= 1.

    Attributes: ``v`` (d,) float64; ``objective`` = ||v||_p recomputed in float64; ``status``;
    ``min_margin``; ``support`` (n,) bool (margin <= 1 + support_tol); ``duals`` (n,) >= 0 for the
    objective ||v||_p; ``margins`` (n,); ``solve_seconds``; ``iterations``; ``p``;
    ``n_constraints`` (= n); ``method``; ``n_working``; ``rescale`` (as for the attention result).
    """

    v: np.ndarray
    objective: float
    status: str
    min_margin: float
    support: np.ndarray
    duals: np.ndarray
    margins: np.ndarray
    solve_seconds: float
    iterations: int
    p: float
    n_constraints: int
    method: str
    n_working: int
    rescale: float = 1.0
    support_tol: float = 1e-6
    solver: str = "CLARABEL"
    polished: bool = False

    def summary(self) -> dict[str, Any]:
        """JSON-friendly scalars (no arrays)."""
        return {
            "objective": self.objective,
            "status": self.status,
            "min_margin": self.min_margin,
            "n_support": int(self.support.sum()),
            "n_constraints": self.n_constraints,
            "method": self.method,
            "iterations": self.iterations,
            "solve_seconds": self.solve_seconds,
            "rescale": self.rescale,
            "polished": self.polished,
            "p": self.p,
            "solver": self.solver,
        }


@dataclass
class JointSVMResult:
    """Both solutions for the same selected tokens: ``attention`` (W) and ``decoder`` (v)."""

    attention: AttentionSVMResult
    decoder: DecoderSVMResult


__all__ = ["AttentionSVMResult", "DecoderSVMResult", "JointSVMResult"]
