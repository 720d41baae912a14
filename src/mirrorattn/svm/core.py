"""The solver core shared by every max-margin problem: one conic solve, and constraint generation.

A problem is ``minimise f(w) subject to A w >= 1`` where the rows of A come from a constraint
set (see :mod:`mirrorattn.svm.constraints`) and f is a norm given as a cvxpy expression builder.
The constraints go to cvxpy as ONE stacked matrix expression ``A @ w >= 1``.

Active-set mode (constraint generation): solve on a working set of constraints, evaluate every
margin with NumPy, add the most violated constraint of each violating sample (the ``max_add``
most violated overall), and repeat until no margin is below ``1 - tol``. The working-set problem
is a relaxation of the full one, so its optimum is a lower bound; once its solution is feasible
for all constraints it is optimal for the full problem. Details that keep it fast:
- the first working set is, per sample, the token closest to the selected one (the hardest to
  separate), the ``2 n_vars`` hardest samples; each round adds at most ``4 n_vars``;
- once nothing is violated the answer is polished exactly by Newton on its support set (l_p
  objectives, :mod:`mirrorattn.svm.polish`);
- constraints with margin > 1.001 and a negligible dual leave working sets of more than 8 rows per
  variable (any size from 1,024 variables) (the working-set optimum does not change, so the objective
  still rises strictly and the loop cannot cycle).
One-shot mode solves all constraints at once (the reference the active set is tested against).
A ``subsolver`` (:mod:`mirrorattn.svm.ipm` for small problems, :mod:`mirrorattn.svm.dual` for d x d
attention problems from d = 32) solves the working sets instead of cvxpy; cvxpy is its fallback.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, NoReturn, Protocol, Union

import cvxpy as cp
import numpy as np

from mirrorattn.svm.errors import InfeasibleSVMError, SVMError, SVMInputError, name_samples
from mirrorattn.svm.polish import polish_lp

#: "auto" uses the active set above this many constraints
ACTIVE_SET_THRESHOLD = 5000
#: working-set constraints with margin above 1 + this and a negligible dual are dropped
_DROP_SLACK = 1e-3
_DROP_DUAL = 1e-9
#: ... but only from working sets of more than this many rows per variable: dropping from small ones made the
#: interior-point rounds (cheap, but one per round) cycle, adding and dropping the same rows for ~60 rounds at
#: 1,000,000 constraints (benchmarks/svm_scale.py)
_DROP_ABOVE = 8
#: ... except with this many variables or more (the d >= 32 dual's L-BFGS-B rounds slow down with larger sets)
_DROP_ALWAYS_VARS = 1024
#: give up constraint generation after this many solves
MAX_ACTIVE_SET_ITERATIONS = 200
#: constraint matrices with at most this many entries are solved through a cached, parametrised
#: cvxpy problem (one per objective and shape): for small problems cvxpy's canonicalisation costs
#: more than the solve, and many same-shape problems (one per seed) then canonicalise once
REUSE_MAX_ENTRIES = 50_000
#: how many parametrised problems are kept (least recently used ones are dropped)
_REUSE_CACHE_SIZE = 32
_PROBLEMS: OrderedDict[tuple[Any, tuple[int, int]], tuple[cp.Problem, cp.Parameter, cp.Variable, Any]] = OrderedDict()

Objective = Union[Callable[[cp.Variable], cp.Expression], list[Callable[[cp.Variable], cp.Expression]]]


class ConstraintSet(Protocol):
    """What the core needs from a constraint set (a grid of groups x columns)."""

    shape: tuple[int, int]
    valid: np.ndarray
    n_constraints: int
    n_vars: int

    def rows(self, flat: np.ndarray) -> np.ndarray: ...

    def margins(self, w: np.ndarray) -> np.ndarray: ...

    def initial(self, k: int) -> np.ndarray: ...

    def group_of(self, flat: np.ndarray) -> np.ndarray: ...


@dataclass
class CoreSolution:
    """Raw output of :func:`solve`: w (n_vars,), duals and margins on the grid, bookkeeping."""

    w: np.ndarray
    duals: np.ndarray
    margins: np.ndarray
    status: str
    iterations: int
    method: str
    n_working: int
    rescale: float
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    polished: bool = False


@functools.lru_cache(maxsize=1)
def _installed_solvers() -> tuple[str, ...]:
    return tuple(cp.installed_solvers())  # probes every solver: ~10 ms, so asked once


def resolve_solver(solver: str) -> str:
    """cvxpy's name for ``solver`` (case-insensitive), or :class:`SVMInputError` if unavailable."""
    name = str(solver).upper()
    if name not in _installed_solvers():
        raise SVMInputError(
            f"solver {solver!r} is not installed; installed conic solvers: {', '.join(_installed_solvers())}"
        )
    return name


