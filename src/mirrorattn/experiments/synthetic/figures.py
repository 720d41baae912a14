"""Figures of the synthetic experiments, drawn from the saved arrays (never from a live run).

Each ``*_figures(out, cfg, arrays)`` writes PNGs into the run folder ``out`` and returns their
file names. The Agg backend is used; nothing is shown on screen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import LogLocator, NullFormatter  # noqa: E402

from mirrorattn.experiments.synthetic.common import quantile_band  # noqa: E402
from mirrorattn.io import save_figure  # noqa: E402
from mirrorattn.mirror import lp_norm  # noqa: E402

__all__ = ["joint_figures", "kq_figures", "local_figures", "regpath_figures"]

_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]


def _log_axes(ax: Any, x: bool, y: bool) -> None:
    """Log scale on the chosen axes, with unlabelled minor ticks (and grid lines) at 2 and 5 x 10^k
    only: matplotlib's default eight minor ticks per decade cost a quarter of the drawing time."""
    for on, axis, scale in ((x, ax.xaxis, ax.set_xscale), (y, ax.yaxis, ax.set_yscale)):
        if on:
            scale("log")
            axis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
            axis.set_minor_formatter(NullFormatter())


def _unit(W: np.ndarray, p: float) -> np.ndarray:
    n = lp_norm(W, p)
    return W / n if n > 0 else W * np.nan


