"""The regularisation path (paper.md section 4): W_R = argmin L(W) over ||W||_p <= R, v fixed.

For a growing grid of radii R, each constrained problem is solved by Bregman-projected mirror
descent: u = grad psi(W) - eta R^(p-1) g / ||g||_q, W = grad psi*(u), and if ||W||_p > R the
Bregman projection onto the ball, which for psi = ||.||_p^p / p is the rescaling W <- W R / ||W||_p
(the constraint is a level set of psi). A step is kept only if it lowers the loss (then eta grows
by 1.25), otherwise eta halves (per seed). The stopping rule is the Frank-Wolfe gap

    gap(W) = <g, W> + R ||g||_q   (= max over ||S||_p <= R of <g, W - S>, zero at a stationary point)

made relative: gap / (R ||g||_q) <= ``fw_tol`` for every seed, or ``max_steps`` reached (reported).
Each R starts from the previous solution scaled to the new radius (warm start along the grid).
Then the directional Bregman divergence of W_R / R to the l_p-AttSVM solution for the globally
optimal tokens is recorded against R. One piece per p (``regpath_p<p>``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mirrorattn.checks import check_finite, check_int
from mirrorattn.data.synthetic import make_synthetic_batch
from mirrorattn.experiments.synthetic.common import (
    RunFolder,
    check_positive,
    check_ps,
    check_solver,
    directional_divergence,
    experiment_runner,
    progress_bar,
    seed_list,
    solve_each,
    status_counts,
    token_tools,
)
from mirrorattn.mirror import dual_exponent, forward_exponent, inverse_exponent, lp_norm, lp_norms, signed_power
from mirrorattn.models.attention import Forward, loss_and_grad, loss_difference, token_values

__all__ = ["RegPathConfig", "run_regpath", "solve_constrained"]


@dataclass
class RegPathConfig:
    """Settings of the regularisation-path experiment."""

    ps: tuple[float, ...] = (1.75, 2.0, 3.0)
    n: int = 6
    T: int = 8
    d: int = 10
    seeds: int = 10
    first_seed: int = 1
    r_min: float = 0.5  #: smallest radius
    r_max: float = 200.0  #: largest radius
    radii: int = 16  #: number of log-spaced radii
    fw_tol: float = 1e-6  #: relative Frank-Wolfe gap at which a constrained solve stops
    max_steps: int = 4000  #: cap on mirror steps per radius
    eta0: float = 0.1  #: initial relative step size
    svm_solver: str = "clarabel"

    def __post_init__(self) -> None:
        self.ps = check_ps(self.ps)
        check_finite(self.r_min, "r_min", low=0.0, strict=True)
        check_finite(self.r_max, "r_max", low=0.0, strict=True)
        if not self.r_min < self.r_max:
            raise ValueError(f"need 0 < r_min < r_max, got r_min={self.r_min}, r_max={self.r_max}")
        check_positive(self, ("n", "T", "d", "seeds", "radii", "max_steps"), at_least_two=("T", "radii"))
        if not 0 < self.fw_tol < 1:
            raise ValueError(f"fw_tol must be in (0, 1), got {self.fw_tol}")
        check_int(self.first_seed, "first_seed", 0)
        check_finite(self.eta0, "eta0 (initial relative step size)", low=0.0, strict=True)
        check_solver(self.svm_solver)

    def radius_grid(self) -> np.ndarray:
        return np.logspace(np.log10(self.r_min), np.log10(self.r_max), self.radii)


def _bshape(a: np.ndarray) -> np.ndarray:
    return a.reshape((-1, 1, 1))


def _select_forward(mask: np.ndarray, a: Forward, b: Forward) -> Forward:
    """Per seed: ``a`` where mask else ``b``."""
    pick = {}
    for name in ("probs", "xv", "out", "ref", "deficit"):
        x, y = getattr(a, name), getattr(b, name)
        pick[name] = np.where(mask.reshape((-1,) + (1,) * (x.ndim - 1)), x, y)
    return Forward(**pick)


def _select_rows(fw: Forward, keep: np.ndarray) -> Forward:
    """The seeds ``keep`` (bool mask) of a forward pass."""
    return Forward(**{name: getattr(fw, name)[keep] for name in ("probs", "xv", "out", "ref", "deficit")})


def solve_constrained(
    data: Any,
    W: np.ndarray,
    R: float,
    p: float,
    fw_tol: float,
    max_steps: int,
    eta0: float = 0.1,
    xv: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Minimise L over ||W_s||_p <= R for every seed s, from the start ``W`` (S, d, d) (feasible).

    Returns (W (S, d, d), loss (S,), relative FW gap (S,), steps taken (S,)).
    """
    q = dual_exponent(p)
    e_fwd, e_inv = forward_exponent(p), inverse_exponent(p)
    S = W.shape[0]
    W = W.copy()
    steps = np.zeros(S, dtype=int)
    loss, g, _, fw = loss_and_grad(data.X, data.z, data.y, W, data.v, xv=xv)
    # Seeds never interact, and a seed whose gap is below fw_tol never moves again (a step needs
    # it active), so the loop runs on the live seeds only (index ``live``; the ``_l`` arrays).
    live = np.arange(S)
    X, z, y, v, xv_l = data.X, data.z, data.y, data.v, xv
    W_l, g_l, loss_l, fw_l, eta = W.copy(), g.copy(), loss.copy(), fw, np.full(S, eta0)
    for _ in range(max_steps):
        gq = lp_norms(g_l, q)[:, 0, 0]
        rel_gap = (np.sum(g_l * W_l, axis=(1, 2)) + R * gq) / np.maximum(R * gq, 1e-300)
        active = rel_gap > fw_tol
        if not active.all():  # freeze the converged seeds where they are
            done = live[~active]
            W[done], g[done], loss[done] = W_l[~active], g_l[~active], loss_l[~active]
            if not active.any():
                break
            live, W_l, g_l, loss_l, eta, gq = (a[active] for a in (live, W_l, g_l, loss_l, eta, gq))
            fw_l = _select_rows(fw_l, active)
            X, z, y, v = data.X[live], data.z[live], data.y[live], data.v[live]
            xv_l = None if xv is None else xv[live]
        u = signed_power(W_l, e_fwd) - _bshape(eta * R ** (p - 1) / np.maximum(gq, 1e-300)) * g_l  # mirror map
        Wn = signed_power(u, e_inv)  # inverse mirror map
        nrm = lp_norm(Wn, p, batch_dims=1)
        Wn = Wn * _bshape(np.where(nrm > R, R / np.where(nrm > 0, nrm, 1.0), 1.0))
        ln, gn, _, fwn = loss_and_grad(X, z, y, Wn, v, xv=xv_l)
        better = loss_difference(fw_l, fwn, y) < 0  # exact even when L(W') == L(W) in float
        W_l = np.where(_bshape(better), Wn, W_l)
        fw_l = _select_forward(better, fwn, fw_l)
        g_l = np.where(_bshape(better), gn, g_l)
        loss_l = np.where(better, ln, loss_l)
        eta = np.where(better, eta * 1.25, eta * 0.5)
        eta = np.maximum(eta, 1e-14)
        steps[live] += 1
    else:
        W[live], g[live], loss[live] = W_l, g_l, loss_l
    gq = lp_norms(g, q)[:, 0, 0]
    rel_gap = (np.sum(g * W, axis=(1, 2)) + R * gq) / np.maximum(R * gq, 1e-300)
    return W, loss, rel_gap, steps


