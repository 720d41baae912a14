"""``mirrorattn text`` (the optimizer comparison) and ``mirrorattn text-sweep`` (step-size selection).

Every field of :class:`~mirrorattn.experiments.text.TextExperimentConfig` is an option
(``--epochs 1``, ``--width 128``, ``--no-bias``, ``--grad-clip none`` ...), applied after the
preset and the ``--config`` TOML file. Special forms: ``--optimizers lp-md:1.1,sgd,adam`` (multi-key
specs too: ``adam,lp-md:p=1.1,normalized=true``; or separate the specs with ';');
``--lr 3e-3`` (every optimizer) or ``--lr lp-md:1.1=3e-3,adam=1e-3`` (per optimizer);
``--lr-from OUT/sweep.json`` takes the sweep's chosen steps; ``--sweep-lrs 1e-3,1e-2`` (one grid for
every optimizer, replacing the preset's per-optimizer ``sweep_grids``, which a ``--config`` TOML
file can set). ``--workers N`` trains N runs (or sweep points) at once in separate processes.
``text-sweep`` prints one line per finished (optimizer, step) and, at the end, a WARNING line
when an optimizer's grid is flat, its best is within noise of chance or at the grid's edge.
"""

from __future__ import annotations

import argparse
from typing import Any

from mirrorattn.experiments import classification_cli as options

__all__ = ["build_text_config", "register"]

_SPECIAL = {"dataset", "optimizers", "lrs", "lr", *options.SWEEP_FIELDS, "data_root", "download", "device"}


def _add_options(p: argparse.ArgumentParser, sweep: bool) -> None:
    from mirrorattn.experiments.text import TextExperimentConfig
    from mirrorattn.experiments.text_presets import PRESETS

    p.add_argument("--dataset", default=None, help="imdb, polarity, a .jsonl/.csv/.tsv file, or a folder of "
                   "train/dev/test.tsv|csv|jsonl files (GLUE / Hugging Face exports)")
    options.add_run_options(p, PRESETS, download="IMDb", optimizers="lp-md:1.1,lp-md:2,sgd,adam",
                            lr="lp-md:1.1=3e-3,adam=1e-3")
    options.add_process_options(p, TextExperimentConfig, _SPECIAL, PRESETS)


def build_text_config(args: argparse.Namespace):
    """The :class:`TextExperimentConfig` of parsed arguments: preset, then ``--config``, then options."""
    from mirrorattn.experiments.text import TextExperimentConfig
    from mirrorattn.experiments.text_presets import PRESETS

    overrides: dict[str, Any] = options.sweep_overrides(args)
    if args.dataset is not None:
        overrides["dataset"] = args.dataset
    config = options.config_from_args(TextExperimentConfig, dict(PRESETS[args.preset]), args, _SPECIAL, overrides)
    lrs = dict(config.lrs)
    if getattr(args, "lr_from", None):  # may name optimizers not run here (lrs may, in this experiment)
        lrs.update(options.steps_from_sweep(args.lr_from, "text"))
    options.apply_lr_option(config, args.lr, lrs)
    config.validate()
    return config


def _run(args: argparse.Namespace) -> int:
    from mirrorattn.experiments.text import run_text_experiment

    options.set_threads(args)
    config = build_text_config(args)
    results = run_text_experiment(config, args.out, progress=not args.no_progress, workers=args.workers,
                                  overwrite=args.overwrite)
    _print_table(results)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from mirrorattn.experiments.text import run_lr_sweep

    return options.run_sweep_command(args, build_text_config, run_lr_sweep)


def _print_table(results: dict[str, Any]) -> None:
    from mirrorattn.train import dist_info

    if not dist_info().is_main:
        return
    for opt, row in results["aggregate"].items():
        t = row["test_acc"]
        if t["mean"] is not None:
            print(f"{opt}: test acc {100 * t['mean']:.2f} ± {100 * t['std']:.2f} % over {t['n']} seed(s)")


def register(subparsers: Any) -> None:
    """Add the ``text`` and ``text-sweep`` subcommands."""
    options.add_experiment_commands(
        subparsers, "text", __doc__, add_options=_add_options, run=_run, sweep=_sweep,
        summary="IMDb / sentence-polarity comparison of l_p-MD, SGD and Adam on a transformer",
    )
