"""``mirrorattn vision`` (l_p-MD against Adam and SGD on a vision transformer: CIFAR-10, Fashion-MNIST, digits)
and ``mirrorattn vision-sweep`` (step-size selection on the validation split).

Every field of :class:`~mirrorattn.experiments.vision.VisionExperimentConfig` is an option
(``--epochs 1``, ``--width 128``, ``--no-augment``, ``--image-size 48``, ``--max-train none`` ...),
applied after the preset (chosen per data set) and the ``--config`` TOML file. Special forms:
``--optimizers adam,lp-md:1.1,sgd`` (multi-key specs too: ``adam,lp-md:p=1.1,normalized=true``, or
separate the specs with ';'); ``--lr 3e-3`` (every optimizer) or
``--lr adam=1e-3,lp-md:1.1=5e-2`` (per optimizer); ``--lr-from OUT/sweep.json`` (the steps chosen
by ``vision-sweep``; ``--lr`` given too wins).

``vision-sweep`` takes the same options. For every optimizer it trains one short run (seed 0,
``--sweep-epochs`` epochs, the training pool capped at ``--sweep-max-train`` images) per step of
its grid - the preset's ``sweep_grids`` entry, else ``sweep_lrs``; ``--sweep-lrs 1e-3,1e-2`` is one
grid for every optimizer - and chooses the step with the best validation accuracy (ties: lower
validation loss; the next smaller step when the next larger one failed - diverged or stayed at
chance - and the smaller one is within noise). It prints one line per finished (optimizer, step),
the chosen steps and WARNING lines (flat grid, nothing learned, best at the grid's edge), and
writes ``OUT/sweep.json`` and ``OUT/sweep.png``; the test split is dropped from the sweep's data
before any training and never evaluated. ``--workers N`` trains N runs (or sweep points) at
once in separate processes (the same results as one at a time). The quick presets sweep, per data
set: digits 5 epochs on the whole training pool; fashion-mnist and cifar10 1 epoch on the whole
training pool (adam 3e-4..3e-3, lp-md:1.1 and sgd 0.03..3). The converge preset (CIFAR-10) sweeps
10 epochs on its 5,556-image pool.

Examples::

    mirrorattn vision --dataset digits --preset quick --out runs/digits
    mirrorattn vision-sweep --dataset digits --preset quick --out runs/digits-sweep
    mirrorattn vision --dataset digits --preset quick --lr-from runs/digits-sweep/sweep.json --out runs/digits
    mirrorattn vision --dataset cifar10 --data-root ../shared/data --preset quick --seeds 1 --out runs/cifar
    mirrorattn vision --dataset cifar10 --download --preset paper --device cuda --out runs/cifar-paper
"""

from __future__ import annotations

import argparse
from typing import Any

from mirrorattn.experiments import classification_cli as options

__all__ = ["build_vision_config", "register"]

_SPECIAL = {"dataset", "optimizers", "lrs", "lr", *options.SWEEP_FIELDS, "data_root", "download", "device"}


def _add_options(p: argparse.ArgumentParser, sweep: bool) -> None:
    from mirrorattn.data.vision import DATASETS
    from mirrorattn.experiments.vision import VisionExperimentConfig
    from mirrorattn.experiments.vision_presets import PRESETS

    p.add_argument("--dataset", default=None, help=f"{', '.join(DATASETS)} (default digits, no download needed), or "
                   "the path of an image folder - train/<class>/*.png and test/<class>/*.png, or <class>/*.png split "
                   "by --test-fraction - or of a .tar/.tar.gz/.zip of one (preset entry: folder)")
    options.add_run_options(p, PRESETS, download="the data set", optimizers="adam,lp-md:1.1,sgd",
                            lr="adam=1e-3,lp-md:1.1=5e-2")
    per_dataset = {f"{name}/{ds}": values for name, sets in PRESETS.items() for ds, values in sets.items()}
    options.add_process_options(p, VisionExperimentConfig, _SPECIAL, per_dataset)


def build_vision_config(args: argparse.Namespace):
    """The :class:`VisionExperimentConfig` of parsed arguments: preset, then ``--config``, then options."""
    from mirrorattn.data.vision import dataset_kind
    from mirrorattn.experiments.vision import VisionExperimentConfig
    from mirrorattn.experiments.vision_presets import preset_values

    kind = dataset_kind(args.dataset or "digits", args.data_root)  # an image folder's preset entry is "folder"
    dataset = args.dataset if kind == "folder" else kind
    values = {**preset_values(args.preset, kind), "dataset": dataset}
    config = options.config_from_args(VisionExperimentConfig, values, args, _SPECIAL, options.sweep_overrides(args))
    if config.dataset != dataset:
        raise ValueError(f"--config sets dataset {config.dataset!r} but the preset was chosen for {dataset!r}; "
                         "pass --dataset instead")
    lrs = dict(config.lrs)
    if getattr(args, "lr_from", None):
        lrs.update(options.steps_from_sweep(args.lr_from, "vision"))
    # steps of optimizers that are not run are dropped (the preset and a sweep name steps for more optimizers)
    options.apply_lr_option(config, args.lr, {k: v for k, v in lrs.items() if k in config.optimizers})
    config.validate()
    return config


def _run(args: argparse.Namespace) -> int:
    from mirrorattn.experiments.vision import run_vision_experiment
    from mirrorattn.train import dist_info

    options.set_threads(args)
    config = build_vision_config(args)
    results = run_vision_experiment(config, args.out, progress=not args.no_progress, workers=args.workers,
                                    overwrite=args.overwrite)
    if dist_info().is_main:
        for opt, row in results["aggregate"].items():
            t, last = row["test_acc"], row["test_acc_last"]
            if t["mean"] is not None:
                print(f"{opt}: test acc {100 * t['mean']:.2f} ± {100 * t['std']:.2f} % (last epoch "
                      f"{100 * last['mean']:.2f} ± {100 * last['std']:.2f} %) over {t['n']} seed(s)")
        print(f"results: {args.out}/results.md")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from mirrorattn.experiments.vision import run_vision_sweep

    return options.run_sweep_command(args, build_vision_config, run_vision_sweep)


def register(subparsers: Any) -> None:
    """Add the ``vision`` and ``vision-sweep`` subcommands."""
    options.add_experiment_commands(
        subparsers, "vision", __doc__, add_options=_add_options, run=_run, sweep=_sweep,
        summary="CIFAR-10 / Fashion-MNIST / digits comparison of l_p-MD, Adam and SGD on a vision transformer",
    )
