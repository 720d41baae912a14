"""Token selection of a whole comparison (issue 15, item 4), made from its runs' saved ``token_selection.json``
(``mirrorattn analyse``), never from a live model.

:func:`write_comparison` writes into the comparison folder:

* ``token_selection.json`` - :func:`summarize`: per optimizer the optimal-token share (and per seed), its chance
  level and the attention mass on the optimal token over seeds ({"mean", "std" (ddof 1), "min", "max", "n"}), the
  mass by score rank (mean over seeds), and, where the runs have a trend (``--trend``), the trend over seeds;
* ``token_selection.md`` - the table: optimizer x (share mean ± std, chance, divergence to its own-p W_mm at
  the first and the last snapshot, cosine at the last), then the divergence to every W_mm at the last snapshot;
* ``selection_share.png`` - the optimal-token share per optimizer: bar = mean over seeds, error bar = the seeds'
  min-max, dots = the seeds, dashed line = chance;
* ``selection_mass.png`` - the attention mass on the token of each score rank (1 = optimal), one line per
  optimizer (mean over seeds);
* ``selection_trend.png`` (runs with a trend and AttSVM targets) - the directional Bregman divergence to each
  W_mm over training, one panel per p, one line per optimizer (mean over heads, then over the seeds having a
  snapshot at that epoch; a seed stopped early by the stopping rule leaves the later epochs to the others).

"Own p": the AttSVM the theory names for an optimizer (:func:`own_p`): p for ``lp-md:p``, 2 for ``sgd``; none for
Adam. Each run's W_mm is the AttSVM of its own last snapshot (:mod:`mirrorattn.experiments.selection_trend`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["COMPARISON_JSON", "COMPARISON_MD", "MASS_PNG", "SHARE_PNG", "TREND_PNG", "markdown", "own_p", "stats",
           "summarize", "write_comparison"]

COMPARISON_JSON, COMPARISON_MD = "token_selection.json", "token_selection.md"
SHARE_PNG, MASS_PNG, TREND_PNG = "selection_share.png", "selection_mass.png", "selection_trend.png"


def own_p(optimizer: str) -> str | None:
    """The p (as a key, "1.1", "2" ...) of the AttSVM the theory names for ``optimizer``: ``lp-md:p`` -> p,
    ``sgd`` -> 2 (gradient descent); None for the others (Adam ...)."""
    if optimizer == "sgd":
        return "2"
    if optimizer.startswith("lp-md:"):
        try:
            return f"{float(optimizer.split(':', 1)[1]):g}"
        except ValueError:
            return None
    return None


def stats(values: Any) -> dict[str, Any] | None:
    """{"mean", "std" (ddof 1; 0 for one value), "min", "max", "n"} of the finite ``values``; None if none."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return None
    return {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
            "min": min(v), "max": max(v), "n": len(v)}


def _per_epoch(series: list[tuple[list[int], list[float]]], epochs: list[int]) -> dict[str, list[Any]]:
    """Mean, std and count over the seeds at each of ``epochs`` of per-seed (epochs, values) series."""
    at: dict[int, list[float]] = {e: [] for e in epochs}
    for es, vs in series:
        for e, v in zip(es, vs):
            at[e].append(v)
    rows = [stats(at[e]) for e in epochs]
    return {k: [None if r is None else r[k] for r in rows] for k in ("mean", "std", "n")}


