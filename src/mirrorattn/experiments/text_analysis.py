"""Analysis of trained text models, and the report (tables, figures) made from results on disk.

Per run (:func:`analyse_run`, the validation-best weights):

* attention sparsity of the [CLS] row of every layer on (a seeded subset of) the test split, over
  real tokens only: entropy (nats), entropy / log(number of real tokens), max probability, top-k
  mass; mean over samples and heads (:func:`mirrorattn.experiments.run_analysis.attention_sparsity`);
* weight sparsity of the Q, K, V projection weights of all layers: count and fraction of
  |w| > ``weight_threshold`` (0.06 as the paper) and the Hoyer sparsity
  (:func:`mirrorattn.experiments.run_analysis.weight_stats`), and their histograms (``qkv_hist.npz``);
* the attention-map probe (:func:`probe_attention`): the paper's measure on the hand-written
  sentences of ``mirrorattn/resources/probe_sentences.tsv``;
* token selection (:mod:`mirrorattn.experiments.token_selection`, ``token_selection``): how often the last
  layer's [CLS] attention picks the optimal token, on at most 500 of the same test samples.

Report (:func:`write_report`): ``results.md`` and figures, all drawn from files in the run folders.
"""

from __future__ import annotations

import csv
import re
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mirrorattn.experiments.classification import format_stat as _fmt
from mirrorattn.experiments.classification import reached_stop_rule, run_name
from mirrorattn.experiments.run_analysis import (
    HIST_EDGES,
    attention_sparsity,
    cls_scalars,
    plot_curves,
    plot_histograms,
    weight_stats,
)
from mirrorattn.experiments.token_selection import (
    TEXT_SAMPLES,
    sample_indices,
    selection_scalars,
    split_token_selection,
)
from mirrorattn.io import read_json, save_figure, write_json, write_npz, write_text
from mirrorattn.models.layers import record_attention

__all__ = [
    "analyse_run",
    "load_probe_sentences",
    "probe_attention",
    "write_report",
]



# -------------------------------------------------------------------------------------- probe
def load_probe_sentences(path: str | Path | None = None) -> list[dict[str, str]]:
    """The probe set: rows {"sentence", "word", "label"} from a TSV (default: the packaged one)."""
    if path is None:
        text = resources.files("mirrorattn.resources").joinpath("probe_sentences.tsv").read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    rows = list(csv.DictReader(text.splitlines(), delimiter="\t"))
    for r in rows:
        if not re.search(rf"\b{re.escape(r['word'])}\b", r["sentence"], flags=re.IGNORECASE):
            raise ValueError(f"probe word {r['word']!r} does not occur in {r['sentence']!r}")
    return rows


@torch.no_grad()
def probe_attention(model: nn.Module, tokenizer: Any, rows: list[dict[str, str]]) -> dict[str, Any]:
    """The paper's attention-map measure on the probe sentences.

    For every sentence: the last layer's [CLS]-row attention, mean over heads, restricted to the
    sentence's tokens ([CLS] itself excluded), min-max scaled to [0, 1] over those tokens; the
    designated word's score is the largest scaled value among its sub-word pieces (a word split
    into several pieces counts once, by its most attended piece). Returns ``score`` (mean over
    sentences), ``other`` (mean scaled value of all other tokens, the chance level), ``rank1``
    (fraction of sentences where the word is the most attended) and per-sentence ``items``.
    """
    model.eval()
    device = next(model.parameters()).device
    items = []
    limit = getattr(getattr(model, "config", None), "max_length", None)
    for r in rows:
        enc = tokenizer.encode(r["sentence"])
        if limit is not None and len(enc.ids) > int(limit):  # longer than the model takes: left out (see ``n``)
            continue
        ids = torch.tensor([enc.ids], device=device)
        mask = torch.ones_like(ids, dtype=torch.bool)
        with record_attention(model) as maps:
            model(ids, mask)
        att = maps[-1][0, :, 0, :].double().mean(0).cpu().numpy()[1:]  # tokens after [CLS]
        lo, hi = att.min(), att.max()
        scaled = (att - lo) / (hi - lo) if hi > lo else np.zeros_like(att)
        m = re.search(rf"\b{re.escape(r['word'])}\b", r["sentence"], flags=re.IGNORECASE)
        start, end = m.span()
        pieces = [t - 1 for t, (a, b) in enumerate(enc.offsets) if t > 0 and a < end and b > start]
        word_score = float(scaled[pieces].max())
        others = np.delete(scaled, pieces)
        items.append({
            "sentence": r["sentence"], "word": r["word"], "label": r.get("label"),
            "tokens": enc.tokens[1:], "scaled": scaled.tolist(), "pieces": pieces, "score": word_score,
            "other": float(others.mean()) if others.size else None, "rank1": bool(scaled[pieces].max() >= scaled.max()),
        })
    if not items:
        return {"score": None, "other": None, "rank1": None, "n": 0, "items": []}
    return {
        "score": float(np.mean([it["score"] for it in items])),
        "other": float(np.mean([it["other"] for it in items if it["other"] is not None])),
        "rank1": float(np.mean([it["rank1"] for it in items])),
        "n": len(items),
        "items": items,
    }


