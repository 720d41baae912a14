"""Presets of the vision experiment per data set (``mirrorattn vision --preset NAME``); any value can be overridden.

``paper`` - the authors' CIFAR-10 configuration (paper.md section 5.6), for a GPU: images resized
to 48 x 48, patch 4 (144 patches), width 512, depth 6, 8 heads of 64, MLP 512, dropout 0.1,
[CLS] head, cross-entropy, random crop (padding 4) + horizontal flip, batch 100, Adam 1e-4
against l_1.1-MD 5e-2 (SGD, not in the paper, at 1e-2), every parameter updated by the
optimizer. The paper gives no epoch count; we use 100 with model selection on validation. On
other data sets the same model and training are used (images resized to 48).

``quick`` - CPU configurations (2 shared cores) per data set, chosen by measurement; see
docs/presets.md for the measurements and the learning-rate probe behind them.

``converge`` (CIFAR-10 only) - the paper's regime at CPU scale (docs/results/vision_converge_probes.md):
a ViT small enough per step to reach the stopping rule within 10 minutes a run on 2 CPU cores - patch 8
(16 patches + [CLS]), width 64, depth 2, 4 heads, MLP 128, dropout 0 - with PyTorch's default
initialisation (``init = "torch"``, [CLS] and positions N(0, 1), as the authors' ViT), trained with
constant steps (after a 1-epoch linear warm-up) until 99.5 % training accuracy (the authors' text rule;
their ViT code has no rule and runs up to 1,000 epochs) on a stratified 5,556-image pool (5,000 train /
556 validation), 2,000 test images, batch 100 and mean cross-entropy as the authors' ViT. Where it
differs from the authors and why: no augmentation (with random crops and flips 5,000 images do not
reach 99.5 % training accuracy within a CPU budget), 32 x 32 images (not resized to 48), a small model,
SGD as a third optimizer, 3 seeds with different initialisations. Steps: ``vision-sweep --preset converge``
(10 epochs on the pool, validation accuracy), a choice that does not reach the rule in a full run replaced by
the next smaller step of the grid that does (l_1.1-MD: 1.0 and 0.5 diverged, 0.2), see the probe notes.
The first converge preset (patch 4, width 128, MLP 256) is the one of docs/results/cifar-converge/README.md
(commit f5c417b).
"""

from __future__ import annotations

from typing import Any

__all__ = ["PRESETS", "preset_values"]


_PAPER: dict[str, Any] = {
    "image_size": 48,
    "patch": 4,
    "width": 512,
    "depth": 6,
    "heads": 8,
    "mlp_hidden": 512,
    "dropout": 0.1,
    "bias": True,
    "init": "torch",  # PyTorch's defaults, [CLS] and positions N(0, 1), as the authors' ViT (paper.md section 7)
    "augment": True,
    "crop_padding": 4,
    "optimizers": ("adam", "lp-md:1.1", "sgd"),
    "lrs": {"adam": 1e-4, "lp-md:1.1": 5e-2, "sgd": 1e-2},
    "seeds": 3,
    "epochs": 100,
    "batch_size": 100,
    "md_scope": "all",
    "loss_reduction": "mean",
    "stop_train_acc": None,
}

#: the ViT of the digits and Fashion-MNIST quick presets
_QUICK_SMALL_VIT: dict[str, Any] = {"patch": 4, "width": 64, "depth": 2, "heads": 4, "mlp_hidden": 128, "dropout": 0.0}

# ------------------------------------------------------------------ step-size sweep (mirrorattn vision-sweep)
#: grids of the non-adaptive optimizers: they improve up to the largest stable step on cifar10 (docs/presets.md: 1.0
#: best, 3.0 diverged) and digits (0.1-0.3 best, 1.0 diverged); on fashion-mnist sgd was best at 0.1, the
#: smallest of a first grid, so the grid spans 0.03 .. 3
_SWEEP_GRIDS: dict[str, tuple[float, ...]] = {"adam": (3e-4, 1e-3, 3e-3), "lp-md:1.1": (0.03, 0.1, 0.3, 1.0, 3.0),
                                              "sgd": (0.03, 0.1, 0.3, 1.0, 3.0)}

#: the sweep fields of the quick presets, per data set (merged into ``PRESETS["quick"]``): digits is
#: cheap enough for 5 epochs on the whole training pool; fashion-mnist and cifar10 take 1 epoch on the whole
#: pool. A cap of 10,000 images (70 steps of 128) is 5 times cheaper but a poor proxy for the full runs: on
#: cifar10 it chose lp-md:1.1 0.3 and sgd 0.1 (sgd at 1.0 was still at chance after 70 steps), whereas one
#: epoch on all 45,000 images put both best at 1.0 (docs/presets.md)
_SWEEP_QUICK: dict[str, dict[str, Any]] = {
    "digits": {"sweep_epochs": 5, "sweep_max_train": None, "sweep_grids": dict(_SWEEP_GRIDS)},
    "fashion-mnist": {"sweep_epochs": 1, "sweep_max_train": None, "sweep_grids": dict(_SWEEP_GRIDS)},
    "cifar10": {"sweep_epochs": 1, "sweep_max_train": None, "sweep_grids": dict(_SWEEP_GRIDS)},
    "folder": {"sweep_epochs": 5, "sweep_max_train": None, "sweep_grids": dict(_SWEEP_GRIDS)},
}