def _trend_summary(trends: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The trends of one optimizer's seeds: per epoch (the union of their snapshot epochs) the mean over seeds,
    and the per-seed first and last snapshot's values over seeds; the heads are averaged first."""
    if not trends:
        return None
    epochs = sorted({int(e) for t in trends for e in t["epochs"]})
    share = _per_epoch([(t["epochs"], t["optimal_token_share"]) for t in trends], epochs)
    out: dict[str, Any] = {"epochs": epochs, "seeds": len(trends), "optimal_token_share": share,
                           "p": {}, "first": {}, "last": {}}
    keys = sorted({k for t in trends for h in t.get("heads", []) for k in h["p"]}, key=float)
    for key in keys:
        out["p"][key], out["first"][key], out["last"][key] = {}, {}, {}
        for what in ("directional_bregman", "cosine"):
            series = [(t["epochs"], np.mean([h["p"][key][what] for h in t["heads"]], axis=0).tolist())
                      for t in trends if t.get("heads") and key in t["heads"][0]["p"]]
            out["p"][key][what] = _per_epoch(series, epochs)
            out["first"][key][what] = stats(s[1][0] for s in series)
            out["last"][key][what] = stats(s[1][-1] for s in series)
        out["p"][key]["n_dropped"] = sum(h["p"][key].get("n_dropped", 0) for t in trends for h in t.get("heads", [])
                                         if key in h["p"])
    return out


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per optimizer (in the order of ``records``) the token selection over its seeds.

    ``records``: one per run, {"optimizer", "seed", "run" (its name), "result" (its ``token_selection.json``)}.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(r["optimizer"], []).append(r)
    out: dict[str, Any] = {}
    for opt, rs in groups.items():
        ts = [r["result"]["token_selection"] for r in rs]
        ranks = max(len(t["mass_by_score_rank"]) for t in ts)
        by_rank = [stats(t["mass_by_score_rank"][i] for t in ts if i < len(t["mass_by_score_rank"]))
                   for i in range(ranks)]
        out[opt] = {
            "own_p": own_p(opt), "seeds": [r["seed"] for r in rs], "runs": [r["run"] for r in rs],
            **{k: stats(t[k] for t in ts) for k in ("optimal_token_share", "chance_share", "optimal_token_mass",
                                                    "attended_token_rank")},
            "optimal_token_share_by_seed": [t["optimal_token_share"] for t in ts],
            "mass_by_score_rank": [None if s is None else s["mean"] for s in by_rank],
            "trend": _trend_summary([r["result"]["trend"] for r in rs if r["result"].get("trend")]),
        }
    ps = sorted({k for row in out.values() if row["trend"] for k in row["trend"]["p"]}, key=float)
    return {"optimizers": out, "ps": ps, "trend": any(row["trend"] for row in out.values()),
            "target": "per run and head: the l_p-AttSVM of its last snapshot's states and attention argmax"}


def _fmt(x: Any, digits: int = 3) -> str:
    """A number for a table: scientific below 1e-2, fixed otherwise; '-' when missing."""
    if x is None or not math.isfinite(float(x)):
        return "-"
    f = float(x)
    return f"{f:.{digits - 1}e}" if f != 0 and abs(f) < 1e-2 else f"{f:.{digits}f}"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(str(c) for c in r) + " |" for r in rows)]


def _pm(s: dict[str, Any] | None, digits: int = 3) -> str:
    return "-" if s is None else f"{_fmt(s['mean'], digits)} ± {_fmt(s['std'], digits)}"


def _get(row: dict[str, Any], when: str, key: str | None, what: str) -> dict[str, Any] | None:
    trend = row.get("trend") or {}
    return ((trend.get(when) or {}).get(key) or {}).get(what) if key else None


def markdown(summary: dict[str, Any], title: str = "Token selection") -> str:
    """The comparison's token-selection tables (Markdown)."""
    opts = summary["optimizers"]
    rows = [[opt, len(row["seeds"]), _pm(row["optimal_token_share"]), _fmt((row["chance_share"] or {}).get("mean")),
             row["own_p"] or "-", _pm(_get(row, "first", row["own_p"], "directional_bregman")),
             _pm(_get(row, "last", row["own_p"], "directional_bregman")),
             _pm(_get(row, "last", row["own_p"], "cosine"))] for opt, row in opts.items()]
    lines = [f"# {title}", "", "Optimal-token share: share of the test sample whose mean-over-heads last-layer [CLS] "
             "attention argmax is the token of the largest model margin (best model). D: directional Bregman "
             "divergence D_psi(W_mm, W_h) (l_p), mean over heads; W_mm = " + summary["target"] + ". "
             "Mean ± std over seeds.", ""]
    lines += _table(["optimizer", "seeds", "optimal-token share", "chance", "own p", "D own (first snapshot)",
                    "D own (last)", "cosine own (last)"], rows)
    if summary["ps"]:
        lines += ["", "Divergence to each W_mm at the last snapshot (mean ± std over seeds):", ""]
        lines += _table(["optimizer", *(f"D to l_{p} W_mm" for p in summary["ps"])],
                       [[opt, *(_pm(_get(row, "last", p, "directional_bregman")) for p in summary["ps"])]
                        for opt, row in opts.items() if row["trend"]])
    return "\n".join(lines) + "\n"