def _problem(form: Callable[[cp.Variable], cp.Expression], A: np.ndarray) -> tuple[cp.Problem, cp.Variable, Any]:
    """The problem min form(w) s.t. A w >= 1 as (problem, w, constraint).

    Small A (at most :data:`REUSE_MAX_ENTRIES` entries) go through a cached problem whose matrix
    is a ``cp.Parameter``: cvxpy canonicalises it once per (formulation, shape) and later solves
    only substitute the new matrix. Larger A get a fresh problem (the solve dominates there).
    """
    if A.size > REUSE_MAX_ENTRIES:
        w = cp.Variable(A.shape[1])
        con = A @ w >= 1
        return cp.Problem(cp.Minimize(form(w)), [con]), w, con
    key = (form, A.shape)
    hit = _PROBLEMS.get(key)
    if hit is None:
        param = cp.Parameter(A.shape)
        w = cp.Variable(A.shape[1])
        con = param @ w >= 1
        hit = (cp.Problem(cp.Minimize(form(w)), [con]), param, w, con)
        _PROBLEMS[key] = hit
        while len(_PROBLEMS) > _REUSE_CACHE_SIZE:
            _PROBLEMS.popitem(last=False)
    else:
        _PROBLEMS.move_to_end(key)
    prob, param, w, con = hit
    param.value = A
    return prob, w, con


def _solver_attempts(name: str, tol: float) -> list[dict[str, Any]]:
    """Solver settings to try in turn: as asked, then looser (the answer is polished afterwards)."""
    if name == "CLARABEL":
        t = float(max(tol, 1e-9))  # tighter than 1e-9 ends 'optimal_inaccurate'

        def opts(tt: float, method: str) -> dict[str, Any]:
            # qdldl (single-threaded) beats faer on these dense-row problems on a shared machine
            return {
                "tol_gap_abs": tt,
                "tol_gap_rel": tt,
                "tol_feas": tt,
                "max_iter": 500,
                "direct_solve_method": method,
            }

        return [opts(t, "qdldl"), opts(max(t, 1e-7), "qdldl"), opts(max(t, 1e-6), "faer")]
    if name == "SCS":
        return [{"eps_abs": max(tol, 1e-9), "eps_rel": max(tol, 1e-9), "max_iters": 200_000}]
    return [{}]