def analyse_run(model: nn.Module, prepared: Any, config: Any, out_dir: Path, write: bool = True) -> dict[str, Any]:
    """Attention sparsity (test subset), Q/K/V weight sparsity and histograms, and the probe, of one run.

    Writes ``analysis.json``, ``qkv_hist.npz`` and ``probe.json`` into ``out_dir`` (when ``write``).
    Returns {"attention": per-layer list, "weights": ..., "probe": {score, other, rank1, n},
    "scalars": flat numbers for the results table}.
    """
    test = prepared.data.test
    idx = sample_indices(len(test), int(config.analysis_samples))  # the seeded analysis sample of every run
    n = len(idx)
    ids, mask = test.inputs[0][idx], test.inputs[1][idx]
    attention = attention_sparsity(model, ids, mask, config.topk)
    weights, hists = weight_stats(model, config.weight_threshold)
    probe = probe_attention(model, prepared.tokenizer, load_probe_sentences())
    selection = split_token_selection(model, test, min(n, TEXT_SAMPLES))
    scalars = {
        **cls_scalars(attention, config.topk),
        **{f"{k}_count_above": weights[k]["count_above"] for k in ("q", "k", "v")},
        **{f"{k}_hoyer": weights[k]["hoyer"] for k in ("q", "k", "v")},
        "probe_score": probe["score"],
        "probe_other": probe["other"],
        "probe_rank1": probe["rank1"],
        **selection_scalars(selection),
    }
    result = {"attention": attention, "weights": weights, "analysis_samples": n,
              "probe": {k: v for k, v in probe.items() if k != "items"}, "token_selection": selection,
              "scalars": scalars}
    if write:
        write_json(out_dir / "analysis.json", result)
        write_json(out_dir / "probe.json", probe)
        write_npz(out_dir / "qkv_hist.npz", edges=HIST_EDGES, **hists)
    return result


