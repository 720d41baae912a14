"""Local convergence of l_p-AttGD (paper.md 5.1, the paper's main figure).

For every path exponent p: normalised l_p mirror descent on W (v fixed) from W_0 ~ N(0, s^2) for
``seeds`` data sets/initialisations at once, plus one run from W_0 = 0 (on the first seed's data).
After training, alpha = argmax of the final softmax per sample; l_{p'}-AttSVM is solved for every
p' and every seed; the directional Bregman divergence (path's p) D(W_mm / ||W_mm||, W_k / ||W_k||)
is recorded on a log-spaced grid of iterations k.

Pieces (resumable, parallel with ``workers``): ``train_p<p>`` for every p, then ``svm_p<p'>`` for
every p' (each deduplicates the (seed, alpha) pairs shared by several paths).
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
    init_weights,
    per_p_counts,
    progress_bar,
    seed_list,
    solve_each,
    status_counts,
    tag,
    token_tools,
)
from mirrorattn.experiments.synthetic.trainer import DEFAULT_EPS, log_grid, run_md
from mirrorattn.models.attention import loss_and_grad, token_values

__all__ = ["LocalConfig", "run_local"]


@dataclass
class LocalConfig:
    """Settings of the local-convergence experiment (defaults: the paper's)."""

    ps: tuple[float, ...] = (1.75, 2.0, 3.0)  #: path exponents p; the SVMs use the same p'
    iterations: tuple[int, ...] = (1500, 2000, 20000)  #: iterations per p (same order as ps)
    n: int = 6  #: samples
    T: int = 8  #: tokens per sample
    d: int = 10  #: token dimension
    seeds: int = 100  #: random initialisations (seed s draws the data and W_0 of run s)
    first_seed: int = 1  #: seeds are first_seed, ..., first_seed + seeds - 1
    eta: float = 0.1  #: step size
    normalized: bool = True  #: divide each seed's gradient by its dual norm ||g||_q + eps
    init_scale: float = 1.0  #: W_0 entries ~ N(0, init_scale^2)
    zero_init_run: bool = True  #: also train from W_0 = 0 on the first seed's data (its path is drawn)
    grid_points: int = 60  #: log-spaced iterations kept per run
    svm_solver: str = "clarabel"
    eps: float = DEFAULT_EPS

    def __post_init__(self) -> None:
        self.ps = check_ps(self.ps)
        self.iterations = per_p_counts(self.iterations, self.ps)
        check_positive(self, ("n", "T", "d", "seeds", "grid_points"))
        check_int(self.first_seed, "first_seed", 0)
        check_finite(self.init_scale, "init_scale", low=0.0)
        check_solver(self.svm_solver)

    def seed_list(self) -> list[int]:
        return seed_list(self.first_seed, self.seeds)


def _data_and_init(cfg: LocalConfig) -> tuple[Any, np.ndarray]:
    """Data (B = seeds [+1]) and W_0; the zero-init run is the last batch entry."""
    seeds = cfg.seed_list()
    W0 = init_weights(seeds, (cfg.d, cfg.d), cfg.init_scale)
    if cfg.zero_init_run:
        seeds = seeds + [seeds[0]]
        W0 = np.concatenate([W0, np.zeros((1, cfg.d, cfg.d))])
    return make_synthetic_batch(cfg.n, cfg.T, cfg.d, seeds), W0


def train_piece(cfg: LocalConfig, p: float, iterations: int, position: int = 0, progress: bool = True):
    """Train every seed with l_p-MD; keep W on a log grid; alpha = argmax of the final softmax."""
    data, W0 = _data_and_init(cfg)
    grid = log_grid(iterations, cfg.grid_points)

    xv = token_values(data.X, data.v)

    def grad_fn(params, record=False):
        loss, gW, _, _ = loss_and_grad(data.X, data.z, data.y, params["W"], data.v, xv=xv)
        return loss, {"W": gW}, {}

    B = W0.shape[0]
    with progress_bar(iterations, f"local l_{p:g}-MD, {B} runs", "it", position, progress) as bar:
        trace = run_md(grad_fn, {"W": W0}, p, cfg.eta, iterations, grid, cfg.normalized, eps=cfg.eps,
                       progress=bar.update)
    W = trace.final["W"]
    _, _, _, fw = loss_and_grad(data.X, data.z, data.y, W, data.v)
    arrays = {
        "iterations": trace.iterations,
        "W": trace.params["W"],
        "loss": trace.loss,
        "alpha": fw.probs.argmax(axis=-1),
        "max_prob": fw.probs.max(axis=-1),
    }
    return arrays, {"p": p, "iterations": iterations, "runs": B}


def svm_piece(cfg: LocalConfig, p: float, alphas: np.ndarray, position: int = 0, progress: bool = True):
    """l_p-AttSVM (p = the SVM's p') for every (path, seed) alpha; identical alphas of one seed are solved once.

    Returns W (P, B, d, d) (NaN where the solve failed), status / reason strings (P, B),
    locally_optimal (P, B) bool and solve_seconds (P, B).
    """
    from mirrorattn.svm import attention_svm
    token_scores, _, is_locally_optimal = token_tools()

    data, _ = _data_and_init(cfg)
    P, B, _ = alphas.shape
    flat = alphas.transpose(1, 0, 2).reshape(B * P, -1)  # seed-major: (b, i) -> b * P + i

    def solve(k: int) -> Any:
        return attention_svm(data.X[k // P], data.z[k // P], flat[k], p, solver=cfg.svm_solver)

    def key(k: int) -> tuple[int, bytes]:
        return k // P, flat[k].astype(np.int64).tobytes()

    with progress_bar(B * P, f"l_{p:g}-AttSVM", "solve", position, progress) as bar:
        sol = solve_each(B * P, solve, (cfg.d, cfg.d), key=key, on_done=lambda: bar.update(1))
    gammas = [token_scores(data.X[b], data.y[b], data.v[b]) for b in range(B)]
    local = np.array([res is not None and bool(is_locally_optimal(flat[k], res, gammas[k // P]))
                      for k, res in enumerate(sol.results)])

    def path_major(a: np.ndarray) -> np.ndarray:
        return a.reshape((B, P) + a.shape[1:]).swapaxes(0, 1)

    arrays = {
        "W": path_major(sol.W),
        "status": path_major(sol.status),
        "reason": path_major(sol.reason),
        "locally_optimal": path_major(local),
        "solve_seconds": path_major(sol.seconds),
    }
    return arrays, {"p_svm": p, "unique_solves": len({key(k) for k in range(B * P)})}


def _run(run: RunFolder) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Train every p, solve every p' and compare: the summary entries and arrays of :func:`run_local`."""
    cfg = run.cfg
    ps = cfg.ps
    tags = [tag(p) for p in ps]
    train = run.per_p("train", train_piece, per_p={"iterations": cfg.iterations})
    alphas = np.stack([train[t].arrays["alpha"] for t in tags])  # (P, B, n)
    svm = run.per_p("svm", svm_piece, alphas=alphas)
    data, _ = _data_and_init(cfg)
    S = cfg.seeds
    token_scores, globally_optimal_tokens, _ = token_tools()

    gopt = np.stack([globally_optimal_tokens(token_scores(data.X[b], data.y[b], data.v[b])) for b in range(S)])

    P = len(ps)
    final_mean = np.full((P, P), np.nan)
    final_zero = np.full((P, P), np.nan)
    first_third = np.full((P, P), np.nan)
    last_third = np.full((P, P), np.nan)
    used = np.zeros((P, P), dtype=int)
    arrays: dict[str, np.ndarray] = {"ps": np.array(ps), "alpha": alphas, "globally_optimal_tokens": gopt}
    counts: dict[str, dict[str, dict[str, int]]] = {}
    failures: list[dict[str, Any]] = []
    for i, t in enumerate(tags):
        tr = train[t].arrays
        Wk = tr["W"]  # (G, B, d, d)
        divs = []
        counts[f"path_p{t}"] = {}
        for j, tj in enumerate(tags):
            sv = svm[tj].arrays
            div = directional_divergence(sv["W"][i][None], Wk, ps[i], batch_dims=2)  # (G, B)
            divs.append(div)
            seeds_div = div[:, :S]
            final_mean[i, j] = np.nanmean(seeds_div[-1]) if np.isfinite(seeds_div[-1]).any() else np.nan
            used[i, j] = int(np.isfinite(seeds_div[-1]).sum())
            G = div.shape[0]
            m = np.nanmean(seeds_div, axis=1)
            first_third[i, j] = np.nanmean(m[: max(1, G // 3)])
            last_third[i, j] = np.nanmean(m[-max(1, G // 3) :])
            if cfg.zero_init_run:
                final_zero[i, j] = div[-1, -1]
            counts[f"path_p{t}"][f"svm_p{tj}"] = status_counts(sv["status"][i])
            for b in np.nonzero(sv["status"][i] != "optimal")[0]:
                failures.append({"path_p": ps[i], "svm_p": ps[j], "run": int(b), "status": str(sv["status"][i, b]),
                                 "reason": str(sv["reason"][i, b])})
        arrays[f"iterations_p{t}"] = tr["iterations"]
        arrays[f"divergence_p{t}"] = np.stack(divs, axis=1)  # (G, P', B)
        arrays[f"loss_p{t}"] = tr["loss"]
        arrays[f"max_prob_p{t}"] = tr["max_prob"]
        if cfg.zero_init_run:
            arrays[f"zero_init_W_p{t}"] = Wk[:, -1]  # (G, d, d)
    for tj in tags:
        sv = svm[tj].arrays
        arrays[f"svm_W_p{tj}"] = sv["W"]  # (P, B, d, d)
        arrays[f"svm_status_p{tj}"] = sv["status"]
        arrays[f"locally_optimal_p{tj}"] = sv["locally_optimal"]
    glob_share = {f"p{t}": float(np.mean(np.all(alphas[i, :S] == gopt, axis=-1))) for i, t in enumerate(tags)}
    loc_share = {f"p{t}": float(np.mean(svm[t].arrays["locally_optimal"][i, :S])) for i, t in enumerate(tags)}
    pieces = {**{f"train_p{t}": r for t, r in train.items()}, **{f"svm_p{t}": r for t, r in svm.items()}}
    summary = {
        "rows": "path p (l_p-MD)",
        "columns": "SVM p' (l_p'-AttSVM)",
        "final_mean_divergence": final_mean,
        "final_divergence_zero_init": final_zero if cfg.zero_init_run else None,
        "seeds_in_mean": used,
        "mean_divergence_first_third": first_third,
        "mean_divergence_last_third": last_third,
        "diagonal_smallest_in_row": [bool(np.nanargmin(final_mean[i]) == i) for i in range(P)]
        if np.isfinite(final_mean).any(axis=1).all() else None,
        "share_globally_optimal_alpha": glob_share,
        "share_locally_optimal_alpha": loc_share,
        "mean_final_max_softmax_prob": {f"p{t}": float(train[t].arrays["max_prob"][:S].mean()) for t in tags},
        "svm_status_counts": counts,
        "svm_failures": failures,
        "seconds": {k: v.meta["seconds"] for k, v in pieces.items()},
    }
    return summary, arrays


run_local = experiment_runner("local", _run, "the local-convergence experiment",
                              seconds_key=("seconds", "total_this_call"))