def infeasibility_certificate(A: np.ndarray) -> np.ndarray | None:
    """Indices of rows carrying a Farkas certificate lambda >= 0, A^T lambda = 0, sum lambda = 1.

    Such a lambda exists iff ``A w >= 1`` has no solution; its rows name the constraints that
    contradict each other. Returns ``None`` when the LP finds no certificate.
    """
    from scipy.optimize import linprog

    k, m = A.shape
    A_eq = np.vstack([A.T, np.ones((1, k))])
    b_eq = np.zeros(m + 1)
    b_eq[-1] = 1.0
    res = linprog(np.zeros(k), A_eq=A_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    if res.status != 0:
        return None
    return np.flatnonzero(res.x > 1e-9)


def _solve_rows(A: np.ndarray, objective: Objective, solver: str, tol: float) -> tuple[np.ndarray, np.ndarray, str]:
    """One conic solve of min f(w) s.t. A w >= 1. Returns (w, duals, status).

    ``objective`` is one cvxpy formulation or a list of equivalent ones. When the solver fails or
    stops short of 'optimal' (Clarabel's power cones can stall on large problems), the next
    formulation is tried, then looser tolerances / another factorisation, before giving up.
    """
    formulations = list(objective) if isinstance(objective, (list, tuple)) else [objective]
    problems = []
    for opts in _solver_attempts(solver, tol):
        for form in formulations:
            prob, w, con = _problem(form, A)
            try:
                with warnings.catch_warnings():
                    # the SOC tower is used only where it is exact (error 0); cvxpy warns anyway
                    warnings.filterwarnings("ignore", message="pnorm with p=.* is being approximated")
                    prob.solve(solver=solver, **opts)
            except (cp.error.SolverError, cp.error.DCPError) as exc:
                problems.append(f"failed ({' '.join(str(exc).split())[:200]})")  # one line
                continue
            status = str(prob.status)
            if status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
                raise _Infeasible(status)
            if status == cp.OPTIMAL and w.value is not None:
                duals = np.maximum(np.asarray(con.dual_value, dtype=np.float64).reshape(-1), 0.0)
                return np.asarray(w.value, dtype=np.float64), duals, status
            problems.append(f"status {status!r}")
    raise SVMError(
        f"the conic solver {solver} did not reach 'optimal' ({'; '.join(problems)}); try solver='scs', "
        "a looser tol, or rescale the data to unit-norm tokens (very different norms make it ill-conditioned)"
    )


class _Infeasible(Exception):
    def __init__(self, status: str) -> None:
        self.status = status


def _raise_infeasible(cs: ConstraintSet, flat: np.ndarray, A: np.ndarray, status: str, what: str) -> NoReturn:
    rows = infeasibility_certificate(A)
    if rows is not None and len(rows):
        samples = np.unique(cs.group_of(flat[rows]))
        raise InfeasibleSVMError(
            f"{what} is infeasible (solver status {status!r}): the constraints of samples "
            f"{name_samples(samples)} contradict each other (a non-negative combination of their rows is 0). "
            "Drop one of those samples or select other tokens (alpha) for them.",
            samples=samples,
        )
    raise InfeasibleSVMError(
        f"{what}: the solver reported status {status!r} but no certificate of infeasibility was found; "
        "the data are probably badly scaled - normalise tokens and queries, or try solver='scs'"
    )


#: a working-set solver other than the conic one: ``sub(flat)`` -> (w, duals, status), or None when it did not
#: converge (the conic solve is used instead); ``sub.unbounded`` True when its dual was unbounded (infeasible rows)
Subsolver = Callable[[np.ndarray], Union[tuple[np.ndarray, np.ndarray, str], None]]


def _solve_set(cs: ConstraintSet, flat: np.ndarray, objective: Objective, name: str, tol: float, what: str,
               subsolver: Subsolver | None) -> tuple[np.ndarray, np.ndarray, str]:
    """One solve on the rows ``flat``: the subsolver when given (the conic solve if it fails), else the conic
    solve; infeasible rows raise :class:`InfeasibleSVMError` naming their samples."""
    if subsolver is not None:
        out = subsolver(flat)
        if out is not None:
            return out
        if getattr(subsolver, "unbounded", False):
            A = cs.rows(flat)
            if infeasibility_certificate(A) is not None:
                _raise_infeasible(cs, flat, A, "unbounded dual", what)
    A = cs.rows(flat)
    try:
        return _solve_rows(A, objective, name, tol)
    except _Infeasible as inf:
        _raise_infeasible(cs, flat, A, inf.status, what)


def solve(
    cs: ConstraintSet,
    objective: Objective,
    *,
    solver: str = "clarabel",
    active_set: str | bool = "auto",
    tol: float = 1e-8,
    what: str = "the max-margin problem",
    initial_size: int | None = None,
    max_add: int | None = None,
    polish_p: float | None = None,
    subsolver: Subsolver | None = None,
) -> CoreSolution:
    """Solve min f(w) s.t. every constraint of ``cs`` has margin >= 1; see the module docstring.

    ``active_set``: ``"auto"`` (active set above :data:`ACTIVE_SET_THRESHOLD` constraints),
    ``"on"``/``True`` or ``"off"``/``False``. The returned ``w`` is rescaled by 1/min margin when
    the solver's answer falls short of a margin of 1 by its own tolerance, so that it is exactly
    feasible (``rescale`` records the factor). With ``polish_p`` (the objective is ||w||_p), the
    answer is refined by Newton on its support set (:mod:`mirrorattn.svm.polish`) when that is safe.
    ``subsolver`` solves the working sets instead of the conic solver (:mod:`mirrorattn.svm.dual`).
    """
    t0 = time.perf_counter()
    name = resolve_solver(solver)
    tol = float(tol)
    if not (0 < tol < 1e-2):
        raise SVMInputError(f"tol must be in (0, 1e-2), got {tol}")
    mode = {"auto": "auto", "on": True, "off": False, True: True, False: False}.get(active_set, None)
    if mode is None:
        raise SVMInputError(f"active_set must be 'auto', 'on' or 'off', got {active_set!r}")
    if mode == "auto":
        mode = cs.n_constraints > ACTIVE_SET_THRESHOLD
    polished = False
    if not mode:
        flat = np.flatnonzero(cs.valid.reshape(-1))
        w, lam, status = _solve_set(cs, flat, objective, name, tol, what, subsolver)
        iterations, method, history = 1, "one-shot", []
    else:
        # measured at 30,000 constraints, d = 16 (benchmarks/svm_scale.py): starting from 2 n_vars
        # rows and adding up to 4 n_vars per round cut p = 3 from 12 to 8 solves (14 -> 10 CPU s)
        # and left p = 1.75 / 2 within noise
        k0 = initial_size or max(2 * cs.n_vars, 200)
        add_cap = max_add or max(4 * cs.n_vars, 200)
        w, lam, status, flat, iterations, history = _active_set(cs, objective, name, tol, what, k0, add_cap, t0,
                                                                subsolver)
        method = "active-set"
    if polish_p is not None and not polished:
        out, extra = _final_polish(cs, objective, name, tol, w, lam, flat, polish_p,
                                   method == "active-set" and subsolver is None)
        iterations += extra
        if out is not None:
            (w, lam), polished = out, True
    w, marg_grid, rescale = _exactly_feasible(cs, w, what)
    duals = np.zeros(cs.valid.size)
    duals[flat] = lam
    return CoreSolution(w=w, duals=duals.reshape(cs.shape), margins=marg_grid, status=status, iterations=iterations,
                        method=method, n_working=int(len(flat)), rescale=rescale, seconds=time.perf_counter() - t0,
                        history=history, polished=polished)


def _active_set(cs: ConstraintSet, objective: Objective, name: str, tol: float, what: str, k0: int, add_cap: int,
                t0: float, subsolver: Subsolver | None = None) -> tuple:
    """Constraint generation from ``k0`` rows, adding at most ``add_cap`` per round; every working set is solved
    to ``tol`` (looser intermediate solves made Clarabel fail on some working sets).

    Returns (w, duals of the working rows, status, working rows, solves, history)."""
    flat = cs.initial(k0)
    in_work = np.zeros(cs.valid.size, dtype=bool)
    in_work[flat] = True
    iterations, history = 0, []
    while True:
        w, lam, status = _solve_set(cs, flat, objective, name, tol, what, subsolver)
        iterations += 1
        marg = cs.margins(w).reshape(-1)
        viol = (marg < 1.0 - tol) & ~in_work
        history.append({"working": int(len(flat)), "violated": int(viol.sum()), "min_margin": float(marg.min()),
                        "tol": tol, "seconds": time.perf_counter() - t0})
        if not viol.any():
            break
        if iterations >= MAX_ACTIVE_SET_ITERATIONS:
            raise SVMError(
                f"{what}: constraint generation did not converge in {iterations} solves "
                f"({int(viol.sum())} constraints still violated); use active_set='off' or a looser tol"
            )
        flat = _next_working_set(cs, flat, marg, lam, viol, in_work, add_cap)
    return w, lam, status, flat, iterations, history


def _next_working_set(cs: ConstraintSet, flat: np.ndarray, marg: np.ndarray, lam: np.ndarray, viol: np.ndarray,
                      in_work: np.ndarray, add_cap: int) -> np.ndarray:
    """Drop clearly slack rows, add the most violated row of each group (at most ``add_cap``); updates ``in_work``."""
    # drop clearly slack constraints (margin well above 1, negligible dual): the working-set
    # optimum stays the same, so the objective still rises strictly with every addition
    if len(flat) > _DROP_ABOVE * cs.n_vars or cs.n_vars >= _DROP_ALWAYS_VARS:
        slack = flat[(marg[flat] > 1.0 + _DROP_SLACK) & (lam <= _DROP_DUAL * max(float(lam.max()), 1e-300))]
        in_work[slack] = False
    cand = np.flatnonzero(viol)
    groups = cs.group_of(cand)
    # most violated per group: sort by margin, keep the first occurrence of each group
    order = np.argsort(marg[cand], kind="stable")
    cand, groups = cand[order], groups[order]
    _, first = np.unique(groups, return_index=True)
    in_work[cand[np.sort(first)][:add_cap]] = True
    return np.flatnonzero(in_work)


def _final_polish(cs: ConstraintSet, objective: Objective, name: str, tol: float, w: np.ndarray, lam: np.ndarray,
                  flat: np.ndarray, polish_p: float, active: bool) -> tuple[tuple | None, int]:
    """The Newton polish of the answer ((w, duals) or None) and the number of extra solves it took (0 or 1)."""
    out = polish_lp(w, lam, cs.rows, flat, cs.margins, cs.valid, polish_p, tol)
    if out is None and active and isinstance(objective, (list, tuple)) and len(objective) > 1:
        # the polish needs accurate duals; the other formulation may give them (one more small solve)
        try:
            w2, lam2, _ = _solve_rows(cs.rows(flat), list(objective)[::-1], name, tol)
        except (SVMError, _Infeasible):
            return None, 0
        try:
            return polish_lp(w2, lam2, cs.rows, flat, cs.margins, cs.valid, polish_p, tol), 1
        except (SVMError, _Infeasible):
            return None, 1
    return out, 0


def _exactly_feasible(cs: ConstraintSet, w: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(w, margins, factor): ``w`` times 1 / min margin when the solver fell short of 1 within 1e-4, else as is."""
    marg_grid = cs.margins(w)
    min_margin = float(marg_grid[cs.valid].min())
    if min_margin >= 1.0:
        return w, marg_grid, 1.0
    if min_margin <= 1.0 - 1e-4:
        raise SVMError(
            f"{what}: the solver's answer violates a constraint (min margin {min_margin:.6g} < 1); "
            "try a tighter tol or another solver"
        )
    rescale = 1.0 / min_margin
    return w * rescale, marg_grid * rescale, rescale

__all__ = ["ACTIVE_SET_THRESHOLD", "CoreSolution", "infeasibility_certificate", "resolve_solver", "solve"]