def plot_share(summary: dict[str, Any], path: Path) -> Path:
    """Optimal-token share per optimizer: bars = mean over seeds, error bars = min-max, dots = seeds, chance."""
    import matplotlib.pyplot as plt

    from mirrorattn.io import save_figure

    opts = [(o, r) for o, r in summary["optimizers"].items() if r["optimal_token_share"]]
    fig, ax = plt.subplots(figsize=(1.2 * len(opts) + 2.5, 3.4))
    means = [r["optimal_token_share"]["mean"] for _, r in opts]
    err = [[m - r["optimal_token_share"]["min"] for m, (_, r) in zip(means, opts)],
           [r["optimal_token_share"]["max"] - m for m, (_, r) in zip(means, opts)]]
    x = np.arange(len(opts))
    ax.bar(x, means, yerr=err, capsize=4, color="tab:blue", alpha=0.8, label="mean over seeds (min-max)")
    for i, (_, r) in enumerate(opts):
        seeds = r["optimal_token_share_by_seed"]
        ax.scatter(np.full(len(seeds), i) + np.linspace(-0.15, 0.15, len(seeds)), seeds, s=12, color="black",
                   zorder=3, label="seeds" if i == 0 else None)
    chance = stats((r["chance_share"] or {}).get("mean") for _, r in opts)
    if chance:
        ax.axhline(chance["mean"], color="grey", ls="--", lw=1, label="chance")
    ax.set_xticks(x, [o for o, _ in opts])
    ax.set(ylabel="optimal-token share", ylim=(0, 1), title="last-layer [CLS] attention on the optimal token")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_mass(summary: dict[str, Any], path: Path) -> Path:
    """Attention mass on the token of score rank r (1 = optimal), one line per optimizer (mean over seeds)."""
    import matplotlib.pyplot as plt

    from mirrorattn.io import save_figure

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for opt, row in summary["optimizers"].items():
        pts = [(r + 1, m) for r, m in enumerate(row["mass_by_score_rank"]) if m is not None]
        ax.plot([r for r, _ in pts], [m for _, m in pts], marker="o", label=opt)
    ax.set(xlabel="score rank of the token (1 = optimal)", ylabel="attention mass (mean over heads, seeds)",
           title="attention mass by score rank")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_trend(summary: dict[str, Any], path: Path) -> Path:
    """Directional divergence to each W_mm over training: one panel per p, one line per optimizer (its own p
    drawn thick), epoch on a symlog axis (epoch 0 = the initial weights), log divergence."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    from mirrorattn.io import save_figure

    ps = summary["ps"]
    fig, axes = plt.subplots(1, len(ps), figsize=(4.2 * len(ps), 3.4), squeeze=False)
    for ax, key in zip(axes[0], ps):
        for opt, row in summary["optimizers"].items():
            tr = row["trend"]
            if not tr or key not in tr["p"]:
                continue
            pts = [(e, m) for e, m in zip(tr["epochs"], tr["p"][key]["directional_bregman"]["mean"])
                   if m is not None and m > 0]
            ax.plot([e for e, _ in pts], [m for _, m in pts], marker=".", label=opt,
                    lw=2.5 if row["own_p"] == key else 1.2)
        ax.set_xscale("symlog", linthresh=1)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_yscale("log")
        ax.set(xlabel="epoch", ylabel="directional Bregman divergence", title=f"to the l_{key}-AttSVM W_mm")
        ax.legend(fontsize=7)
    fig.suptitle("last layer's key-query matrices against the AttSVM of the final selection (mean over heads, "
                 "seeds)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def write_comparison(out: Path, records: list[dict[str, Any]], title: str = "Token selection") -> dict[str, Any]:
    """:func:`summarize` the runs' records and write the JSON, Markdown and figures into ``out``; returns the
    summary with "files" (the names written)."""
    from mirrorattn.io import write_json, write_text

    if not records:
        raise ValueError(f"{out}: no analysed runs to summarise (run `mirrorattn analyse` on the comparison first)")
    summary = summarize(records)
    out.mkdir(parents=True, exist_ok=True)
    files = [COMPARISON_JSON, COMPARISON_MD, SHARE_PNG, MASS_PNG]
    plot_share(summary, out / SHARE_PNG)
    plot_mass(summary, out / MASS_PNG)
    if summary["ps"]:
        plot_trend(summary, out / TREND_PNG)
        files.append(TREND_PNG)
    summary["files"] = files
    write_text(out / COMPARISON_MD, markdown(summary, title))
    write_json(out / COMPARISON_JSON, summary)
    return summary