def _two_entries(W: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The two entries of largest magnitude (flat order), as index tuples."""
    flat = np.argsort(-np.abs(W).ravel())[:2]
    return tuple(int(i) for i in np.unravel_index(flat[0], W.shape)), tuple(
        int(i) for i in np.unravel_index(flat[1], W.shape))


def _path_panel(
    ax: Any, traj: np.ndarray, ref: np.ndarray, p: float, name: str, label: str,
    stars: list[tuple[np.ndarray, str, str]],
) -> None:
    """Draw the path of two entries of traj_k / ||traj_k||_p (the two largest entries of ``ref``), a
    star at each (solution, label, colour) direction of ``stars`` (skipped when not finite), axis
    labels (``name`` is the tensor's name, W or v), grid and legend.

    ``traj`` (G, ...) holds the iterates; zero iterates (no direction) are left out.
    """
    e1, e2 = _two_entries(ref)
    keep = lp_norm(traj.reshape(len(traj), -1), p, batch_dims=1) > 0
    path = np.array([_unit(w, p) for w in traj[keep]])
    ax.plot(path[(slice(None),) + e1], path[(slice(None),) + e2], "-", color="k", lw=1.5, label=label)
    ax.plot(path[(-1,) + e1], path[(-1,) + e2], "o", color="k", ms=5)
    for sol, star, color in stars:
        if np.all(np.isfinite(sol)):
            u = _unit(sol, p)
            ax.plot(u[e1], u[e2], "*", ms=14, color=color, label=star)
    for entry, set_label in ((e1, ax.set_xlabel), (e2, ax.set_ylabel)):
        set_label(f"entry {name}[{','.join(map(str, entry))}] of ${name}/\\|{name}\\|_{{{p:g}}}$")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def local_figures(out: Path, cfg: Any, arrays: dict[str, np.ndarray]) -> list[str]:
    """The P x P panel of divergence vs iteration and the 2-D path of the W_0 = 0 run."""
    ps = [float(p) for p in arrays["ps"]]
    P = len(ps)
    S = cfg.seeds
    names = []
    fig, axes = plt.subplots(P, P, figsize=(3.6 * P, 2.9 * P), squeeze=False, sharey="row")
    for i, p in enumerate(ps):
        t = f"{p:g}"
        its = arrays[f"iterations_p{t}"]
        div = arrays[f"divergence_p{t}"]  # (G, P', B)
        x = np.where(its == 0, 0.7, its)  # iteration 0 drawn at 0.7 on the log axis
        for j, pj in enumerate(ps):
            ax = axes[i, j]
            mean, lo, hi = quantile_band(div[:, j, :S], axis=-1)
            c = _COLORS[j % len(_COLORS)]
            ax.fill_between(x, lo, hi, color=c, alpha=0.25, lw=0, label="10-90 % of seeds")
            ax.plot(x, mean, color=c, lw=2, label=f"mean over {S} seeds")
            if cfg.zero_init_run:
                ax.plot(x, div[:, j, -1], color="k", lw=1, ls="--", label="$W_0 = 0$ run")
            _log_axes(ax, x=True, y=True)
            ax.grid(True, which="both", alpha=0.3)
            own = " (own p)" if i == j else ""
            ax.set_title(f"$\\ell_{{{p:g}}}$-MD path vs $\\ell_{{{pj:g}}}$-AttSVM{own}", fontsize=10,
                         fontweight="bold" if i == j else "normal")
            if i == P - 1:
                ax.set_xlabel("iteration k")
            if j == 0:
                ax.set_ylabel(f"directional Bregman div.\n$D_{{\\psi_{{{p:g}}}}}$ (dimensionless)")
            if i == 0 and j == P - 1:
                ax.legend(fontsize=8, loc="lower left")
    fig.suptitle(
        f"Local convergence: $D_\\psi(W_{{mm}}/\\|W_{{mm}}\\|_p,\\ W_k/\\|W_k\\|_p)$ with the path's p, "
        f"n={cfg.n}, T={cfg.T}, d={cfg.d}, $\\eta$={cfg.eta:g}",
        fontsize=12,
    )
    fig.tight_layout()
    save_figure(fig, out / "local_divergence.png")
    names.append("local_divergence.png")

    if cfg.zero_init_run:
        fig, axes = plt.subplots(1, P, figsize=(4.2 * P, 4.0), squeeze=False)
        for i, p in enumerate(ps):
            t = f"{p:g}"
            ax = axes[0, i]
            Wk = arrays[f"zero_init_W_p{t}"]  # (G, d, d)
            own = arrays[f"svm_W_p{t}"][i, -1]
            if not np.all(np.isfinite(own)):
                ax.set_title(f"$\\ell_{{{p:g}}}$: SVM failed for this run")
                continue
            _path_panel(ax, Wk, own, p, "W", "$W_k/\\|W_k\\|_p$ ($W_0=0$)", [
                (arrays[f"svm_W_p{pj:g}"][i, -1], f"$\\ell_{{{pj:g}}}$-AttSVM direction", _COLORS[j % len(_COLORS)])
                for j, pj in enumerate(ps)])
            ax.set_title(f"$\\ell_{{{p:g}}}$-MD from $W_0=0$ ({int(arrays[f'iterations_p{t}'][-1])} it.)")
        fig.suptitle("Path of two entries of the normalised W (the entries largest in the own-p SVM solution)")
        fig.tight_layout()
        save_figure(fig, out / "local_path.png")
        names.append("local_path.png")
    return names


def joint_figures(out: Path, cfg: Any, arrays: dict[str, np.ndarray]) -> list[str]:
    """Softmax / logistic probabilities, divergences and 2-D paths of W and v, one column per p."""
    ps = [float(p) for p in arrays["ps"]]
    P = len(ps)
    fig, axes = plt.subplots(4, P, figsize=(4.2 * P, 13), squeeze=False)
    for i, p in enumerate(ps):
        t = f"{p:g}"
        its = arrays[f"iterations_p{t}"]
        x = np.where(its == 0, 0.7, its)
        ax = axes[0, i]
        ax.plot(x, arrays[f"max_prob_p{t}"], label="mean max softmax prob.")
        ax.plot(x, arrays[f"logistic_prob_p{t}"], label="mean logistic prob. $\\sigma(y x_{\\alpha}^T v)$")
        _log_axes(ax, x=True, y=False)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("iteration k")
        ax.set_ylabel("probability")
        ax.set_title(f"joint $\\ell_{{{p:g}}}$-MD on (W, v)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        ax = axes[1, i]
        ax.plot(x, arrays[f"div_W_p{t}"], label="W vs $\\ell_p$-AttSVM")
        ax.plot(x, arrays[f"div_v_p{t}"], label="v vs $\\ell_p$-SVM")
        _log_axes(ax, x=True, y=True)
        ax.set_xlabel("iteration k")
        ax.set_ylabel(f"directional Bregman div. ($p={p:g}$)")
        ax.set_title("distance in direction to the SVM solutions")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        for row, name, svm_name, label in ((2, "W", "svm_W", "W"), (3, "v", "svm_v", "v")):
            ax = axes[row, i]
            traj = arrays[f"{name}_p{t}"]  # (G, ...)
            sol = arrays[f"{svm_name}_p{t}"]
            if not np.all(np.isfinite(sol)):
                ax.set_title(f"{label}: SVM failed")
                continue
            _path_panel(ax, traj, sol, p, label, f"${label}_k/\\|{label}_k\\|_p$",
                        [(sol, f"$\\ell_{{{p:g}}}$-SVM direction", "tab:red")])
            ax.set_title(f"path of {label} (two largest SVM entries)")
    fig.suptitle("Joint training of (W, v) from $W_0=0, v_0=0$ (paper 5.2 data, n=2, T=3, d=2)")
    fig.tight_layout(rect=(0, 0, 1, 0.985))  # room for the suptitle above the column titles
    save_figure(fig, out / "joint.png")
    return ["joint.png"]


def regpath_figures(out: Path, cfg: Any, arrays: dict[str, np.ndarray]) -> list[str]:
    """Directional divergence of W_R / R to the global l_p-AttSVM direction against R."""
    ps = [float(p) for p in arrays["ps"]]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    R = arrays["radii"]
    for i, p in enumerate(ps):
        div = arrays[f"divergence_p{p:g}"]  # (R, S)
        mean, lo, hi = quantile_band(div, axis=-1)
        c = _COLORS[i % len(_COLORS)]
        ax.fill_between(R, lo, hi, color=c, alpha=0.2, lw=0)
        ax.plot(R, mean, "o-", color=c, ms=3, label=f"p = {p:g} (mean, 10-90 % band)")
        ax.plot(R, np.nanmedian(div, axis=-1), "--", color=c, lw=1, label=f"p = {p:g} (median)")
    _log_axes(ax, x=True, y=True)
    ax.set_xlabel("radius R of the constraint $\\|W\\|_p \\leq R$")
    ax.set_ylabel("$D_\\psi(W_R/R,\\ W_{mm}/\\|W_{mm}\\|_p)$")
    ax.set_title(f"Regularisation path vs global $\\ell_p$-AttSVM (n={cfg.n}, T={cfg.T}, d={cfg.d}, "
                 f"{cfg.seeds} seeds)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / "regpath.png")
    return ["regpath.png"]


def kq_figures(out: Path, cfg: Any, arrays: dict[str, np.ndarray]) -> list[str]:
    """Cosine correlation of the learned W (K Q^T or W form) with the SVM solutions vs iteration."""
    runs = [str(r) for r in arrays["runs"]]
    targets = [str(t) for t in arrays["targets"]]
    fig, axes = plt.subplots(1, len(targets), figsize=(4.6 * len(targets), 4.2), squeeze=False, sharey=True)
    for j, tname in enumerate(targets):
        ax = axes[0, j]
        for r, run in enumerate(runs):
            its = arrays[f"iterations_{run}"]
            x = np.where(its == 0, 0.7, its)
            corr = arrays[f"corr_{run}"][:, j, :]  # (G, S)
            mean, lo, hi = quantile_band(corr, axis=-1)
            c = _COLORS[r % len(_COLORS)]
            ax.fill_between(x, lo, hi, color=c, alpha=0.2, lw=0)
            ax.plot(x, mean, color=c, lw=2, label=run)
        _log_axes(ax, x=True, y=False)
        ax.set_xlabel("iteration k")
        ax.set_title(f"vs {tname}")
        ax.grid(True, which="both", alpha=0.3)
        if j == 0:
            ax.set_ylabel("cosine correlation $\\langle W, W_{mm}\\rangle / (\\|W\\|_F \\|W_{mm}\\|_F)$")
            ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"K/Q form $W = KQ^T$ against the W form (mean and 10-90 % band over {cfg.seeds} seeds)")
    fig.tight_layout()
    save_figure(fig, out / "kq.png")
    return ["kq.png"]
