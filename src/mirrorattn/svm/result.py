"""Result records of the max-margin solvers (plain dataclasses of NumPy arrays and floats)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

import numpy as np

#: the keys of :meth:`MaxMarginResult.summary`, in the order they are written
SUMMARY_KEYS = ("objective", "status", "min_margin", "n_support", "n_constraints", "n_working", "method",
                "iterations", "solve_seconds", "rescale", "polished", "duality_gap", "p", "solver")


@dataclass
class MaxMarginResult:
    """What every max-margin solution holds, whatever its variable (W of the attention, v of the decoder).

    Attributes:
        objective: the norm of the solution, recomputed in float64 from it (||W||_p entrywise,
            ||v||_p, or the nuclear norm for ``p == "nuclear"``).
        status: the solver's status (``"optimal"``; anything else raises instead).
        min_margin: min over constraints of the margin (>= 1).
        support: bool, the tight constraints: margin <= 1 + ``support_tol``; (n, T) for the
            attention, (n,) for the decoder.
        duals: float64 Lagrange multipliers (>= 0; 0 at alpha, padding and constraints outside
            the active set), for the objective (the norm itself, not its p-th power); shaped as ``support``.
        margins: float64, the margin of every constraint (NaN at alpha and padding); shaped as ``support``.
        solve_seconds: wall time of the whole call, seconds.
        iterations: number of conic solves (1 for the one-shot method).
        p: the exponent, or ``"nuclear"``.
        n_constraints: number of constraints (attention: real tokens other than alpha, over all
            samples; decoder: n).
        method: ``"one-shot"`` or ``"active-set"``.
        n_working: number of constraints in the final working set (== n_constraints one-shot).
        rescale: factor the solution was multiplied by after the solve so that min margin >= 1
            exactly (1.0 when the solver's answer was already feasible; 1 + O(solver tolerance)).
        support_tol: tolerance used for ``support``.
        solver: the conic solver used.
        polished: True when the solution was refined by Newton on the support set (see
            :mod:`mirrorattn.svm.polish`); it and the duals are then exact to ~1e-12.
        duality_gap: (objective - D) / objective with D = sum(duals) / ||A^T duals||_* the dual bound of the
            multipliers alone (:func:`mirrorattn.svm.options.duality_gap`): >= 0 by weak duality, ~1e-12 polished.
    """

    objective: float
    status: str
    min_margin: float
    support: np.ndarray
    duals: np.ndarray
    margins: np.ndarray
    solve_seconds: float
    iterations: int
    p: Union[float, str]
    n_constraints: int
    method: str
    n_working: int
    rescale: float = 1.0
    support_tol: float = 1e-6
    solver: str = "CLARABEL"
    polished: bool = False
    duality_gap: float = float("nan")

    #: the keys :meth:`summary` writes, in order
    summary_keys: ClassVar[tuple[str, ...]] = SUMMARY_KEYS

    @property
    def n_support(self) -> int:
        """Number of support (tight) constraints."""
        return int(self.support.sum())

    def summary(self) -> dict[str, Any]:
        """JSON-friendly scalars (no arrays)."""
        return {k: getattr(self, k) for k in self.summary_keys}


@dataclass(kw_only=True)
class AttentionSVMResult(MaxMarginResult):
    """Solution of l_p-AttSVM (or its nuclear-norm counterpart) for selected tokens ``alpha``.

    Attributes (besides those of :class:`MaxMarginResult`, which are (n, T) arrays here):
        W: (d, d) float64, the minimiser, exactly feasible (every margin >= 1, see ``rescale``);
            margins are (x_{i,alpha_i} - x_it)^T W z_i.
        alpha: (n,) int64, the selected tokens.
        history: one record per conic solve of the active set (empty one-shot).
    """

    W: np.ndarray
    alpha: np.ndarray
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass(kw_only=True)
class DecoderSVMResult(MaxMarginResult):
    """Solution of the l_p-SVM for the decoder: minimise ||v||_p s.t. y_i x_{i,alpha_i}^T v >= 1.

    Attributes: ``v`` (d,) float64, besides those of :class:`MaxMarginResult` (``support``,
    ``duals`` and ``margins`` are (n,) here; ``n_constraints`` = n). Its summary has no ``n_working``.
    """

    v: np.ndarray

    summary_keys: ClassVar[tuple[str, ...]] = tuple(k for k in SUMMARY_KEYS if k != "n_working")


@dataclass
class JointSVMResult:
    """Both solutions for the same selected tokens: ``attention`` (W) and ``decoder`` (v)."""

    attention: AttentionSVMResult
    decoder: DecoderSVMResult


__all__ = ["AttentionSVMResult", "DecoderSVMResult", "JointSVMResult", "MaxMarginResult"]