def regpath_piece(cfg: RegPathConfig, p: float, position: int = 0, progress: bool = True):
    """The path W_R for every radius and seed, the global-alpha SVM and the divergences."""
    from mirrorattn.svm import attention_svm
    token_scores, globally_optimal_tokens, _ = token_tools()

    seeds = seed_list(cfg.first_seed, cfg.seeds)
    data = make_synthetic_batch(cfg.n, cfg.T, cfg.d, seeds)
    xv = token_values(data.X, data.v)
    S, d = len(seeds), cfg.d
    radii = cfg.radius_grid()
    W = np.zeros((S, d, d))
    W[:, 0, 0] = 1.0  # any feasible start; rescaled to the first radius below
    Ws = np.zeros((len(radii), S, d, d))
    gaps = np.zeros((len(radii), S))
    losses = np.zeros((len(radii), S))
    steps = np.zeros((len(radii), S), dtype=int)
    with progress_bar(len(radii), f"regpath p={p:g}, {S} seeds", "radius", position, progress) as bar:
        for k, R in enumerate(radii):
            W = W * _bshape(R / np.asarray(lp_norm(W, p, batch_dims=1)))
            W, losses[k], gaps[k], steps[k] = solve_constrained(data, W, R, p, cfg.fw_tol, cfg.max_steps, cfg.eta0,
                                                                xv=xv)
            Ws[k] = W
            bar.update(1)
    alpha = np.stack([globally_optimal_tokens(token_scores(data.X[s], data.y[s], data.v[s])) for s in range(S)])
    sol = solve_each(S, lambda s: attention_svm(data.X[s], data.z[s], alpha[s], p, solver=cfg.svm_solver), (d, d))
    svmW = sol.W
    div = directional_divergence(svmW[None], Ws, p, batch_dims=2)  # (R, S)
    _, _, _, fw = loss_and_grad(data.X, data.z, data.y, Ws[-1], data.v, xv=xv)
    selected = fw.probs.argmax(axis=-1)  # tokens selected at the largest radius
    arrays = {"W": Ws, "loss": losses, "fw_gap": gaps, "steps": steps, "svm_W": svmW, "alpha": alpha,
              "divergence": div, "selected_at_largest_radius": selected,
              "status": sol.status, "reason": sol.reason}
    meta = {"p": p, "max_relative_fw_gap": float(gaps.max()), "unconverged_solves": int((gaps > cfg.fw_tol).sum())}
    return arrays, meta


