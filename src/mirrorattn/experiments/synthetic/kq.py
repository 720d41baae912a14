"""The K/Q parameterisation W = K Q^T trained with l_2 and l_p mirror descent (paper.md sections 1, 3).

For every p: normalised l_p-MD on (K, Q) (each seed's K and Q normalised by their own dual
norms), and, for comparison, l_p-MD on W in the W form from the same W_0 = K_0 Q_0^T. After
training, alpha = argmax of the final softmax of each run; the nuclear-norm AttSVM, the l_p-AttSVM
and the l_2-AttSVM are solved for that alpha. Recorded on a log grid: the cosine correlation
<W_k, W_mm> / (||W_k||_F ||W_mm||_F) of the learned W with each SVM solution, and the final
directional Bregman divergences (p) to the l_p solution.
Initialisation (as the authors): Q_0 ~ N(0, 1), K_0 ~ N(0, init_scale^2).

Pieces: ``kq_p<p>`` per p (training and the l_p-AttSVM, p != 2), then ``kq_svm``: the
nuclear-norm and l_2 SVMs, which do not depend on p, solved once per (seed, alpha) over all runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from mirrorattn.checks import check_finite, check_int
from mirrorattn.data.synthetic import make_synthetic_batch
from mirrorattn.experiments.synthetic.common import (
    RunFolder,
    check_positive,
    check_ps,
    check_solver,
    cosine_or_nan,
    directional_divergence,
    experiment_runner,
    init_weights,
    progress_bar,
    seed_list,
    solve_each,
    status_counts,
)
from mirrorattn.experiments.synthetic.trainer import DEFAULT_EPS, log_grid, run_md
from mirrorattn.models.attention import forward, kq_loss_and_grad, loss_and_grad, token_values

__all__ = ["KQConfig", "run_kq"]

TARGETS = ("nuclear-norm AttSVM", "l_p-AttSVM (run's p)", "l_2-AttSVM")


@dataclass
class KQConfig:
    """Settings of the K/Q experiment."""

    ps: tuple[float, ...] = (2.0, 1.75, 3.0)  #: p = 2 is plain (normalised) gradient descent
    iterations: int | tuple[int, ...] = 3000  #: one count (or equal counts, one per p)
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
        check_positive(self, ("n", "T", "d", "seeds", "iterations", "grid_points"))
        check_int(self.first_seed, "first_seed", 0)
        check_finite(self.init_scale, "init_scale", low=0.0)
        check_solver(self.svm_solver)


def _data(cfg: KQConfig) -> Any:
    return make_synthetic_batch(cfg.n, cfg.T, cfg.d, seed_list(cfg.first_seed, cfg.seeds))


def kq_piece(cfg: KQConfig, p: float, position: int = 0, progress: bool = True):
    """Train the K/Q and W forms with l_p-MD (iterates on the grid, alpha per run and seed) and, for
    p != 2, solve the l_p-AttSVM per (seed, alpha) (runs that select the same tokens share it)."""
    from mirrorattn.svm import attention_svm

    seeds = seed_list(cfg.first_seed, cfg.seeds)
    data = _data(cfg)
    xv = token_values(data.X, data.v)
    d, S = cfg.d, cfg.seeds
    K0 = init_weights(seeds, (d, d), cfg.init_scale, stream=3)
    Q0 = init_weights(seeds, (d, d), 1.0, stream=4)
    grid = log_grid(cfg.iterations, cfg.grid_points)

    def kq_grad(params, record=False):
        loss, gK, gQ, _ = kq_loss_and_grad(data.X, data.z, data.y, params["K"], params["Q"], data.v)
        return loss, {"K": gK, "Q": gQ}, {}

    def w_grad(params, record=False):
        loss, gW, _, _ = loss_and_grad(data.X, data.z, data.y, params["W"], data.v, xv=xv)
        return loss, {"W": gW}, {}

    with progress_bar(2 * cfg.iterations, f"kq l_{p:g}-MD, {S} seeds", "it", position, progress) as bar:
        tr = run_md(kq_grad, {"K": K0, "Q": Q0}, p, cfg.eta, cfg.iterations, grid, cfg.normalized, eps=cfg.eps,
                    progress=bar.update)
        W_kq = tr.params["K"] @ tr.params["Q"].transpose(0, 1, 3, 2)  # (G, S, d, d)
        tr = run_md(w_grad, {"W": K0 @ Q0.transpose(0, 2, 1)}, p, cfg.eta, cfg.iterations, grid, cfg.normalized,
                    eps=cfg.eps, progress=bar.update)
    arrays: dict[str, np.ndarray] = {"iterations": grid}
    for form, Wk in (("KQ", W_kq), ("W", tr.params["W"])):
        arrays[f"W_{form}"] = Wk
        arrays[f"alpha_{form}"] = forward(data.X, data.z, Wk[-1], data.v, xv).probs.argmax(axis=-1)
    if p != 2.0:  # for p = 2 the l_p target is the l_2 one, solved in kq_svm
        alphas = np.concatenate([arrays["alpha_KQ"], arrays["alpha_W"]])  # run-major: k = run * S + seed
        sol = solve_each(2 * S, lambda k: attention_svm(data.X[k % S], data.z[k % S], alphas[k], p,
                                                         solver=cfg.svm_solver), (d, d), key=_key(alphas, S))
        arrays.update(svm_lp=sol.W, status_lp=sol.status, reason_lp=sol.reason)
    return arrays, {"p": p}


def _key(alphas: np.ndarray, S: int) -> Callable[[int], tuple[int, bytes]]:
    """Problem k (seed k % S, tokens alphas[k]) -> its identity: equal keys share one SVM solve."""
    return lambda k: (k % S, alphas[k].astype(np.int64).tobytes())


def shared_svm_piece(cfg: KQConfig, alphas: np.ndarray, p: float = 2.0, position: int = 0, progress: bool = True):
    """The nuclear-norm and l_2 AttSVMs for alphas (R, S, n) (every run of every p), each distinct
    (seed, alpha) solved once. Returns nuclear / l2 solutions (R, S, d, d) with status and reason."""
    from mirrorattn.svm import attention_svm, attention_svm_nuclear

    data = _data(cfg)
    R, S, _ = alphas.shape
    flat = alphas.reshape(R * S, -1)
    key = _key(flat, S)
    calls = {"nuclear": lambda k: attention_svm_nuclear(data.X[k % S], data.z[k % S], flat[k], solver=cfg.svm_solver),
             "l2": lambda k: attention_svm(data.X[k % S], data.z[k % S], flat[k], 2.0, solver=cfg.svm_solver)}
    arrays: dict[str, np.ndarray] = {}
    with progress_bar(2 * R * S, "kq nuclear / l_2 AttSVM", "problem", position, progress) as bar:
        for name, call in calls.items():
            sol = solve_each(R * S, call, (cfg.d, cfg.d), key=key, on_done=lambda: bar.update(1))
            arrays[f"svm_{name}"] = sol.W.reshape(R, S, cfg.d, cfg.d)
            arrays[f"status_{name}"] = sol.status.reshape(R, S)
            arrays[f"reason_{name}"] = sol.reason.reshape(R, S)
    return arrays, {"unique_problems": len({key(k) for k in range(R * S)})}


def _run(folder: RunFolder) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Every p's training, the shared SVMs and the comparison: the summary entries and arrays of :func:`run_kq`."""
    cfg = folder.cfg
    res = folder.per_p("kq", kq_piece)
    tags = list(res)
    forms = ("KQ", "W")
    alphas = np.stack([res[t].arrays[f"alpha_{f}"] for t in tags for f in forms])  # (P * 2, S, n)
    shared = folder.piece("kq_svm", shared_svm_piece, alphas=alphas)
    sh = shared.arrays
    seeds = seed_list(cfg.first_seed, cfg.seeds)
    S = cfg.seeds
    run_names = []
    arrays: dict[str, np.ndarray] = {"ps": np.array(cfg.ps), "targets": np.array(TARGETS)}
    per_run: dict[str, Any] = {}
    for i, (t, p) in enumerate(zip(tags, cfg.ps)):
        a = res[t].arrays
        counts: dict[str, dict[str, int]] = {}
        failures = []
        for r, form in enumerate(forms):
            row, part = 2 * i + r, slice(r * S, (r + 1) * S)
            nuc, l2 = ((sh[f"svm_{k}"][row], sh[f"status_{k}"][row], sh[f"reason_{k}"][row]) for k in ("nuclear", "l2"))
            own = l2 if p == 2.0 else (a["svm_lp"][part], a["status_lp"][part], a["reason_lp"][part])
            targets = [nuc, own, l2]  # the order of TARGETS
            sols = np.stack([x[0] for x in targets])  # (targets, S, d, d)
            Wk = a[f"W_{form}"]
            for target, (_, st, why) in zip(TARGETS, targets):
                counts[f"{form}: {target}"] = status_counts(st)
                failures += [{"run": form, "target": target, "seed": seeds[s], "status": str(st[s]),
                              "reason": str(why[s])} for s in np.flatnonzero(why != "")]
            corr = np.stack([cosine_or_nan(Wk, sols[j][None]) for j in range(len(TARGETS))], axis=1)  # (G, 3, S)
            div = directional_divergence(sols[1][None], Wk, p, batch_dims=2)  # (G, S)
            run = f"{'K/Q' if form == 'KQ' else 'W'} form, l_{t}-MD"
            run_names.append(run)
            arrays[f"iterations_{run}"] = a["iterations"]
            arrays[f"corr_{run}"] = corr
            arrays[f"svm_{run}"] = sols
            arrays[f"final_W_{run}"] = Wk[-1]
            with np.errstate(all="ignore"):
                final_corr = np.nanmean(corr[-1], axis=-1)
                final_div = float(np.nanmean(div[-1]))
            per_run[run] = {
                "final_mean_cosine": {TARGETS[j]: float(final_corr[j]) for j in range(len(TARGETS))},
                "final_mean_divergence_to_lp_svm": final_div,
                "closest_target": TARGETS[int(np.nanargmax(final_corr))] if np.isfinite(final_corr).any() else None,
            }
        per_run[f"svm p={t}"] = {"status_counts": counts, "failures": failures, "seconds": res[t].meta["seconds"]}
    arrays["runs"] = np.array(run_names)
    return {"targets": list(TARGETS), "per_run": per_run, "shared_svm_seconds": shared.meta["seconds"]}, arrays


run_kq = experiment_runner("kq", _run, "the K/Q experiment")
