"""Analysis of trained vision transformers, and the vision report drawn from results on disk.

Per run (:func:`analyse_run`, the validation-best weights):

* attention sparsity of the [CLS] row of every layer on a seeded subset of the test split (the
  row over all 1 + N tokens, [CLS] key included): entropy (nats), entropy / log(1 + N), max
  probability, top-k mass, mean over images and heads - :func:`mirrorattn.experiments.run_analysis.cls_row_metrics`;
* weight sparsity of the Q, K, V projection weights of all layers (count and fraction of
  |w| > ``weight_threshold``, Hoyer) and their histograms (``qkv_hist.npz``) -
  :func:`mirrorattn.experiments.run_analysis.weight_stats`;
* attention maps (``attention_maps.npz``): for ``attention_images`` test images (the same ones
  for every optimizer) the last layer's [CLS] attention over the patches, mean over heads,
  shape (G, G) with G = image side / patch;
* token selection (:mod:`mirrorattn.experiments.token_selection`, ``token_selection``): how often the last
  layer's [CLS] attention picks the optimal patch, on at most 256 of the same test images.

Report (:func:`write_report`): ``results.md`` (test accuracy at the validation-best and at the
last epoch, mean ± std over seeds, and the sparsity numbers) and the figures ``curves.png``,
``qkv_hist.png`` and ``attention_maps.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mirrorattn.experiments.classification import format_stat as _fmt
from mirrorattn.experiments.classification import run_name
from mirrorattn.experiments.run_analysis import (
    HIST_EDGES,
    attention_sparsity,
    cls_scalars,
    plot_curves,
    plot_histograms,
    weight_stats,
)
from mirrorattn.experiments.token_selection import (
    VISION_SAMPLES,
    sample_indices,
    selection_scalars,
    split_token_selection,
)
from mirrorattn.io import save_figure, write_json, write_npz, write_text

__all__ = ["analyse_run", "attention_maps", "plot_attention_maps", "write_report"]


@torch.no_grad()
def attention_maps(model: nn.Module, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(last-layer [CLS] attention over patches, mean over heads, (B, G, G); predicted classes (B,))."""
    device = next(model.parameters()).device
    x = images.to(device)
    maps = model.cls_attention(x).mean(dim=1)  # (B, G, G)
    model.eval()
    pred = model(x).argmax(-1)
    return maps.double().cpu().numpy(), pred.cpu().numpy()


def analyse_run(model: nn.Module, prepared: Any, config: Any, out_dir: Path, write: bool = True) -> dict[str, Any]:
    """Attention sparsity (test subset), Q/K/V weight sparsity and histograms, and attention maps of one run.

    Writes ``analysis.json``, ``qkv_hist.npz`` and ``attention_maps.npz`` into ``out_dir`` (when
    ``write``). Returns {"attention": per-layer list, "weights": ..., "scalars": flat numbers for
    the results table}.
    """
    test = prepared.data.test
    images = test.inputs[0]
    idx = sample_indices(len(test), int(config.analysis_samples))
    attention = attention_sparsity(model, images[idx], None, int(config.topk), batch=250)
    weights, hists = weight_stats(model, config.weight_threshold)
    pick = idx[: int(config.attention_images)]
    maps, pred = attention_maps(model, images[pick])
    selection = split_token_selection(model, test, min(len(idx), VISION_SAMPLES))
    scalars = {
        **cls_scalars(attention, int(config.topk)),
        **{f"{k}_fraction_above": weights[k]["fraction_above"] for k in ("q", "k", "v")},
        **{f"{k}_count_above": weights[k]["count_above"] for k in ("q", "k", "v")},
        **{f"{k}_hoyer": weights[k]["hoyer"] for k in ("q", "k", "v")},
        **selection_scalars(selection),
    }
    result = {"attention": attention, "weights": weights, "analysis_samples": len(idx),
              "token_selection": selection, "scalars": scalars}
    if write:
        write_json(out_dir / "analysis.json", result)
        write_npz(out_dir / "qkv_hist.npz", edges=HIST_EDGES, **hists)
        write_npz(out_dir / "attention_maps.npz", images=images[pick].numpy(), maps=maps,
                  labels=test.labels[pick].numpy(), predictions=pred, indices=pick.numpy())
    return result