def _run(run: RunFolder) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Every p's path, collected: the summary entries and arrays of :func:`run_regpath`."""
    cfg = run.cfg
    res = run.per_p("regpath", regpath_piece)
    radii = cfg.radius_grid()
    arrays: dict[str, np.ndarray] = {"ps": np.array(cfg.ps), "radii": radii}
    per_p = {}
    for t, r in res.items():
        a = r.arrays
        for k in ("divergence", "W", "fw_gap", "loss", "svm_W", "steps"):
            arrays[f"{k}_p{t}"] = a[k]
        with np.errstate(all="ignore"):
            mean = np.nanmean(a["divergence"], axis=1)
        per_p[f"p{t}"] = {
            "mean_divergence_by_radius": mean,
            "first_radius_mean_divergence": float(mean[0]),
            "last_radius_mean_divergence": float(mean[-1]),
            "max_relative_fw_gap": r.meta["max_relative_fw_gap"],
            "unconverged_solves": r.meta["unconverged_solves"],
            "total_mirror_steps": int(a["steps"].sum()),
            "share_seeds_selecting_global_tokens_at_largest_radius": float(
                np.mean(np.all(a["selected_at_largest_radius"] == a["alpha"], axis=-1))),
            "svm_status_counts": status_counts(a["status"]),
            "svm_failures": [{"seed": cfg.first_seed + i, "reason": str(w)} for i, w in enumerate(a["reason"]) if w],
            "seconds": r.meta["seconds"],
        }
    return {"radii": radii, "fw_tol": cfg.fw_tol, "per_p": per_p}, arrays


run_regpath = experiment_runner("regpath", _run, "the regularisation-path experiment")
