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

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mirrorattn.data.synthetic import joint_dataset
from mirrorattn.experiments.synthetic.common import check_ps, directional_divergence, progress_bar, solve_or_record
from mirrorattn.experiments.synthetic.runner import Piece, run_pieces
from mirrorattn.experiments.synthetic.trainer import DEFAULT_EPS, log_grid, run_md
from mirrorattn.io import config_hash, write_json, write_npz
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
        its = (self.iterations,) if isinstance(self.iterations, int) else tuple(self.iterations)
        if len(its) == 1 and len(self.ps) > 1:
            its = its * len(self.ps)
        if len(its) != len(self.ps) or any(int(i) < 1 for i in its):
            raise ValueError(f"iterations must give one positive count per p (ps = {self.ps}), got {self.iterations}")
        self.iterations = tuple(int(i) for i in its)
        if not self.eta > 0:
            raise ValueError(f"eta (step size) must be > 0, got {self.eta}")
        if self.init_scale < 0:
            raise ValueError(f"init_scale must be >= 0, got {self.init_scale}")


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
    resW, stW, whyW = solve_or_record(lambda: attention_svm(data.X, data.z, alpha, p, solver=cfg.svm_solver))
    resv, stv, whyv = solve_or_record(lambda: decoder_svm(data.X, data.y, alpha, p, solver=cfg.svm_solver))
    svmW = resW.W if resW is not None else np.full((d, d), np.nan)
    svmv = resv.v if resv is not None else np.full(d, np.nan)
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
    meta = {"p": p, "svm_W_status": stW, "svm_W_reason": whyW, "svm_v_status": stv, "svm_v_reason": whyv,
            "W_moved_after_first_step": bool(np.abs(tr.params["W"][min(2, len(grid) - 1)]).max() > 0)}
    return arrays, meta


def run_joint(
    cfg: JointConfig,
    out: str | Path,
    workers: int = 1,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    figures: bool = True,
) -> dict[str, Any]:
    """Run (or resume) the joint experiment into ``out``; returns the summary dict."""
    t0 = time.perf_counter()
    out = Path(out)
    chash = config_hash(cfg)
    write_json(out / "config.json", {"experiment": "joint", "config_hash": chash, "config": asdict(cfg)})
    tags = [f"{p:g}" for p in cfg.ps]
    res = run_pieces(
        out,
        [Piece(f"joint_p{t}", joint_piece, dict(cfg=cfg, p=p, iterations=it, position=k, progress=progress))
         for k, (p, it, t) in enumerate(zip(cfg.ps, cfg.iterations, tags))],
        chash, workers, log,
    )
    arrays: dict[str, np.ndarray] = {"ps": np.array(cfg.ps)}
    per_p: dict[str, Any] = {}
    for t in tags:
        a, m = res[f"joint_p{t}"].arrays, res[f"joint_p{t}"].meta
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
            "mean_divergence_W_first_third": float(np.nanmean(a["div_W"][:third])),
            "mean_divergence_W_last_third": float(np.nanmean(a["div_W"][-third:])),
            "mean_divergence_v_first_third": float(np.nanmean(a["div_v"][:third])),
            "mean_divergence_v_last_third": float(np.nanmean(a["div_v"][-third:])),
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
    summary = {"experiment": "joint", "config_hash": chash, "ps": list(cfg.ps), "per_p": per_p,
               "reused_pieces": [k for k, v in res.items() if v.reused]}
    write_npz(out / "arrays.npz", **arrays)
    if figures:
        from mirrorattn.experiments.synthetic.figures import joint_figures

        summary["figures"] = joint_figures(out, cfg, arrays)
    summary["seconds_total_this_call"] = time.perf_counter() - t0
    write_json(out / "summary.json", summary)
    return summary
