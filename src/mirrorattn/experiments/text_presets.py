"""Presets of the text experiment (``mirrorattn text --preset NAME``); any value can be overridden.

``paper`` - the authors' configuration (paper.md section 5.3), for a GPU: width 384, 3 blocks of
3 heads, max length 512, a 30,522-token WordPiece vocabulary (trained here on the training split,
not BERT's), [CLS] pooling, no biases, dropout 0.2, MLP 4x, batch 100, summed BCE, constant step
sizes from the paper, l_p-MD on every parameter, stop at 99.5 % train accuracy or 1,000 epochs.

``quick`` - a CPU configuration (2 cores) chosen by measurement: 1 block, width 64, length 256,
masked mean pooling, 2 epochs, the compared optimizer on every parameter (md_scope "all", as the
authors), summed BCE, no clipping, steps chosen by ``mirrorattn text-sweep --preset quick`` (its
per-optimizer grids span 2.5-3 decades). Why, with the probes and the sweep: docs/presets.md.
Short training (2 epochs): not the paper's regime; the report lists it apart, without verdicts.

``converge`` - the paper's regime at CPU scale: the authors' init (``init = "torch"``) and attention
mask, [CLS] pooling, summed BCE over batches of 100, constant steps (after a short linear warm-up)
chosen on validation by ``text-sweep --preset converge`` (a choice that does not reach the rule in a
full run replaced by the next smaller step of the grid that does: GD 3e-3, not 1e-2), trained until
99.5 % training accuracy (the authors' rule; ``epochs`` is only a safety cap, 1,500), l_1.1, l_2 (= GD),
l_3 and Adam, 3 seeds with different initialisations. Data and model size chosen by measurement on this 2-core machine
(docs/results/converge_probes.md): sentence polarity (embedded, all 8,529 training-pool sentences),
a 2,000-token WordPiece vocabulary, 1 block of width 32 with 2 heads, length 48.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CONVERGE", "PRESETS"]

PAPER: dict[str, Any] = {
    "dataset": "imdb",
    "max_length": 512,
    "vocab_size": 30522,
    "width": 384,
    "blocks": 3,
    "heads": 3,
    "mlp_ratio": 4.0,
    "dropout": 0.2,
    "bias": False,
    "pooling": "cls",
    "init": "torch",  # PyTorch's defaults, as the authors' model (paper.md section 7)
    "attention_mask": "paper",
    "optimizers": ("lp-md:1.1", "lp-md:2", "lp-md:3", "sgd", "adam"),
    "seeds": 3,
    # the paper's 3-block steps (summed BCE); sgd = lp-md:2; adam is not in the paper (a common default)
    "lrs": {"lp-md:1.1": 8e-4, "lp-md:2": 4e-4, "lp-md:3": 4e-6, "sgd": 4e-4, "adam": 1e-4},
    "lr": 1e-3,
    "md_scope": "all",
    "epochs": 1000,
    "batch_size": 100,
    "loss_reduction": "sum",
    "stop_train_acc": 0.995,
    "patience": None,
    "grad_clip": None,
    "amp": False,
}


QUICK: dict[str, Any] = {
    "dataset": "imdb",
    "max_length": 256,
    "vocab_size": 16000,
    "width": 64,
    "blocks": 1,
    "heads": 2,
    "mlp_ratio": 2.0,
    "dropout": 0.1,
    "bias": False,
    "pooling": "mean",
    "optimizers": ("lp-md:1.1", "lp-md:2", "lp-md:3", "sgd", "adam"),
    "seeds": 3,
    # chosen by `mirrorattn text-sweep --preset quick` on IMDb (results/imdb-sweep2/sweep.json; docs/presets.md)
    "lrs": {"lp-md:1.1": 3e-3, "lp-md:2": 1e-2, "lp-md:3": 1e-3, "sgd": 1e-2, "adam": 3e-3},
    "lr": 1e-2,
    "md_scope": "all",
    "epochs": 2,
    "batch_size": 64,
    "loss_reduction": "sum",
    "stop_train_acc": 0.995,
    "patience": None,
    "grad_clip": None,
    "amp": False,
    # summed BCE: sgd / lp-md:2 / lp-md:1.1 over 3e-4 .. 1e-1 (mean-BCE equivalent 0.02 .. 6.4); l_3-MD's dual
    # step moves small weights far more (dw = lr g / (2|w|)), so its grid is 100x lower; Adam is scale-free
    "sweep_lrs": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
    "sweep_grids": {"lp-md:3": (3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3), "adam": (3e-4, 1e-3, 3e-3, 1e-2)},
    "sweep_epochs": 2,
    "sweep_max_train": 4000,
}

#: the paper's regime at CPU scale (issue 14): trained to the authors' stopping rule; why these values:
#: docs/results/converge_probes.md (the probes) and docs/results/polarity-converge/ (the sweep and the table)
CONVERGE: dict[str, Any] = {
    "dataset": "polarity",  # embedded in the package: runs on a fresh machine
    "max_train": None,  # the whole training pool: 7,677 train / 852 validation; 2,133 test sentences
    "max_length": 48,
    "vocab_size": 2000,
    "width": 32,
    "blocks": 1,
    "heads": 2,
    "mlp_ratio": 2.0,
    # the authors' model has 0.2; with it the width-32 model stays near 0.83 (Adam) and 0.58 (l_1.1-MD) training
    # accuracy after 50 epochs, far from the rule (docs/results/converge_probes.md, fifth probe)
    "dropout": 0.0,
    "bias": False,
    "pooling": "cls",
    "init": "torch",
    "attention_mask": "paper",
    "optimizers": ("lp-md:1.1", "lp-md:2", "lp-md:3", "adam"),
    "seeds": 3,
    # chosen by `mirrorattn text-sweep --preset converge` (docs/results/polarity-converge/sweep.json): l_1.1 took
    # 1e-3 over 3e-3 (within noise of it, next to the diverged 1e-2: the sweep's stability margin); as in the
    # vision converge preset, a chosen step that does not reach the rule in a full run gives way to the next
    # smaller step of the grid that does: GD (lp-md:2, = sgd) 1e-2 rose to 0.92-0.95 training accuracy and then
    # collapsed in all 3 seeds; 3e-3 reached the rule in 377-464 epochs (docs/results/polarity-converge-v2)
    "lrs": {"lp-md:1.1": 1e-3, "lp-md:2": 3e-3, "lp-md:3": 3e-4, "sgd": 3e-3, "adam": 3e-3},
    "lr": 1e-2,
    "md_scope": "all",
    # a safety cap: the runs stop at the rule (docs/results/polarity-converge-v2: l_1.1-MD about 300-350 epochs,
    # GD 377-464, l_3-MD 666-858 - its first comparison stood at 0.85-0.90 training accuracy at a cap of 500 -,
    # Adam about 60)
    "epochs": 1500,
    "batch_size": 100,
    "loss_reduction": "sum",
    "stop_train_acc": 0.995,
    "patience": None,
    "grad_clip": None,
    "warmup_epochs": 5.0,
    "amp": False,
    "snapshots": "log",  # weights kept for the token-selection trend (mirrorattn analyse --trend)
    "sweep_lrs": (3e-3, 1e-2, 3e-2),
    # half-decades around the probes' stable steps; l_3's best (1e-3) was the edge of a first grid 1e-3 .. 1e-2
    "sweep_grids": {"lp-md:1.1": (1e-3, 3e-3, 1e-2), "lp-md:3": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
                    "adam": (3e-4, 1e-3, 3e-3)},
    "sweep_epochs": 100,
    "sweep_max_train": None,
}

PRESETS: dict[str, dict[str, Any]] = {"paper": PAPER, "quick": QUICK, "converge": CONVERGE}
