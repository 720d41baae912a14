"""The text side of the run analysis: :data:`TEXT`, the :class:`~mirrorattn.experiments.run_analysis.AnalysisDomain`
that :func:`~mirrorattn.experiments.run_analysis.analyse_run` and ``write_report`` take for text models.

Per run (the validation-best weights), besides the shared metrics of :mod:`mirrorattn.experiments.run_analysis`
([CLS]-row attention sparsity over real tokens only, Q/K/V weight sparsity and histograms, token selection on at
most 500 of the same test samples):

* the attention-map probe (:func:`probe_attention`): the paper's measure on the hand-written
  sentences of ``mirrorattn/resources/probe_sentences.tsv`` (``probe.json``).

Report: ``results.md`` beside the paper's IMDb numbers (IMDb only), with the stopping-rule lines, and
``attention_maps.png`` (:func:`plot_attention_maps`: the probe sentences coloured by attention).
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
from mirrorattn.experiments.classification import reached_stop_rule
from mirrorattn.experiments.run_analysis import AnalysisDomain, Column, Extra
from mirrorattn.experiments.token_selection import TEXT_SAMPLES
from mirrorattn.io import read_json, save_figure, write_json
from mirrorattn.models.layers import record_attention

__all__ = [
    "TEXT",
    "load_probe_sentences",
    "plot_attention_maps",
    "probe_attention",
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


def _inputs(test: Any, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return test.inputs[0][idx], test.inputs[1][idx]  # ids and their mask


def _extra(model: nn.Module, prepared: Any, config: Any, test: Any, idx: torch.Tensor) -> Extra:
    """The probe sentences (:func:`probe_attention`): ``probe`` in ``analysis.json``, ``probe.json`` in full."""
    probe = probe_attention(model, prepared.tokenizer, load_probe_sentences())
    return Extra(entries={"probe": {k: v for k, v in probe.items() if k != "items"}},
                 scalars={"probe_score": probe["score"], "probe_other": probe["other"], "probe_rank1": probe["rank1"]},
                 write=lambda out_dir: write_json(out_dir / "probe.json", probe))


# ------------------------------------------------------------------------------------- report
def _paper(config: Any) -> tuple[int, dict[str, float]]:
    """The paper's model at our depth, else its main 3-block model, and its IMDb accuracy per optimizer (none
    for other data); its GD is l_2-MD (= SGD without momentum)."""
    from mirrorattn.paper import IMDB_ACCURACY

    blocks = int(config.blocks) if int(config.blocks) in IMDB_ACCURACY else 3
    paper = dict(IMDB_ACCURACY[blocks]) if config.dataset == "imdb" else {}
    if "lp-md:2" in paper:
        paper.setdefault("sgd", paper["lp-md:2"])
    return blocks, paper


def _head(config: Any, results: dict[str, Any]) -> list[str]:
    blocks, paper = _paper(config)
    return [
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
        + (f"; they are for its {blocks}-block model (width 384, length 512)" if paper else "") + ".",
        "",
    ]


def _counts(row: dict[str, Any]) -> str:
    return "/".join(f"{row[f'{k}_count_above']['mean']:.0f}" if row.get(f"{k}_count_above", {}).get("mean")
                    is not None else "-" for k in ("q", "k", "v"))


def _columns(config: Any, results: dict[str, Any]) -> list[Column]:
    blocks, paper = _paper(config)
    k = config.topk
    return [
        ("optimizer", lambda opt, row, runs: opt),
        ("lr", lambda opt, row, runs: f"{row['lr']:g}"),
        ("test acc (val-best)", lambda opt, row, runs: _fmt(row["test_acc"], 100)),
        ("test acc (last)", lambda opt, row, runs: _fmt(row["test_acc_last"], 100)),
        ("paper" + (f" ({blocks} blocks)" if paper else ""), lambda opt, row, runs: str(paper.get(opt, "-"))),
        ("val acc", lambda opt, row, runs: _fmt(row["val_acc_best"], 100)),
        ("epochs", lambda opt, row, runs: _fmt(row["epochs_run"], 1, 1)),
        ("samples/s", lambda opt, row, runs: _fmt(row["samples_per_second"], 1, 0)),
        ("[CLS] entropy, last layer (/ uniform's)", lambda opt, row, runs:
            f"{_fmt(row.get('cls_entropy_last'))} ({_fmt(row.get('cls_entropy_norm_last'), 1, 4)})"),
        ("[CLS] max prob", lambda opt, row, runs: _fmt(row.get("cls_max_prob_last"))),
        (f"top-{k} mass", lambda opt, row, runs: _fmt(row.get(f"cls_top{k}_mass_last"))),
        ("probe score (chance)", lambda opt, row, runs:
            f"{_fmt(row.get('probe_score'))} ({_fmt(row.get('probe_other'))})"),
        ("at the stop: [CLS] entropy / uniform's, probe score", lambda opt, row, runs:
            f"{_fmt(row.get('stop_cls_entropy_norm_last'), 1, 4)}, {_fmt(row.get('stop_probe_score'))}"),
        ("Q/K/V count > thr", lambda opt, row, runs: _counts(row)),
        ("Q/K/V Hoyer", lambda opt, row, runs: "/".join(_fmt(row.get(f"{q}_hoyer"), 1, 3) for q in "qkv")),
        ("Q/K move", lambda opt, row, runs: "/".join(_fmt(row.get(f"{q}_move"), 1, 2) for q in "qk")),
        ("optimal-token share (chance)", lambda opt, row, runs:
            f"{_fmt(row.get('optimal_token_share'), 1, 3)} ({_fmt(row.get('optimal_token_chance'), 1, 3)})"),
        ("runs at the rule", lambda opt, row, runs: f"{row.get('stop_rule_runs', 0)}/{len(runs)}"),
    ]


def _tail(config: Any, results: dict[str, Any]) -> list[str]:
    """Diverged runs (loss NaN/inf) and how many runs reached the stopping rule."""
    agg = results["aggregate"]
    lines = []
    diverged = {opt: row.get("diverged_runs", 0) for opt, row in agg.items() if row.get("diverged_runs")}
    if diverged:
        lines += ["", "Diverged runs (loss NaN/inf; their validation-best completed epoch is reported, no last-epoch "
                  "figure): " + ", ".join(f"{opt} {n}/{len(results['runs'][opt])}" for opt, n in diverged.items())]
    if config.stop_train_acc is not None:
        lines += ["", _regime_lines(config, results)]
    return lines


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
            "model. `at the stop`: the same analysis of the weights at the end of training (the stopping rule's "
            "epoch; the paper analyses its models as trained to the rule), the other columns: of the "
            "validation-best weights.")


def plot_attention_maps(runs: dict[str, list[Path]], path: Path, results: dict[str, Any] | None = None,
                        sentences: int = 4) -> None:
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



#: the text analysis (:func:`mirrorattn.experiments.run_analysis.analyse_run` and ``write_report`` with it)
TEXT = AnalysisDomain(inputs=_inputs, extra=_extra, samples=TEXT_SAMPLES, weight_scalars=("count_above", "hoyer"),
                      head=_head, columns=_columns, tail=_tail, plot_maps=plot_attention_maps, loss_name="BCE")