# ------------------------------------------------------------------------------------- report
def write_report(out: Path, config: Any, results: dict[str, Any]) -> None:
    """``results.md`` (mean ± std over seeds beside the paper's numbers) and the figures."""
    from mirrorattn.paper import IMDB_ACCURACY

    agg = results["aggregate"]
    # the paper's model at our depth, else its main 3-block model; its GD is l_2-MD (= SGD without momentum)
    paper_blocks = int(config.blocks) if int(config.blocks) in IMDB_ACCURACY else 3
    paper = dict(IMDB_ACCURACY[paper_blocks]) if config.dataset == "imdb" else {}
    if "lp-md:2" in paper:
        paper.setdefault("sgd", paper["lp-md:2"])
    topk = f"cls_top{config.topk}_mass_last"
    lines = [
        f"# Text experiment: {config.dataset}",
        "",
        f"Model: {config.blocks} block(s), width {config.width}, {config.heads} heads, pooling {config.pooling}, "
        f"max length {config.max_length}; {config.seeds} seed(s); up to {config.epochs} epochs, batch "
        f"{config.batch_size}, {config.loss_reduction} BCE, md_scope {config.md_scope}.",
        f"Data: {results['data'].get('n_train')} train / {results['data'].get('n_val')} validation / "
        f"{results['data'].get('n_test')} test.",
        "",
        "Test accuracy (%) at the validation-best epoch (`test_acc`) and at the last epoch; mean ± std over seeds."
        " The paper's numbers choose the best epoch on the test set and share one initialisation"
        + (f"; they are for its {paper_blocks}-block model (width 384, length 512)" if paper else "") + ".",
        "",
        "| optimizer | lr | test acc (val-best) | test acc (last) | paper"
        + (f" ({paper_blocks} blocks) " if paper else " ") +
        "| val acc | epochs | samples/s "
        f"| [CLS] entropy, last layer (/ uniform's) | [CLS] max prob | top-{config.topk} mass | probe score (chance) "
        "| Q/K/V count > thr | Q/K/V Hoyer | Q/K move | optimal-token share (chance) | runs at the rule |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for opt, row in agg.items():
        counts = "/".join(
            f"{row[f'{k}_count_above']['mean']:.0f}" if row.get(f"{k}_count_above", {}).get("mean") is not None
            else "-" for k in ("q", "k", "v")
        )
        probe = f"{_fmt(row.get('probe_score'))} ({_fmt(row.get('probe_other'))})"
        lines.append(
            f"| {opt} | {row['lr']:g} | {_fmt(row['test_acc'], 100)} | {_fmt(row['test_acc_last'], 100)} "
            f"| {paper.get(opt, '-')} | {_fmt(row['val_acc_best'], 100)} | {_fmt(row['epochs_run'], 1, 1)} "
            f"| {_fmt(row['samples_per_second'], 1, 0)} | {_fmt(row.get('cls_entropy_last'))} "
            f"({_fmt(row.get('cls_entropy_norm_last'), 1, 4)}) "
            f"| {_fmt(row.get('cls_max_prob_last'))} | {_fmt(row.get(topk))} | {probe} | {counts} "
            f"| {'/'.join(_fmt(row.get(f'{k}_hoyer'), 1, 3) for k in 'qkv')} "
            f"| {'/'.join(_fmt(row.get(f'{k}_move'), 1, 2) for k in 'qk')} "
            f"| {_fmt(row.get('optimal_token_share'), 1, 3)} ({_fmt(row.get('optimal_token_chance'), 1, 3)}) "
            f"| {row.get('stop_rule_runs', 0)}/{len(results['runs'][opt])} |"
        )
    diverged = {opt: row.get("diverged_runs", 0) for opt, row in agg.items() if row.get("diverged_runs")}
    if diverged:
        lines += ["", "Diverged runs (loss NaN/inf; their validation-best completed epoch is reported, no last-epoch "
                  "figure): " + ", ".join(f"{opt} {n}/{len(results['runs'][opt])}" for opt, n in diverged.items())]
    if config.stop_train_acc is not None:
        lines += ["", _regime_lines(config, results)]
    lines += ["", "Figures: `curves.png`, `qkv_hist.png`, `attention_maps.png`.", ""]
    write_text(out / "results.md", "\n".join(lines))
    runs = {opt: [out / "runs" / run_name(opt, r["seed"]) for r in rs] for opt, rs in results["runs"].items()}
    plot_curves(runs, out / "curves.png")
    plot_histograms(runs, out / "qkv_hist.png")
    plot_attention_maps(runs, out / "attention_maps.png")


def _regime_lines(config: Any, results: dict[str, Any]) -> str:
    """How many runs reached the stopping rule (the others: their stop reason), beside the paper's epochs."""
    from mirrorattn.paper import IMDB_EPOCHS

    short = [f"{opt} seed {r['seed']} ({r.get('stop_reason')}, {r.get('epochs_run')} epochs)"
             for opt, rs in results["runs"].items() for r in rs
             if not reached_stop_rule(r)]
    n = sum(len(rs) for rs in results["runs"].values())
    paper = ", ".join(f"{opt} {e}" for opt, e in IMDB_EPOCHS[3].items())
    return (f"Stopping rule: {100 * config.stop_train_acc:.1f} % training accuracy, at most {config.epochs} epochs; "
            f"{n - len(short)} of {n} runs reached it" + (f"; not: {'; '.join(short)}" if short else "") +
            f". The paper's IMDb runs (3 blocks, width 384) took on average {paper} epochs. `Q/K move` is "
            "||W - W0||_F / ||W0||_F of the query / key weights from their initial values to the validation-best "
            "model.")


def plot_attention_maps(runs: dict[str, list[Path]], path: Path, sentences: int = 4) -> None:
    """Probe sentences coloured by their min-max scaled last-layer [CLS] attention (seed 0 of each optimizer)."""
    import matplotlib.pyplot as plt

    probes = {opt: read_json(d[0] / "probe.json") for opt, d in runs.items() if d and (d[0] / "probe.json").is_file()}
    if not probes:
        return
    first = next(iter(probes.values()))
    picks = list(range(0, len(first["items"]), max(1, len(first["items"]) // sentences)))[:sentences]
    fig, axes = plt.subplots(len(picks), 1, figsize=(12, 0.5 + 0.45 * len(probes) * len(picks)), squeeze=False)
    cmap = plt.get_cmap("Reds")
    for ax, s in zip(axes[:, 0], picks):
        for row, (opt, probe) in enumerate(probes.items()):
            it = probe["items"][s]
            x = 0.0
            ax.text(-0.01, -row, f"{opt} ({it['score']:.2f})", ha="right", va="center", fontsize=8)
            for t, (tok, val) in enumerate(zip(it["tokens"], it["scaled"])):
                weight = "bold" if t in it["pieces"] else "normal"
                ax.text(x, -row, tok, fontsize=9, va="center", fontweight=weight,
                        bbox=dict(facecolor=cmap(0.85 * val), edgecolor="none", pad=1.5))
                x += 0.012 * (len(tok) + 2)
        ax.set_xlim(-0.02, 1.0)
        ax.set_ylim(-len(probes) + 0.5, 0.5)
        ax.set_title(f"word: {probe['items'][s]['word']}", fontsize=9, loc="left")
        ax.axis("off")
    fig.suptitle("last-layer [CLS] attention, mean over heads, min-max scaled (bold: the sentiment word)", fontsize=10)
    save_figure(fig, path)

