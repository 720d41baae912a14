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
    token_tools,
)
from mirrorattn.experiments.synthetic.runner import Piece, run_pieces
from mirrorattn.experiments.synthetic.trainer import DEFAULT_EPS, log_grid, run_md
from mirrorattn.io import config_hash, write_json, write_npz
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
        its = (self.iterations,) if isinstance(self.iterations, int) else tuple(self.iterations)
        if len(its) == 1 and len(self.ps) > 1:
            its = its * len(self.ps)
        if len(its) != len(self.ps) or any(int(i) < 1 for i in its):
            raise ValueError(
                f"iterations must give one positive count per p (ps = {self.ps}), got {self.iterations}"
            )
        self.iterations = tuple(int(i) for i in its)
        for name in ("n", "T", "d", "seeds", "grid_points"):
            if int(getattr(self, name)) < (2 if name == "T" else 1):
                raise ValueError(f"{name} must be a positive integer (T >= 2), got {getattr(self, name)}")
        if not self.eta > 0:
            raise ValueError(f"eta (step size) must be > 0, got {self.eta}")

    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))


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


def svm_piece(cfg: LocalConfig, p_svm: float, alphas: np.ndarray, position: int = 0, progress: bool = True):
    """l_{p'}-AttSVM for every (path, seed) alpha; identical alphas of one seed are solved once.

    Returns W (P, B, d, d) (NaN where the solve failed), status / reason strings (P, B),
    locally_optimal (P, B) bool and solve_seconds (P, B).
    """
    from mirrorattn.svm import attention_svm
    token_scores, _, is_locally_optimal = token_tools()

    data, _ = _data_and_init(cfg)
    P, B, _ = alphas.shape
    d = cfg.d
    W = np.full((P, B, d, d), np.nan)
    status = np.full((P, B), "", dtype=object)
    reason = np.full((P, B), "", dtype=object)
    local = np.zeros((P, B), dtype=bool)
    secs = np.zeros((P, B))
    cache: dict[tuple[int, bytes], tuple] = {}
    with progress_bar(B, f"l_{p_svm:g}-AttSVM", "seed", position, progress) as bar:
        for b in range(B):
            gamma = token_scores(data.X[b], data.y[b], data.v[b])
            for i in range(P):
                key = (b, alphas[i, b].astype(np.int64).tobytes())
                if key not in cache:
                    t0 = time.perf_counter()
                    res, st, why = solve_or_record(
                        lambda b=b, i=i: attention_svm(data.X[b], data.z[b], alphas[i, b], p_svm, solver=cfg.svm_solver)
                    )
                    loc = bool(is_locally_optimal(alphas[i, b], res, gamma)) if res is not None else False
                    cache[key] = (res, st, why, loc, time.perf_counter() - t0)
                res, st, why, loc, dt = cache[key]
                if res is not None:
                    W[i, b] = res.W
                status[i, b], reason[i, b], local[i, b], secs[i, b] = st, why, loc, dt
            bar.update(1)
    arrays = {
        "W": W,
        "status": status.astype(str),
        "reason": reason.astype(str),
        "locally_optimal": local,
        "solve_seconds": secs,
    }
    return arrays, {"p_svm": p_svm, "unique_solves": len(cache)}


def _status_counts(st: np.ndarray) -> dict[str, int]:
    vals, counts = np.unique(st, return_counts=True)
    return {str(v): int(c) for v, c in zip(vals, counts)}


def run_local(
    cfg: LocalConfig,
    out: str | Path,
    workers: int = 1,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    figures: bool = True,
) -> dict[str, Any]:
    """Run (or resume) the experiment into the run folder ``out``; returns the summary dict."""
    t0 = time.perf_counter()
    out = Path(out)
    chash = config_hash(cfg)
    write_json(out / "config.json", {"experiment": "local", "config_hash": chash, "config": asdict(cfg)})
    ps = cfg.ps
    tag = [f"{p:g}" for p in ps]
    train = run_pieces(
        out,
        [Piece(f"train_p{t}", train_piece, dict(cfg=cfg, p=p, iterations=it, position=k, progress=progress))
         for k, (p, it, t) in enumerate(zip(ps, cfg.iterations, tag))],
        chash, workers, log,
    )
    alphas = np.stack([train[f"train_p{t}"].arrays["alpha"] for t in tag])  # (P, B, n)
    svm = run_pieces(
        out,
        [Piece(f"svm_p{t}", svm_piece, dict(cfg=cfg, p_svm=p, alphas=alphas, position=k, progress=progress))
         for k, (p, t) in enumerate(zip(ps, tag))],
        chash, workers, log,
    )
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
    status_counts: dict[str, dict[str, dict[str, int]]] = {}
    failures: list[dict[str, Any]] = []
    for i, t in enumerate(tag):
        tr = train[f"train_p{t}"].arrays
        Wk = tr["W"]  # (G, B, d, d)
        divs = []
        status_counts[f"path_p{t}"] = {}
        for j, tj in enumerate(tag):
            sv = svm[f"svm_p{tj}"].arrays
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
            status_counts[f"path_p{t}"][f"svm_p{tj}"] = _status_counts(sv["status"][i])
            for b in np.nonzero(sv["status"][i] != "optimal")[0]:
                failures.append({"path_p": ps[i], "svm_p": ps[j], "run": int(b), "status": str(sv["status"][i, b]),
                                 "reason": str(sv["reason"][i, b])})
        arrays[f"iterations_p{t}"] = tr["iterations"]
        arrays[f"divergence_p{t}"] = np.stack(divs, axis=1)  # (G, P', B)
        arrays[f"loss_p{t}"] = tr["loss"]
        arrays[f"max_prob_p{t}"] = tr["max_prob"]
        if cfg.zero_init_run:
            arrays[f"zero_init_W_p{t}"] = Wk[:, -1]  # (G, d, d)
    for tj in tag:
        sv = svm[f"svm_p{tj}"].arrays
        arrays[f"svm_W_p{tj}"] = sv["W"]  # (P, B, d, d)
        arrays[f"svm_status_p{tj}"] = sv["status"]
        arrays[f"locally_optimal_p{tj}"] = sv["locally_optimal"]
    glob_share = {f"p{t}": float(np.mean(np.all(alphas[i, :S] == gopt, axis=-1))) for i, t in enumerate(tag)}
    loc_share = {f"p{t}": float(np.mean(svm[f"svm_p{t}"].arrays["locally_optimal"][i, :S])) for i, t in enumerate(tag)}
    summary = {
        "experiment": "local",
        "config_hash": chash,
        "ps": list(ps),
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
        "mean_final_max_softmax_prob": {f"p{t}": float(train[f"train_p{t}"].arrays["max_prob"][:S].mean())
                                         for t in tag},
        "svm_status_counts": status_counts,
        "svm_failures": failures,
        "seconds": {
            **{k: v.meta["seconds"] for k, v in {**train, **svm}.items()},
            "total_this_call": time.perf_counter() - t0,
        },
        "reused_pieces": [k for k, v in {**train, **svm}.items() if v.reused],
    }
    write_npz(out / "arrays.npz", **arrays)
    if figures:
        from mirrorattn.experiments.synthetic.figures import local_figures

        summary["figures"] = local_figures(out, cfg, arrays)
    summary["seconds"]["total_this_call"] = time.perf_counter() - t0
    write_json(out / "summary.json", summary)
    return summary