#: the quick presets per data set, before their sweep fields (:data:`_SWEEP_QUICK`)
_QUICK: dict[str, dict[str, Any]] = {
    "digits": {
        "augment": False,
        **_QUICK_SMALL_VIT,
        "epochs": 20,
        "batch_size": 32,
        "lrs": {"adam": 1e-3, "lp-md:1.1": 1e-1, "sgd": 3e-1},
    },
    "fashion-mnist": {
        "augment": False,
        **_QUICK_SMALL_VIT,
        "epochs": 3,
        "batch_size": 128,
        "lr_schedule": "cosine",
        "warmup_epochs": 0.5,
        "lrs": {"adam": 1e-3, "lp-md:1.1": 3e-1, "sgd": 1e-1},  # chosen by vision-sweep (docs/presets.md)
    },
    "cifar10": {
        "augment": False,
        "patch": 4,
        "width": 128,
        "depth": 2,
        "heads": 4,
        "mlp_hidden": 256,
        "dropout": 0.0,
        "epochs": 7,
        "batch_size": 128,
        "lr_schedule": "cosine",
        "warmup_epochs": 0.5,
        "lrs": {"adam": 1e-3, "lp-md:1.1": 1.0, "sgd": 1.0},
    },
    # an image folder of your own (mirrorattn.data.image_folders): images resized to 32 (any size and
    # aspect), channels from the data (1 when every image is grayscale, else 3), the patch chosen from the
    # image side (patch 0: mirrorattn.experiments.vision.auto_patch, 4 at 32: 64 patches, as cifar10);
    # the steps are fashion-mnist's sweep choices, a starting point: run vision-sweep on your data
    "folder": {
        "image_size": 32,
        "augment": False,
        **_QUICK_SMALL_VIT,
        "patch": 0,
        "epochs": 10,
        "batch_size": 64,
        "lr_schedule": "cosine",
        "warmup_epochs": 0.5,
        "lrs": {"adam": 1e-3, "lp-md:1.1": 3e-1, "sgd": 1e-1},
    },
}


#: the CIFAR-10 converge preset (module docstring); model and steps from full-length probes
#: (docs/results/vision_converge_probes.md, 2026-12-07)
_CONVERGE_CIFAR: dict[str, Any] = {
    **_QUICK["cifar10"],
    "patch": 8,  # 17 tokens: about 10 times cheaper per epoch than patch 4 / width 128, which took 25-57 minutes
    "width": 64,
    "mlp_hidden": 128,
    "init": "torch",
    "max_train": 5556,
    "max_test": 2000,
    "batch_size": 100,
    "lr_schedule": "constant",
    "warmup_epochs": 1.0,
    "epochs": 200,  # a safety cap: the runs stop at the rule (probes: 41-139 epochs)
    "stop_train_acc": 0.995,
    "seeds": 3,
    "snapshots": "log",  # weights kept for the token-selection trend (mirrorattn analyse --trend)
    # `vision-sweep --preset converge` (10 epochs, validation accuracy; docs/results/cifar-converge/v2/sweep.json)
    # chose adam 1e-3, lp-md:1.1 1.0 and sgd 0.3; a chosen step that does not reach the rule in a full run gives way to
    # the next smaller step of the grid that does: lp-md:1.1 1.0 and 0.5 diverged (epochs 29 and 64), 0.2 reached it
    "lrs": {"adam": 1e-3, "lp-md:1.1": 2e-1, "sgd": 3e-1},
    "sweep_epochs": 10,
    "sweep_max_train": None,
    "sweep_grids": {"adam": (3e-4, 1e-3, 3e-3), "lp-md:1.1": (5e-2, 1e-1, 2e-1, 5e-1, 1.0),
                    "sgd": (1e-2, 3e-2, 1e-1, 3e-1, 1.0)},
}

#: ``PRESETS[preset][dataset]``: field values applied before a TOML file and command-line overrides
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {"cifar10": dict(_PAPER), "fashion-mnist": dict(_PAPER, flip=False), "digits": dict(_PAPER, flip=False),
              "folder": dict(_PAPER, flip=False)},
    "quick": {dataset: {**values, **_SWEEP_QUICK[dataset]} for dataset, values in _QUICK.items()},
    "converge": {"cifar10": _CONVERGE_CIFAR},
}


def preset_values(preset: str, dataset: str) -> dict[str, Any]:
    """The field values of ``preset`` for ``dataset`` (``dataset`` included); ``ValueError`` if unknown."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if dataset not in PRESETS[preset]:
        raise ValueError(f"preset {preset!r} has no values for data set {dataset!r}; choose one of "
                         f"{', '.join(PRESETS[preset])}")
    return {"dataset": dataset, **PRESETS[preset][dataset]}
