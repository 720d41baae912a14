"""``mirrorattn vision``: l_p-MD against Adam and SGD on a vision transformer (CIFAR-10, Fashion-MNIST, digits).

Every field of :class:`~mirrorattn.experiments.vision.VisionExperimentConfig` is an option
(``--epochs 1``, ``--width 128``, ``--no-augment``, ``--image-size 48``, ``--max-train none`` ...),
applied after the preset (chosen per data set) and the ``--config`` TOML file. Special forms:
``--optimizers adam,lp-md:1.1,sgd``; ``--lr 3e-3`` (every optimizer) or
``--lr adam=1e-3,lp-md:1.1=5e-2`` (per optimizer).

Examples::

    mirrorattn vision --dataset digits --preset quick --out runs/digits
    mirrorattn vision --dataset cifar10 --data-root ../shared/data --preset quick --seeds 1 --out runs/cifar
    mirrorattn vision --dataset cifar10 --download --preset paper --device cuda --out runs/cifar-paper
"""

from __future__ import annotations

import argparse
from typing import Any

from mirrorattn.experiments import classification_cli as options

__all__ = ["build_vision_config", "register"]

_SPECIAL = {"dataset", "optimizers", "lrs", "lr", "data_root", "download", "device"}


def build_vision_config(args: argparse.Namespace):
    """The :class:`VisionExperimentConfig` of parsed arguments: preset, then ``--config``, then options."""
    from mirrorattn.experiments.vision import VisionExperimentConfig
    from mirrorattn.experiments.vision_presets import preset_values

    dataset = (args.dataset or "digits").lower()
    config = options.config_from_args(VisionExperimentConfig, preset_values(args.preset, dataset), args, _SPECIAL)
    if config.dataset != dataset:
        raise ValueError(f"--config sets dataset {config.dataset!r} but the preset was chosen for {dataset!r}; "
                         "pass --dataset instead")
    # steps of optimizers that are not run are dropped (the preset names steps for its default optimizers)
    options.apply_lr_option(config, args.lr, {k: v for k, v in config.lrs.items() if k in config.optimizers})
    config.validate()
    return config


def _run(args: argparse.Namespace) -> int:
    from mirrorattn.experiments.vision import run_vision_experiment
    from mirrorattn.train import dist_info

    options.set_threads(args)
    config = build_vision_config(args)
    results = run_vision_experiment(config, args.out, progress=not args.no_progress)
    if dist_info().is_main:
        for opt, row in results["aggregate"].items():
            t, last = row["test_acc"], row["test_acc_last"]
            if t["mean"] is not None:
                print(f"{opt}: test acc {100 * t['mean']:.2f} ± {100 * t['std']:.2f} % (last epoch "
                      f"{100 * last['mean']:.2f} ± {100 * last['std']:.2f} %) over {t['n']} seed(s)")
        print(f"results: {args.out}/results.md")
    return 0


def register(subparsers: Any) -> None:
    """Add the ``vision`` subcommand."""
    from mirrorattn.data.vision import DATASETS
    from mirrorattn.experiments.vision import VisionExperimentConfig
    from mirrorattn.experiments.vision_presets import PRESETS

    p = options.add_command(subparsers, "vision", "CIFAR-10 / Fashion-MNIST / digits comparison of l_p-MD, Adam and "
                            "SGD on a vision transformer", __doc__)
    p.add_argument("--dataset", default=None, choices=DATASETS, help="data set (default digits, no download needed)")
    options.add_run_options(p, PRESETS, download="the data set", optimizers="adam,lp-md:1.1,sgd",
                            lr="adam=1e-3,lp-md:1.1=5e-2")
    options.add_process_options(p, VisionExperimentConfig, _SPECIAL)
    p.set_defaults(func=_run)
