"""What the text and vision analyses share: the [CLS]-row attention metrics, the Q/K/V weight statistics and
the two figures drawn from every comparison's run folders (training curves, weight histograms).

* :func:`cls_row_metrics` / :func:`attention_sparsity`: entropy (nats), entropy / log(number of real tokens),
  max probability and top-k mass of the [CLS] row of every layer, mean over samples and heads (text: ids and
  mask; a ViT: images, every token real); :func:`cls_scalars` the last layer's numbers for the tables;
* :func:`weight_stats`: count and fraction of |w| > threshold (0.06 as the paper) and the Hoyer sparsity of
  the Q, K, V projection weights of all layers, with their histograms (edges :data:`HIST_EDGES`);
* :func:`plot_curves`, :func:`plot_histograms`: the comparison's ``curves.png`` and ``qkv_hist.png``;
* :func:`analyse_run`: the analysis of one trained run (the metrics above and token selection on a seeded test
  subset, written to ``analysis.json`` and ``qkv_hist.npz``); :func:`write_report`: the comparison's
  ``results.md`` table and figures.

What differs between text and vision is data, an :class:`AnalysisDomain`:
:data:`mirrorattn.experiments.text_analysis.TEXT` (ids with their mask, the probe sentences, the paper's IMDb
numbers and the stopping-rule lines) and :data:`mirrorattn.experiments.vision_analysis.VISION` (images, every
token real, the attention maps over patches, the timing columns).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mirrorattn.experiments.classification import run_name
from mirrorattn.experiments.token_selection import sample_indices, selection_scalars, split_token_selection
from mirrorattn.io import read_json, save_figure, write_json, write_npz, write_text
from mirrorattn.metrics import attention_entropy, hoyer_sparsity, max_probability, topk_mass, weight_sparsity
from mirrorattn.models.layers import attention_layers, record_attention

__all__ = [
    "HIST_EDGES",
    "AnalysisDomain",
    "Extra",
    "analyse_run",
    "attention_sparsity",
    "cls_row_metrics",
    "cls_scalars",
    "hoyer",
    "plot_curves",
    "plot_histograms",
    "weight_stats",
    "write_report",
]

#: bin edges of the saved Q/K/V weight histograms (values outside are clipped into the end bins)
HIST_EDGES = np.linspace(-0.5, 0.5, 201)


def cls_row_metrics(probs: torch.Tensor, mask: torch.Tensor, k: int = 5) -> dict[str, torch.Tensor]:
    """Sparsity of attention rows restricted to real tokens (computed by :mod:`mirrorattn.metrics`).

    ``probs`` (B, H, T): one attention row per (sample, head) (e.g. the [CLS] query's row);
    ``mask`` (B, T) bool, True for real tokens. Returns (B, H) float64 tensors: ``entropy`` =
    -sum p log p (nats, 0 log 0 = 0, :func:`~mirrorattn.metrics.attention_entropy`),
    ``entropy_norm`` = entropy / log(n_real) (0 when n_real = 1), ``max_prob``
    (:func:`~mirrorattn.metrics.max_probability`), ``topk_mass`` = sum of the k largest
    probabilities (:func:`~mirrorattn.metrics.topk_mass`; k capped at T). Padded positions count as 0.
    """
    p = probs.double() * mask[:, None, :]
    n_real = mask.sum(-1).double()[:, None].expand(p.shape[:2])
    ent = attention_entropy(p, mask[:, None, :])
    return {
        "entropy": ent,
        "entropy_norm": torch.where(n_real > 1, ent / n_real.clamp_min(2).log(), torch.zeros_like(ent)),
        "max_prob": max_probability(p),
        "topk_mass": topk_mass(p, min(int(k), p.shape[-1])),
    }


def hoyer(w: np.ndarray | torch.Tensor) -> float:
    """Hoyer sparsity (:func:`mirrorattn.metrics.hoyer_sparsity`), but 0.0 where it is undefined.

    (sqrt(n) - ||w||_1 / ||w||_2) / (sqrt(n) - 1): 0 for equal magnitudes, 1 for one non-zero;
    0.0 for an all-zero array or fewer than 2 entries (a report must not fail on them).
    """
    a = np.asarray(w.detach().cpu() if isinstance(w, torch.Tensor) else w, dtype=np.float64)
    if a.size < 2 or not np.any(a):
        return 0.0
    return hoyer_sparsity(a)


def weight_stats(model: nn.Module, threshold: float = 0.06) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Sparsity of the Q, K, V projection weights over all attention layers, and their histograms.

    Returns ({"q": {"count_above", "fraction_above", "hoyer", "size"}, "k": ..., "v": ...},
    {"q": counts over :data:`HIST_EDGES`, ...}). ``count_above`` counts entries with |w| > threshold.
    """
    stats: dict[str, Any] = {}
    hists: dict[str, np.ndarray] = {}
    layers = attention_layers(model)
    for name in ("q", "k", "v"):
        w = np.concatenate(
            [getattr(layer, f"{name}_proj").weight.detach().double().cpu().numpy().ravel() for layer in layers]
        )
        sp = weight_sparsity(w, threshold)
        stats[name] = {"count_above": sp["count"], "fraction_above": sp["fraction"], "hoyer": hoyer(w),
                       "size": sp["total"]}
        hists[name] = np.histogram(np.clip(w, HIST_EDGES[0], HIST_EDGES[-1]), bins=HIST_EDGES)[0]
    return stats, hists


def cls_scalars(attention: list[dict[str, float]], k: int) -> dict[str, float]:
    """The results-table numbers of the last layer's [CLS] row, from per-layer mean metrics (``attention``):
    ``cls_entropy_last``, ``cls_entropy_norm_last``, ``cls_max_prob_last`` and ``cls_top{k}_mass_last``."""
    last = attention[-1]
    return {"cls_entropy_last": last["entropy"], "cls_entropy_norm_last": last["entropy_norm"],
            "cls_max_prob_last": last["max_prob"], f"cls_top{k}_mass_last": last["topk_mass"]}


@torch.no_grad()
def attention_sparsity(model: nn.Module, inputs: torch.Tensor, mask: torch.Tensor | None, k: int,
                       batch: int = 128) -> list[dict[str, float]]:
    """Per layer, the mean over samples and heads of :func:`cls_row_metrics` of the [CLS] row. Text: ``inputs``
    = ids with their ``mask``; a ViT: ``inputs`` = images (B, C, S, S) and ``mask`` None (every token real)."""
    model.eval()
    device = next(model.parameters()).device
    sums: list[dict[str, float]] = []
    n = 0
    for start in range(0, len(inputs), batch):
        x = inputs[start : start + batch].to(device)
        m = None if mask is None else mask[start : start + batch].to(device)
        with record_attention(model) as maps:
            model(x) if m is None else model(x, m)
        for layer, probs in enumerate(maps):
            row = probs[:, :, 0, :].cpu()  # (B, H, T)
            real = torch.ones(row.shape[0], row.shape[-1], dtype=torch.bool) if m is None else m.cpu()
            met = cls_row_metrics(row, real, k)
            if len(sums) <= layer:
                sums.append({key: 0.0 for key in met})
            for key, v in met.items():
                sums[layer][key] += float(v.mean(dim=1).sum())
        n += len(x)
    return [{key: v / max(1, n) for key, v in layer.items()} for layer in sums]


def _legend(ax: Any) -> None:
    """A legend when something was drawn (every run may have diverged before its first epoch)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def plot_curves(runs: dict[str, list[Path]], path: Path, loss_name: str = "BCE") -> None:
    """Training loss and validation accuracy against the epoch, one line per optimizer (mean over seeds, band:
    min-max over seeds); ``loss_name`` labels the loss axis."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for opt, dirs in runs.items():
        hists = [read_json(d / "history.json") for d in dirs if (d / "history.json").is_file()]
        if not hists:
            continue
        n = min(len(h) for h in hists)
        ep = np.arange(1, n + 1)
        for ax, key in zip(axes, ("train_loss", "val_acc")):
            vals = np.array([[r[key] for r in h[:n]] for h in hists])
            ax.plot(ep, vals.mean(0), marker="o", label=opt)
            if len(hists) > 1:
                ax.fill_between(ep, vals.min(0), vals.max(0), alpha=0.15)
    axes[0].set(xlabel="epoch", ylabel=f"training loss ({loss_name})", yscale="log")
    axes[1].set(xlabel="epoch", ylabel="validation accuracy")
    _legend(axes[1])
    fig.tight_layout()
    save_figure(fig, path)


def plot_histograms(runs: dict[str, list[Path]], path: Path) -> None:
    """Histograms of the Q, K, V weights (summed over seeds), one line per optimizer, log counts."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for opt, dirs in runs.items():
        files = [np.load(d / "qkv_hist.npz") for d in dirs if (d / "qkv_hist.npz").is_file()]
        if not files:
            continue
        edges = files[0]["edges"]
        centers = (edges[:-1] + edges[1:]) / 2
        for ax, name in zip(axes, ("q", "k", "v")):
            ax.plot(centers, np.sum([f[name] for f in files], axis=0) + 1, label=opt, lw=1.2)
    for ax, name in zip(axes, ("Q", "K", "V")):
        ax.set(title=f"{name} weights", xlabel="weight value", yscale="log")
        ax.axvline(0.06, color="grey", lw=0.5, ls="--")
        ax.axvline(-0.06, color="grey", lw=0.5, ls="--")
    axes[0].set_ylabel("count + 1 (all seeds)")
    _legend(axes[-1])
    fig.tight_layout()
    save_figure(fig, path)


# ------------------------------------------------------------------------------- one run, one report
@dataclass(frozen=True)
class Extra:
    """A domain's own part of a run's analysis: ``analysis.json`` entries (before ``token_selection``), table
    scalars (before the token-selection ones) and ``write(out_dir)`` for its files."""

    entries: dict[str, Any]
    scalars: dict[str, Any]
    write: Callable[[Path], None]


#: a results-table column: its header and ``cell(optimizer, aggregate row, the optimizer's run summaries)``
Column = tuple[str, Callable[[str, dict[str, Any], list[dict[str, Any]]], str]]


@dataclass(frozen=True)
class AnalysisDomain:
    """What the text and the vision analysis do differently (module-level functions: worker processes pickle it).

    ``inputs(test, idx)``: the analysis inputs and mask (None: every token real) of the test rows ``idx``;
    ``extra(model, prepared, config, test, idx)``: the domain's :class:`Extra`; ``samples``: the token-selection
    sample cap; ``weight_scalars``: the per-Q/K/V weight numbers in the table scalars; ``head(config, results)``:
    the report's lines above the table; ``columns(config, results)``: its :data:`Column` list;
    ``tail(config, results)``: lines below it; ``plot_maps(runs, path, results)``: ``attention_maps.png``.
    """

    inputs: Callable[[Any, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]
    extra: Callable[..., Extra]
    samples: int
    weight_scalars: tuple[str, ...]
    head: Callable[[Any, dict[str, Any]], list[str]]
    columns: Callable[[Any, dict[str, Any]], list[Column]]
    tail: Callable[[Any, dict[str, Any]], list[str]]
    plot_maps: Callable[[dict[str, list[Path]], Path, dict[str, Any]], None]
    loss_name: str
    batch: int = 128


def analyse_run(model: nn.Module, prepared: Any, config: Any, out_dir: Path, write: bool = True, *,
                domain: AnalysisDomain) -> dict[str, Any]:
    """[CLS]-row attention sparsity and token selection on the seeded test subset, Q/K/V weight sparsity and
    histograms, and the domain's :class:`Extra` of one run (the validation-best model).

    Writes ``analysis.json``, ``qkv_hist.npz`` and the domain's files into ``out_dir`` (when ``write``).
    Returns {"attention": per-layer list, "weights": ..., "analysis_samples": n, the domain's entries,
    "token_selection": ..., "scalars": flat numbers for the results table}.
    """
    test = prepared.data.test
    idx = sample_indices(len(test), int(config.analysis_samples))  # the seeded analysis sample of every run
    inputs, mask = domain.inputs(test, idx)
    attention = attention_sparsity(model, inputs, mask, int(config.topk), batch=domain.batch)
    weights, hists = weight_stats(model, config.weight_threshold)
    extra = domain.extra(model, prepared, config, test, idx)
    selection = split_token_selection(model, test, min(len(idx), domain.samples))
    scalars = {
        **cls_scalars(attention, int(config.topk)),
        **{f"{k}_{stat}": weights[k][stat] for stat in domain.weight_scalars for k in ("q", "k", "v")},
        **extra.scalars,
        **selection_scalars(selection),
    }
    result = {"attention": attention, "weights": weights, "analysis_samples": len(idx), **extra.entries,
              "token_selection": selection, "scalars": scalars}
    if write:
        write_json(out_dir / "analysis.json", result)
        extra.write(out_dir)
        write_npz(out_dir / "qkv_hist.npz", edges=HIST_EDGES, **hists)
    return result


def write_report(out: Path, config: Any, results: dict[str, Any], *, domain: AnalysisDomain) -> None:
    """``results.md`` (the domain's head, one row per optimizer, its tail) and the figures ``curves.png``,
    ``qkv_hist.png`` and ``attention_maps.png``, drawn from ``results`` and the run folders."""
    columns = domain.columns(config, results)
    lines = [*domain.head(config, results),
             "| " + " | ".join(header for header, _ in columns) + " |", "|" + "---|" * len(columns)]
    for opt, row in results["aggregate"].items():
        runs = results["runs"].get(opt, [])
        lines.append("| " + " | ".join(cell(opt, row, runs) for _, cell in columns) + " |")
    lines += [*domain.tail(config, results), "", "Figures: `curves.png`, `qkv_hist.png`, `attention_maps.png`.", ""]
    write_text(out / "results.md", "\n".join(lines))
    folders = {opt: [out / "runs" / run_name(opt, r["seed"]) for r in rs] for opt, rs in results["runs"].items()}
    plot_curves(folders, out / "curves.png", loss_name=domain.loss_name)
    plot_histograms(folders, out / "qkv_hist.png")
    domain.plot_maps(folders, out / "attention_maps.png", results)
