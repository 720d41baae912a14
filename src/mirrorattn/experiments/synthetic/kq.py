"""The K/Q parameterisation W = K Q^T trained with l_2 and l_p mirror descent (paper.md sections 1, 3).

For every p: normalised l_p-MD on (K, Q) (each seed's K and Q normalised by their own dual
norms), and, for comparison, l_p-MD on W in the W form from the same W_0 = K_0 Q_0^T. After
training, alpha = argmax of the final softmax of each run; the nuclear-norm AttSVM, the l_p-AttSVM
and the l_2-AttSVM are solved for that alpha. Recorded on a log grid: the cosine correlation
<W_k, W_mm> / (||W_k||_F ||W_mm||_F) of the learned W with each SVM solution, and the final
directional Bregman divergences (p) to the l_p solution. One piece per p (``kq_p<p>``).
Initialisation (as the authors): Q_0 ~ N(0, 1), K_0 ~ N(0, init_scale^2).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mirrorattn.data.synthetic import make_synthetic_batch
from mirrorattn.experiments.synthetic.common import (
    check_ps,
    directional_divergence,
    init_weights,
    progress_bar,
    solve_or_record,
)
from mirrorattn.experiments.synthetic.runner import Piece, run_pieces
from mirrorattn.experiments.synthetic.trainer import DEFAULT_EPS, log_grid, run_md
from mirrorattn.io import config_hash, write_json, write_npz
from mirrorattn.models.attention import kq_loss_and_grad, loss_and_grad, token_values

__all__ = ["KQConfig", "run_kq"]

TARGETS = ("nuclear-norm AttSVM", "l_p-AttSVM (run's p)", "l_2-AttSVM")


@dataclass
class KQConfig:
    """Settings of the K/Q experiment."""

    ps: tuple[float, ...] = (2.0, 1.75, 3.0)  #: p = 2 is plain (normalised) gradient descent
    iterations: int = 3000
    n: int = 6
    T: int = 8
    d: int = 10
    seeds: int = 20
    first_seed: int = 1
    eta: float = 0.1
    normalized: bool = True
    init_scale: float = 0.01  #: K_0 entries ~ N(0, init_scale^2); Q_0 ~ N(0, 1)
    grid_points: int = 50
    svm_solver: str = "clarabel"
    eps: float = DEFAULT_EPS

    def __post_init__(self) -> None:
        self.ps = check_ps(self.ps)
        if isinstance(self.iterations, (list, tuple)):
            if len(set(self.iterations)) != 1:
                raise ValueError("the kq experiment uses one iteration count for every p")
            self.iterations = int(self.iterations[0])
        for name in ("n", "T", "d", "seeds", "iterations", "grid_points"):
            if int(getattr(self, name)) < (2 if name == "T" else 1):
                raise ValueError(f"{name} must be a positive integer (T >= 2), got {getattr(self, name)}")
        if not self.eta > 0:
            raise ValueError(f"eta (step size) must be > 0, got {self.eta}")


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """<a, b> / (||a||_F ||b||_F) over the last two axes (NaN if either is zero or NaN)."""
    num = np.sum(a * b, axis=(-2, -1))
    den = np.linalg.norm(a, axis=(-2, -1)) * np.linalg.norm(b, axis=(-2, -1))
    with np.errstate(all="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def kq_piece(cfg: KQConfig, p: float, position: int = 0, progress: bool = True):
    """Train K/Q and W forms with l_p-MD, solve the three SVMs per run and seed, correlations on the grid."""
    from mirrorattn.svm import attention_svm, attention_svm_nuclear

    seeds = list(range(cfg.first_seed, cfg.first_seed + cfg.seeds))
    data = make_synthetic_batch(cfg.n, cfg.T, cfg.d, seeds)
    xv = token_values(data.X, data.v)
    d = cfg.d
    K0 = init_weights(seeds, (d, d), cfg.init_scale, stream=3)
    Q0 = init_weights(seeds, (d, d), 1.0, stream=4)
    grid = log_grid(cfg.iterations, cfg.grid_points)

    def kq_grad(params, record=False):
        loss, gK, gQ, _ = kq_loss_and_grad(data.X, data.z, data.y, params["K"], params["Q"], data.v)
        return loss, {"K": gK, "Q": gQ}, {}

    def w_grad(params, record=False):
        loss, gW, _, _ = loss_and_grad(data.X, data.z, data.y, params["W"], data.v, xv=xv)
        return loss, {"W": gW}, {}

    runs: dict[str, np.ndarray] = {}
    with progress_bar(2 * cfg.iterations, f"kq l_{p:g}-MD, {cfg.seeds} seeds", "it", position, progress) as bar:
        tr = run_md(kq_grad, {"K": K0, "Q": Q0}, p, cfg.eta, cfg.iterations, grid, cfg.normalized, eps=cfg.eps,
                    progress=bar.update)
        runs["KQ"] = tr.params["K"] @ tr.params["Q"].transpose(0, 1, 3, 2)  # (G, S, d, d)
        tr = run_md(w_grad, {"W": K0 @ Q0.transpose(0, 2, 1)}, p, cfg.eta, cfg.iterations, grid, cfg.normalized,
                    eps=cfg.eps, progress=bar.update)
        runs["W"] = tr.params["W"]
    arrays: dict[str, np.ndarray] = {"iterations": grid}
    statuses: dict[str, dict[str, int]] = {}
    failures = []
    for name, Wk in runs.items():
        _, _, _, fw = loss_and_grad(data.X, data.z, data.y, Wk[-1], data.v, xv=xv)
        alpha = fw.probs.argmax(axis=-1)
        sols = np.full((len(TARGETS), cfg.seeds, d, d), np.nan)
        for s in range(cfg.seeds):
            Xs, zs, a_s = data.X[s], data.z[s], alpha[s]
            calls = (
                lambda Xs=Xs, zs=zs, a_s=a_s: attention_svm_nuclear(Xs, zs, a_s, solver=cfg.svm_solver),
                lambda Xs=Xs, zs=zs, a_s=a_s: attention_svm(Xs, zs, a_s, p, solver=cfg.svm_solver),
                lambda Xs=Xs, zs=zs, a_s=a_s: attention_svm(Xs, zs, a_s, 2.0, solver=cfg.svm_solver),
            )
            for j, call in enumerate(calls):
                res, st, why = solve_or_record(call)
                key = f"{name}: {TARGETS[j]}"
                statuses.setdefault(key, {})
                statuses[key][st] = statuses[key].get(st, 0) + 1
                if res is not None:
                    sols[j, s] = res.W
                else:
                    failures.append({"run": name, "target": TARGETS[j], "seed": seeds[s], "status": st,
                                     "reason": why})
        arrays[f"corr_{name}"] = np.stack([_cosine(Wk, sols[j][None]) for j in range(len(TARGETS))], axis=1)
        arrays[f"div_lp_{name}"] = directional_divergence(sols[1][None], Wk, p, batch_dims=2)  # (G, S)
        arrays[f"svm_{name}"] = sols
        arrays[f"alpha_{name}"] = alpha
        arrays[f"final_W_{name}"] = Wk[-1]
    return arrays, {"p": p, "svm_status_counts": statuses, "svm_failures": failures}


def run_kq(
    cfg: KQConfig,
    out: str | Path,
    workers: int = 1,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    figures: bool = True,
) -> dict[str, Any]:
    """Run (or resume) the K/Q experiment into ``out``; returns the summary."""
    t0 = time.perf_counter()
    out = Path(out)
    chash = config_hash(cfg)
    write_json(out / "config.json", {"experiment": "kq", "config_hash": chash, "config": asdict(cfg)})
    tags = [f"{p:g}" for p in cfg.ps]
    res = run_pieces(out, [Piece(f"kq_p{t}", kq_piece, dict(cfg=cfg, p=p, position=k, progress=progress))
                           for k, (p, t) in enumerate(zip(cfg.ps, tags))], chash, workers, log)
    run_names = []
    arrays: dict[str, np.ndarray] = {"ps": np.array(cfg.ps), "targets": np.array(TARGETS)}
    per_run: dict[str, Any] = {}
    for t in tags:
        a, m = res[f"kq_p{t}"].arrays, res[f"kq_p{t}"].meta
        for form in ("KQ", "W"):
            run = f"{'K/Q' if form == 'KQ' else 'W'} form, l_{t}-MD"
            run_names.append(run)
            arrays[f"iterations_{run}"] = a["iterations"]
            arrays[f"corr_{run}"] = a[f"corr_{form}"]
            with np.errstate(all="ignore"):
                final_corr = np.nanmean(a[f"corr_{form}"][-1], axis=-1)
                final_div = float(np.nanmean(a[f"div_lp_{form}"][-1]))
            per_run[run] = {
                "final_mean_cosine": {TARGETS[j]: float(final_corr[j]) for j in range(len(TARGETS))},
                "final_mean_divergence_to_lp_svm": final_div,
                "closest_target": TARGETS[int(np.nanargmax(final_corr))] if np.isfinite(final_corr).any() else None,
            }
        per_run[f"svm p={t}"] = {"status_counts": m["svm_status_counts"], "failures": m["svm_failures"],
                                 "seconds": m["seconds"]}
    arrays["runs"] = np.array(run_names)
    summary = {"experiment": "kq", "config_hash": chash, "ps": list(cfg.ps), "targets": list(TARGETS),
               "per_run": per_run, "reused_pieces": [k for k, v in res.items() if v.reused]}
    write_npz(out / "arrays.npz", **arrays)
    if figures:
        from mirrorattn.experiments.synthetic.figures import kq_figures

        summary["figures"] = kq_figures(out, cfg, arrays)
    summary["seconds_total_this_call"] = time.perf_counter() - t0
    write_json(out / "summary.json", summary)
    return summary
