"""Claims checked on the synthetic experiments' saved summaries (``<root>/synthetic/<name>``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mirrorattn.io import read_json
from mirrorattn.report.claims_base import Claim, fmt, rel, table, verdict

#: how much the divergence must shrink (last third / first third of the grid, or last / first R)
SHRINK = 0.5


def _summary(root: Path, name: str) -> tuple[dict[str, Any] | None, Path]:
    folder = root / "synthetic" / name
    path = folder / "summary.json"
    return (read_json(path) if path.is_file() else None), folder


def _figures(summary: dict[str, Any], folder: Path, root: Path) -> list[str]:
    names = summary.get("figures") or sorted(p.name for p in folder.glob("*.png"))
    out = []
    for f in names:
        p = Path(f) if Path(f).is_absolute() else folder / Path(f).name
        if p.is_file():
            out.append(rel(p, root))
    return out


def _p(p: float) -> str:
    return f"{float(p):g}"


def local_claim(root: Path) -> Claim:
    c = Claim(
        key="local",
        title="l_p-AttGD converges in direction to its own l_p-AttSVM solution",
        paper="Each l_p path approaches the l_p-AttSVM direction of its own p and stays away from the other p' "
        "(main figure; qualitative, no numbers published).",
        rule=f"reproduced if, for every path p, its own p' has the smallest final mean directional Bregman divergence "
        f"in its row of the 3x3 matrix, and its own-p divergence averaged over the last third of the iteration grid "
        f"is at most {SHRINK:g} x that over the first third.",
    )
    s, folder = _summary(root, "local")
    if s is None:
        c.note = "run `mirrorattn synthetic local` (or `mirrorattn reproduce`)"
        return c
    ps = [float(p) for p in s["ps"]]
    m = s["final_mean_divergence"]
    first, last = s["mean_divergence_first_third"], s["mean_divergence_last_third"]
    k = len(ps)
    diag_min = [min(range(k), key=lambda j, i=i: m[i][j]) == i for i in range(k)]
    shrinks = [last[i][i] <= SHRINK * first[i][i] for i in range(k)]
    c.verdict = verdict(all(diag_min) and all(shrinks))
    c.numbers = {"ps": ps, "final_mean_divergence": m, "diagonal_smallest": diag_min, "diagonal_shrinks": shrinks,
                 "share_globally_optimal_alpha": s.get("share_globally_optimal_alpha"),
                 "share_locally_optimal_alpha": s.get("share_locally_optimal_alpha")}
    seeds = s.get("seeds_in_mean")
    c.body.append("Final mean directional Bregman divergence (path's p) between the l_p'-AttSVM direction and the "
                  "iterate's direction; rows are the path's p, columns the SVM's p' (smallest per row in bold).")
    c.body.append("")
    rows = []
    for i, p in enumerate(ps):
        cells = [(f"**{fmt(m[i][j])}**" if j == min(range(k), key=lambda jj: m[i][jj]) else fmt(m[i][j]))
                 for j in range(k)]
        rows.append([f"l_{_p(p)}-MD", *cells, f"{fmt(first[i][i])} → {fmt(last[i][i])}"])
    c.body += table(["path \\ SVM", *[f"l_{_p(p)}-AttSVM" for p in ps], "own-p divergence, first → last third"], rows)
    c.body.append("")
    g, loc = s.get("share_globally_optimal_alpha") or {}, s.get("share_locally_optimal_alpha") or {}
    if g or loc:
        c.body.append("Selected tokens: share of seeds whose alpha is globally / locally optimal: " + "; ".join(
            f"p = {_p(p)}: {fmt(g.get(f'p{_p(p)}'))} / {fmt(loc.get(f'p{_p(p)}'))}" for p in ps) + ".")
    if seeds:
        c.body.append(f"Seeds in each mean (solver failures are excluded and listed in the summary): {seeds}.")
    if s.get("svm_failures"):
        c.body.append(f"SVM solves that failed: {len(s['svm_failures'])} (see `synthetic/local/summary.json`).")
    c.figures = _figures(s, folder, root)
    return c


def joint_claim(root: Path) -> Claim:
    c = Claim(
        key="joint",
        title="Joint l_p-MD on (W, v) converges to the l_p-AttSVM and l_p-SVM directions; attention becomes sparse",
        paper="On the fixed 2-sample data set, the softmax max probability tends to 1 and W, v align with the "
        "l_p-AttSVM and l_p-SVM directions (figure; no numbers published).",
        rule=f"reproduced if, for every p, the final max softmax probability exceeds 0.99 and the directional "
        f"divergences of both W and v over the last third of the grid are at most {SHRINK:g} x those over the first.",
    )
    s, folder = _summary(root, "joint")
    if s is None:
        c.note = "run `mirrorattn synthetic joint`"
        return c
    rows, oks = [], []
    for key, r in s["per_p"].items():
        ok = (r["final_max_softmax_prob"] > 0.99
              and r["mean_divergence_W_last_third"] <= SHRINK * r["mean_divergence_W_first_third"]
              and r["mean_divergence_v_last_third"] <= SHRINK * r["mean_divergence_v_first_third"])
        oks.append(ok)
        rows.append([key.replace("p", "p = ", 1), fmt(r["final_max_softmax_prob"], 4), fmt(r["final_logistic_prob"], 4),
                     f"{fmt(r['mean_divergence_W_first_third'])} → {fmt(r['mean_divergence_W_last_third'])}",
                     f"{fmt(r['mean_divergence_v_first_third'])} → {fmt(r['mean_divergence_v_last_third'])}",
                     "yes" if ok else "no"])
    c.verdict = verdict(bool(oks) and all(oks))
    c.numbers = {k: {kk: v for kk, v in r.items() if not isinstance(v, list)} for k, r in s["per_p"].items()}
    c.body += table(["p", "max softmax prob", "logistic prob", "W divergence (first → last third)",
                     "v divergence (first → last third)", "passes"], rows)
    c.figures = _figures(s, folder, root)
    return c


def regpath_claim(root: Path) -> Claim:
    c = Claim(
        key="regpath",
        title="The l_p regularisation path converges in direction to the l_p-AttSVM solution",
        paper="argmin of L over ||W||_p <= R, divided by R, tends to the globally optimal l_p-AttSVM direction as R "
        "grows (theorem; no numbers published).",
        rule=f"reproduced if, for every p, the mean directional divergence at the largest R is at most {SHRINK:g} x "
        "that at the smallest R.",
    )
    s, folder = _summary(root, "regpath")
    if s is None:
        c.note = "run `mirrorattn synthetic regpath`"
        return c
    rows, oks = [], []
    for key, r in s["per_p"].items():
        ok = r["last_radius_mean_divergence"] <= SHRINK * r["first_radius_mean_divergence"]
        oks.append(ok)
        rows.append([key.replace("p", "p = ", 1), fmt(r["first_radius_mean_divergence"]),
                     fmt(r["last_radius_mean_divergence"]),
                     fmt(r.get("share_seeds_selecting_global_tokens_at_largest_radius")),
                     r.get("unconverged_solves", "-"), "yes" if ok else "no"])
    radii = s.get("radii") or [None]
    c.verdict = verdict(bool(oks) and all(oks))
    c.numbers = {k: {"first": r["first_radius_mean_divergence"], "last": r["last_radius_mean_divergence"]}
                 for k, r in s["per_p"].items()}
    c.body += table([f"p (R from {fmt(radii[0])} to {fmt(radii[-1])})", "mean divergence at smallest R",
                     "at largest R", "share of seeds on global tokens", "unconverged solves", "passes"], rows)
    c.body.append("")
    c.body.append("The constrained problem is non-convex: a seed can settle on non-global tokens, which keeps the "
                  "mean above the median (the figure shows both).")
    c.figures = _figures(s, folder, root)
    return c


def kq_claim(root: Path) -> Claim:
    c = Claim(
        key="kq",
        title="The K/Q parameterisation W = K Q^T follows the nuclear-norm AttSVM, the W form its l_p-AttSVM",
        paper="The K/Q form's counterpart of l_p-AttSVM minimises the nuclear norm of W (predecessor papers).",
        rule="reproduced if, for every p, the K/Q form's final direction has a higher cosine with the nuclear-norm "
        "AttSVM than with the l_p-AttSVM, and the W form's has a higher cosine with the l_p-AttSVM than with the "
        "nuclear-norm one.",
    )
    s, folder = _summary(root, "kq")
    if s is None:
        c.note = "run `mirrorattn synthetic kq`"
        return c
    rows, oks = [], []
    nuc, own = "nuclear-norm AttSVM", "l_p-AttSVM (run's p)"
    for name, r in s["per_run"].items():
        cos = r.get("final_mean_cosine")
        if not cos:
            continue
        kq = name.startswith("K/Q")
        ok = (cos[nuc] > cos[own]) if kq else (cos[own] > cos[nuc])
        oks.append(ok)
        rows.append([name, fmt(cos[nuc]), fmt(cos[own]), r.get("closest_target", "-"), "yes" if ok else "no"])
    c.verdict = verdict(bool(oks) and all(oks))
    c.numbers = {name: r.get("final_mean_cosine") for name, r in s["per_run"].items() if r.get("final_mean_cosine")}
    c.body += table(["run", "cosine to nuclear-norm SVM", "cosine to l_p-AttSVM", "closest", "passes"], rows)
    c.figures = _figures(s, folder, root)
    return c


SYNTHETIC_CLAIMS = (local_claim, joint_claim, regpath_claim, kq_claim)

__all__ = ["SYNTHETIC_CLAIMS", "joint_claim", "kq_claim", "local_claim", "regpath_claim"]
