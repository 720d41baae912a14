"""Joint training of (W, v) (paper.md 5.2): the fixed data set, W_0 = 0, v_0 = 0.

Normalised l_p mirror descent on W and v together, each tensor normalised by its own dual norm.
At v = 0 the gradient in W is exactly zero (f = 0 for every W), so W stays at zero for the first
step while v moves; from the second step on both move. Recorded on a log grid of iterations: the
mean max softmax probability, the mean logistic probability sigma(y_i x_{i,alpha_i}^T v) with
alpha = argmax of the current softmax, W, v and their directional Bregman divergences (path's
p) to the l_p-AttSVM and l_p-SVM solutions for the final alpha.

One piece per p (``joint_p<p>``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mirrorattn.checks import check_finite, check_int
from mirrorattn.data.synthetic import joint_dataset
from mirrorattn.experiments.synthetic.common import (
    RunFolder,
    check_positive,
    check_ps,
    check_solver,
    directional_divergence,
    experiment_runner,
    nanmean,
    per_p_counts,
    progress_bar,
    solve_each,
)
from mirrorattn.experiments.synthetic.trainer import DEFAULT_EPS, log_grid, run_md
from mirrorattn.models.attention import loss_and_grad

__all__ = ["JointConfig", "run_joint"]


@dataclass
class JointConfig:
    """Settings of the joint (W, v) experiment (defaults: the paper's)."""

    ps: tuple[float, ...] = (1.75, 2.0, 3.0)
    iterations: tuple[int, ...] = (1500, 2000, 20000)  #: per p, same order as ps
    eta: float = 0.1
    normalized: bool = True
    init_scale: float = 0.0  #: W_0, v_0 entries ~ N(0, init_scale^2); the paper uses 0
    seed: int = 0  #: only used when init_scale > 0
    grid_points: int = 300  #: log-spaced iterations kept
    svm_solver: str = "clarabel"
    eps: float = DEFAULT_EPS

    def __post_init__(self) -> None:
        self.ps = check_ps(self.ps)
        self.iterations = per_p_counts(self.iterations, self.ps)
        check_positive(self, ("grid_points",))
        check_finite(self.init_scale, "init_scale", low=0.0)
        check_int(self.seed, "seed", 0)
        check_solver(self.svm_solver)


def joint_piece(cfg: JointConfig, p: float, iterations: int, position: int = 0, progress: bool = True):
    """Train (W, v) with joint l_p-MD; solve both SVMs for the final alpha; divergences on the grid."""
    from mirrorattn.svm import attention_svm, decoder_svm

    data = joint_dataset()
    X, z, y = data.X[None], data.z[None], data.y[None]
    d = X.shape[-1]
    rng = np.random.default_rng([cfg.seed, 2])
    W0 = cfg.init_scale * rng.standard_normal((1, d, d))
    v0 = cfg.init_scale * rng.standard_normal((1, d))

    def grad_fn(params, record=False):
        loss, gW, gv, fw = loss_and_grad(X, z, y, params["W"], params["v"], need_v=True)
        if not record:
            return loss, {"W": gW, "v": gv}, {}
        alpha = fw.probs.argmax(axis=-1)  # (1, n)
        xa = np.take_along_axis(X, alpha[..., None, None], axis=2)[:, :, 0, :]  # (1, n, d)
        margin = y * np.einsum("snd,sd->sn", xa, params["v"])
        logistic = 1.0 / (1.0 + np.exp(-margin))
        extras = {"max_prob": fw.probs.max(axis=-1).mean(axis=-1), "logistic_prob": logistic.mean(axis=-1)}
        return loss, {"W": gW, "v": gv}, extras

    grid = log_grid(iterations, cfg.grid_points)
    with progress_bar(iterations, f"joint l_{p:g}-MD", "it", position, progress) as bar:
        tr = run_md(grad_fn, {"W": W0, "v": v0}, p, cfg.eta, iterations, grid, cfg.normalized, eps=cfg.eps,
                    progress=bar.update)
    _, _, _, fw = loss_and_grad(X, z, y, tr.final["W"], tr.final["v"])
    alpha = fw.probs.argmax(axis=-1)[0]
    solW = solve_each(1, lambda _: attention_svm(data.X, data.z, alpha, p, solver=cfg.svm_solver), (d, d))
    solv = solve_each(1, lambda _: decoder_svm(data.X, data.y, alpha, p, solver=cfg.svm_solver), (d,), field="v")
    svmW, svmv = solW.W[0], solv.W[0]
    divW = directional_divergence(svmW[None, None], tr.params["W"], p, batch_dims=2)[:, 0]
    divv = directional_divergence(svmv[None, None], tr.params["v"], p, batch_dims=2)[:, 0]
    arrays = {
        "iterations": tr.iterations,
        "W": tr.params["W"][:, 0],
        "v": tr.params["v"][:, 0],
        "loss": tr.loss[:, 0],
        "max_prob": tr.extras["max_prob"][:, 0],
        "logistic_prob": tr.extras["logistic_prob"][:, 0],
        "div_W": divW,
        "div_v": divv,
        "svm_W": svmW,
        "svm_v": svmv,
        "alpha": alpha,
    }
    meta = {"p": p, "svm_W_status": str(solW.status[0]), "svm_W_reason": str(solW.reason[0]),
            "svm_v_status": str(solv.status[0]), "svm_v_reason": str(solv.reason[0]),
            "W_moved_after_first_step": bool(np.abs(tr.params["W"][min(2, len(grid) - 1)]).max() > 0)}
    return arrays, meta


def _run(run: RunFolder) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Every p's piece, collected: the summary entries and arrays of :func:`run_joint`."""
    cfg = run.cfg
    res = run.per_p("joint", joint_piece, per_p={"iterations": cfg.iterations})
    arrays: dict[str, np.ndarray] = {"ps": np.array(cfg.ps)}
    per_p: dict[str, Any] = {}
    for t, r in res.items():
        a, m = r.arrays, r.meta
        for k, v in a.items():
            arrays[f"{k}_p{t}"] = v
        G = len(a["iterations"])
        third = max(1, G // 3)
        per_p[f"p{t}"] = {
            "final_max_softmax_prob": float(a["max_prob"][-1]),
            "final_logistic_prob": float(a["logistic_prob"][-1]),
            "final_loss": float(a["loss"][-1]),
            "final_divergence_W": float(a["div_W"][-1]),
            "final_divergence_v": float(a["div_v"][-1]),
            "mean_divergence_W_first_third": float(nanmean(a["div_W"][:third])),
            "mean_divergence_W_last_third": float(nanmean(a["div_W"][-third:])),
            "mean_divergence_v_first_third": float(nanmean(a["div_v"][:third])),
            "mean_divergence_v_last_third": float(nanmean(a["div_v"][-third:])),
            "alpha": a["alpha"],
            "final_W": a["W"][-1],
            "final_v": a["v"][-1],
            "svm_W": a["svm_W"],
            "svm_v": a["svm_v"],
            "svm_W_status": m["svm_W_status"],
            "svm_v_status": m["svm_v_status"],
            "svm_reasons": [r for r in (m["svm_W_reason"], m["svm_v_reason"]) if r],
            "W_moved_after_first_step": m["W_moved_after_first_step"],
            "seconds": m["seconds"],
        }
    return {"per_p": per_p}, arrays


run_joint = experiment_runner("joint", _run, "the joint (W, v) experiment")