# ------------------------------------------------------------------------------------- report
def write_report(out: Path, config: Any, results: dict[str, Any]) -> None:
    """``results.md`` (mean ± std over seeds) and the figures, from the results and the run folders."""
    agg = results["aggregate"]
    data = results["data"]
    sizes = data.get("sizes", {})
    shape = data.get("image_shape", [])
    topk = f"cls_top{config.topk}_mass_last"
    from mirrorattn.experiments.vision import auto_patch  # here: vision imports this module

    patch = config.patch or (auto_patch(int(shape[-1])) if shape else "auto")  # patch 0: chosen from the image side
    lines = [
        f"# Vision experiment: {config.dataset}",
        "",
        f"ViT: patch {patch}, width {config.width}, depth {config.depth}, {config.heads} heads, "
        f"MLP {config.mlp_hidden}, dropout {config.dropout}; images {'x'.join(map(str, shape))}; "
        f"{config.seeds} seed(s); {config.epochs} epochs, batch {config.batch_size}, md_scope {config.md_scope}.",
        f"Data: {sizes.get('train')} train / {sizes.get('val')} validation / {sizes.get('test')} test "
        f"(source: {data.get('source')}).",
        "",
        "Test accuracy (%) at the validation-best epoch (`test_acc`) and at the last epoch (`test_acc_last`), "
        "mean ± std over the seeds that did not diverge (each seed its own initialisation; epoch chosen on "
        "validation only). "
        f"Attention: last layer's [CLS] row on {config.analysis_samples} test images. Weights: fraction of Q/K/V "
        f"entries with |w| > {config.weight_threshold} and their Hoyer sparsity.",
        "",
        "| optimizer | lr | diverged | test acc (val-best) | test acc (last) | val acc | best epoch | s/epoch "
        f"| s/run | [CLS] entropy | [CLS] max prob | top-{config.topk} mass | Q/K/V frac > thr | Q/K/V Hoyer |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for opt, row in agg.items():
        frac = "/".join(
            f"{row[f'{k}_fraction_above']['mean']:.3f}" if row.get(f"{k}_fraction_above", {}).get("mean") is not None
            else "-" for k in ("q", "k", "v")
        )
        hoy = "/".join(
            f"{row[f'{k}_hoyer']['mean']:.3f}" if row.get(f"{k}_hoyer", {}).get("mean") is not None else "-"
            for k in ("q", "k", "v")
        )
        runs_opt = results["runs"].get(opt, [])
        spe = _fmt(_seconds(runs_opt, "seconds_per_epoch"), 1, 1)
        run_s = _seconds(runs_opt, "wall_seconds")
        spr = f"{_fmt(run_s, 1, 0)} (max {run_s['max']:.0f})" if run_s else "-"
        diverged = f"{sum(bool(r.get('diverged')) for r in runs_opt)}/{len(runs_opt)}"
        lines.append(
            f"| {opt} | {row['lr']:g} | {diverged} | {_fmt(row['test_acc'], 100)} | {_fmt(row['test_acc_last'], 100)} "
            f"| {_fmt(row['val_acc_best'], 100)} | {_fmt(row['best_epoch'], 1, 1)} | {spe} | {spr} "
            f"| {_fmt(row.get('cls_entropy_last'))} | {_fmt(row.get('cls_max_prob_last'))} | {_fmt(row.get(topk))} "
            f"| {frac} | {hoy} |"
        )
    lines += ["", "Figures: `curves.png`, `qkv_hist.png`, `attention_maps.png`.", ""]
    write_text(out / "results.md", "\n".join(lines))
    runs = {opt: [out / "runs" / run_name(opt, r["seed"]) for r in rs] for opt, rs in results["runs"].items()}
    plot_curves(runs, out / "curves.png", loss_name="cross-entropy")
    plot_histograms(runs, out / "qkv_hist.png")
    plot_attention_maps(runs, out / "attention_maps.png", class_names=data.get("class_names"))


def _seconds(runs: list[dict[str, Any]], key: str) -> dict[str, float] | None:
    """Mean, sample std (0 for one run) and max of the timing ``key`` over ``runs`` (None when none has it).

    ``seconds_per_epoch``: training time / epochs; ``wall_seconds``: one run from start to its analysis.
    """
    values = [float(r[key]) for r in runs if r.get(key)]
    if not values:
        return None
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "std": std, "max": max(values)}


def _show_image(ax: Any, image: np.ndarray) -> None:
    """Draw a uint8 (C, H, W) image (gray for one channel)."""
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(image.transpose(1, 2, 0), interpolation="nearest")


def plot_attention_maps(runs: dict[str, list[Path]], path: Path, class_names: list[str] | None = None) -> None:
    """Test images (top row) and, per optimizer (seed 0), the last-layer [CLS] attention over the patches.

    Each attention map (mean over heads) is upsampled to the image (nearest: one block per patch)
    and drawn over the image in gray; the colour scale is per map, min-max scaled as the paper.
    """
    import matplotlib.pyplot as plt

    found = {opt: np.load(d[0] / "attention_maps.npz") for opt, d in runs.items()
             if d and (d[0] / "attention_maps.npz").is_file()}
    if not found:
        return
    first = next(iter(found.values()))
    images, labels = first["images"], first["labels"]
    n = len(images)
    fig, axes = plt.subplots(1 + len(found), n, figsize=(1.9 * n + 0.5, 1.9 * (1 + len(found))), squeeze=False)
    for j in range(n):
        _show_image(axes[0, j], images[j])
        name = class_names[int(labels[j])] if class_names else str(int(labels[j]))
        axes[0, j].set_title(f"label: {name}", fontsize=8)
    for i, (opt, z) in enumerate(found.items(), start=1):
        for j in range(n):
            ax = axes[i, j]
            img = z["images"][j]
            gray = img.mean(0)
            side = img.shape[-1]
            att = z["maps"][j]
            scale = side // att.shape[-1]
            up = np.kron(att, np.ones((scale, scale)))
            ax.imshow(gray, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            lo, hi = float(up.min()), float(up.max())
            ax.imshow(up, cmap="inferno", alpha=0.6, vmin=lo, vmax=max(hi, lo + 1e-12), interpolation="nearest")
            pred = int(z["predictions"][j])
            pname = class_names[pred] if class_names else str(pred)
            ax.set_title(f"pred: {pname}, max {att.max():.2f}", fontsize=7)
        axes[i, 0].set_ylabel(opt, fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("last-layer [CLS] attention over patches (mean over heads, min-max scaled), seed 0", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
