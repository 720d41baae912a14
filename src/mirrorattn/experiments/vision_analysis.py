"""The vision side of the run analysis: :data:`VISION`, the :class:`~mirrorattn.experiments.run_analysis.AnalysisDomain`
that :func:`~mirrorattn.experiments.run_analysis.analyse_run` and ``write_report`` take for vision transformers.

Per run (the validation-best weights), besides the shared metrics of :mod:`mirrorattn.experiments.run_analysis`
([CLS]-row attention sparsity over all 1 + N tokens, [CLS] key included; Q/K/V weight sparsity, with the fraction
above the threshold in the table, and histograms; token selection on at most 256 of the same test images):

* attention maps (``attention_maps.npz``): for ``attention_images`` test images (the same ones
  for every optimizer) the last layer's [CLS] attention over the patches, mean over heads,
  shape (G, G) with G = image side / patch.

Report: ``results.md`` with the diverged runs and the timing columns (s/epoch, s/run), and
``attention_maps.png`` (:func:`plot_attention_maps`: the images with the attention over them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mirrorattn.experiments.classification import format_stat as _fmt
from mirrorattn.experiments.run_analysis import AnalysisDomain, Column, Extra
from mirrorattn.experiments.token_selection import VISION_SAMPLES
from mirrorattn.io import save_figure, write_npz

__all__ = ["VISION", "attention_maps", "plot_attention_maps"]


@torch.no_grad()
def attention_maps(model: nn.Module, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(last-layer [CLS] attention over patches, mean over heads, (B, G, G); predicted classes (B,))."""
    device = next(model.parameters()).device
    x = images.to(device)
    maps = model.cls_attention(x).mean(dim=1)  # (B, G, G)
    model.eval()
    pred = model(x).argmax(-1)
    return maps.double().cpu().numpy(), pred.cpu().numpy()


def _inputs(test: Any, idx: torch.Tensor) -> tuple[torch.Tensor, None]:
    return test.inputs[0][idx], None  # images: every token real


def _extra(model: nn.Module, prepared: Any, config: Any, test: Any, idx: torch.Tensor) -> Extra:
    """The attention maps of the first ``attention_images`` analysis images (``attention_maps.npz``)."""
    images = test.inputs[0]
    pick = idx[: int(config.attention_images)]
    maps, pred = attention_maps(model, images[pick])
    return Extra(entries={}, scalars={}, write=lambda out_dir: write_npz(
        out_dir / "attention_maps.npz", images=images[pick].numpy(), maps=maps, labels=test.labels[pick].numpy(),
        predictions=pred, indices=pick.numpy()))


# ------------------------------------------------------------------------------------- report
def _head(config: Any, results: dict[str, Any]) -> list[str]:
    data = results["data"]
    sizes = data.get("sizes", {})
    shape = data.get("image_shape", [])
    from mirrorattn.experiments.vision import auto_patch  # here: vision imports this module

    patch = config.patch or (auto_patch(int(shape[-1])) if shape else "auto")  # patch 0: chosen from the image side
    return [
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
    ]


def _no_tail(config: Any, results: dict[str, Any]) -> list[str]:
    return []


def _per_qkv(row: dict[str, Any], stat: str) -> str:
    return "/".join(f"{row[f'{k}_{stat}']['mean']:.3f}" if row.get(f"{k}_{stat}", {}).get("mean") is not None
                    else "-" for k in ("q", "k", "v"))


def _run_seconds(runs: list[dict[str, Any]]) -> str:
    run_s = _seconds(runs, "wall_seconds")
    return f"{_fmt(run_s, 1, 0)} (max {run_s['max']:.0f})" if run_s else "-"


def _columns(config: Any, results: dict[str, Any]) -> list[Column]:
    k = config.topk
    return [
        ("optimizer", lambda opt, row, runs: opt),
        ("lr", lambda opt, row, runs: f"{row['lr']:g}"),
        ("diverged", lambda opt, row, runs: f"{sum(bool(r.get('diverged')) for r in runs)}/{len(runs)}"),
        ("test acc (val-best)", lambda opt, row, runs: _fmt(row["test_acc"], 100)),
        ("test acc (last)", lambda opt, row, runs: _fmt(row["test_acc_last"], 100)),
        ("val acc", lambda opt, row, runs: _fmt(row["val_acc_best"], 100)),
        ("best epoch", lambda opt, row, runs: _fmt(row["best_epoch"], 1, 1)),
        ("s/epoch", lambda opt, row, runs: _fmt(_seconds(runs, "seconds_per_epoch"), 1, 1)),
        ("s/run", lambda opt, row, runs: _run_seconds(runs)),
        ("[CLS] entropy", lambda opt, row, runs: _fmt(row.get("cls_entropy_last"))),
        ("[CLS] entropy at the stop", lambda opt, row, runs: _fmt(row.get("stop_cls_entropy_last"))),
        ("[CLS] max prob", lambda opt, row, runs: _fmt(row.get("cls_max_prob_last"))),
        (f"top-{k} mass", lambda opt, row, runs: _fmt(row.get(f"cls_top{k}_mass_last"))),
        ("Q/K/V frac > thr", lambda opt, row, runs: _per_qkv(row, "fraction_above")),
        ("Q/K/V Hoyer", lambda opt, row, runs: _per_qkv(row, "hoyer")),
    ]


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


def _plot_maps(runs: dict[str, list[Path]], path: Path, results: dict[str, Any]) -> None:
    plot_attention_maps(runs, path, class_names=results["data"].get("class_names"))


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


#: the vision analysis (:func:`mirrorattn.experiments.run_analysis.analyse_run` and ``write_report`` with it)
VISION = AnalysisDomain(inputs=_inputs, extra=_extra, samples=VISION_SAMPLES,
                        weight_scalars=("fraction_above", "count_above", "hoyer"), head=_head, columns=_columns,
                        tail=_no_tail, plot_maps=_plot_maps, loss_name="cross-entropy", batch=250)
