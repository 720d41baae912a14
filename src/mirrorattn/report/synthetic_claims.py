"""Claims checked on the synthetic experiments' saved summaries (``<root>/synthetic/<name>``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from mirrorattn.report.claims_base import Claim, claim_text, fmt, judge_rows, load_claim, rel, table, verdict

#: how much the divergence must shrink (last third / first third of the grid, or last / first R)
SHRINK = 0.5

Check = Callable[[Claim, dict[str, Any]], None]


def _figures(summary: dict[str, Any], folder: Path, root: Path) -> list[str]:
    names = summary.get("figures") or sorted(p.name for p in folder.glob("*.png"))
    out = []
    for f in names:
        p = Path(f) if Path(f).is_absolute() else folder / Path(f).name
        if p.is_file():
            out.append(rel(p, root))
    return out


def _on_summary(root: Path, name: str, check: Check) -> Claim:
    """Claim ``name`` decided by ``check(claim, summary)`` on ``synthetic/<name>/summary.json``, with the
    experiment's figures; not run (with what to run) when the summary is missing."""
    folder = root / "synthetic" / name
    c, s = load_claim(claim_text(name, shrink=SHRINK), folder / "summary.json")
    if s is not None:
        check(c, s)
        c.figures = _figures(s, folder, root)
    return c


def _p(p: float) -> str:
    return f"{float(p):g}"


def _thirds(r: dict[str, Any], what: str) -> str:
    """'first → last' of the mean divergence of ``what`` over the first and last third of the grid."""
    return f"{fmt(r[f'mean_divergence_{what}_first_third'])} → {fmt(r[f'mean_divergence_{what}_last_third'])}"


def _local(c: Claim, s: dict[str, Any]) -> None:
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


def local_claim(root: Path) -> Claim:
    """Each l_p-AttGD path converges in direction to its own l_p-AttSVM solution (``synthetic/local``)."""
    return _on_summary(root, "local", _local)


def _joint(c: Claim, s: dict[str, Any]) -> None:
    checked = []
    for key, r in s["per_p"].items():
        ok = (r["final_max_softmax_prob"] > 0.99
              and r["mean_divergence_W_last_third"] <= SHRINK * r["mean_divergence_W_first_third"]
              and r["mean_divergence_v_last_third"] <= SHRINK * r["mean_divergence_v_first_third"])
        checked.append(([key.replace("p", "p = ", 1), fmt(r["final_max_softmax_prob"], 4),
                         fmt(r["final_logistic_prob"], 4), _thirds(r, "W"), _thirds(r, "v")], ok))
    c.numbers = {k: {kk: v for kk, v in r.items() if not isinstance(v, list)} for k, r in s["per_p"].items()}
    judge_rows(c, ["p", "max softmax prob", "logistic prob", "W divergence (first → last third)",
                   "v divergence (first → last third)"], checked)


def joint_claim(root: Path) -> Claim:
    """Joint l_p-MD on (W, v) converges to both max-margin directions, attention sparse (``synthetic/joint``)."""
    return _on_summary(root, "joint", _joint)


def _regpath(c: Claim, s: dict[str, Any]) -> None:
    checked = []
    for key, r in s["per_p"].items():
        ok = r["last_radius_mean_divergence"] <= SHRINK * r["first_radius_mean_divergence"]
        checked.append(([key.replace("p", "p = ", 1), fmt(r["first_radius_mean_divergence"]),
                         fmt(r["last_radius_mean_divergence"]),
                         fmt(r.get("share_seeds_selecting_global_tokens_at_largest_radius")),
                         r.get("unconverged_solves", "-")], ok))
    radii = s.get("radii") or [None]
    c.numbers = {k: {"first": r["first_radius_mean_divergence"], "last": r["last_radius_mean_divergence"]}
                 for k, r in s["per_p"].items()}
    judge_rows(c, [f"p (R from {fmt(radii[0])} to {fmt(radii[-1])})", "mean divergence at smallest R",
                   "at largest R", "share of seeds on global tokens", "unconverged solves"], checked)
    c.body.append("")
    c.body.append("The constrained problem is non-convex: a seed can settle on non-global tokens, which keeps the "
                  "mean above the median (the figure shows both).")


def regpath_claim(root: Path) -> Claim:
    """The l_p regularisation path converges in direction to the l_p-AttSVM solution (``synthetic/regpath``)."""
    return _on_summary(root, "regpath", _regpath)


def _kq(c: Claim, s: dict[str, Any]) -> None:
    checked = []
    nuc, own = "nuclear-norm AttSVM", "l_p-AttSVM (run's p)"
    for name, r in s["per_run"].items():
        cos = r.get("final_mean_cosine")
        if not cos:
            continue
        ok = (cos[nuc] > cos[own]) if name.startswith("K/Q") else (cos[own] > cos[nuc])
        checked.append(([name, fmt(cos[nuc]), fmt(cos[own]), r.get("closest_target", "-")], ok))
    c.numbers = {name: r.get("final_mean_cosine") for name, r in s["per_run"].items() if r.get("final_mean_cosine")}
    judge_rows(c, ["run", "cosine to nuclear-norm SVM", "cosine to l_p-AttSVM", "closest"], checked)


def kq_claim(root: Path) -> Claim:
    """K/Q training follows the nuclear-norm AttSVM, W training its l_p-AttSVM (``synthetic/kq``)."""
    return _on_summary(root, "kq", _kq)


SYNTHETIC_CLAIMS = (local_claim, joint_claim, regpath_claim, kq_claim)

__all__ = ["SHRINK", "SYNTHETIC_CLAIMS", "joint_claim", "kq_claim", "local_claim", "regpath_claim"]
