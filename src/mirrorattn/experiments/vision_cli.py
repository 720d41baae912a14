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
import dataclasses
from typing import Any

# the option helpers of the text command (same conventions)
from mirrorattn.experiments.text_cli import NONE, _split_list, add_config_options

__all__ = ["build_vision_config", "register"]

_SPECIAL = {"dataset", "optimizers", "lrs", "lr", "data_root", "download", "device"}


def _add_config_options(p: argparse.ArgumentParser) -> None:
    from mirrorattn.experiments.vision import VisionExperimentConfig

    add_config_options(p, VisionExperimentConfig, _SPECIAL)


def _parse_lrs(text: str, lrs: dict[str, float]) -> tuple[dict[str, float], float | None]:
    """``--lr`` value -> (per-optimizer steps, common step or None)."""
    if "=" not in text:
        try:
            return {}, float(text)
        except ValueError:
            raise ValueError(f"--lr: expected a number or OPT=STEP pairs, got {text!r}") from None
    lrs = dict(lrs)
    for item in _split_list(text):
        name, _, value = item.rpartition("=")
        try:
            lrs[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--lr: cannot read {item!r}; write OPTIMIZER=STEP, e.g. adam=1e-3") from None
    return lrs, None


def build_vision_config(args: argparse.Namespace):
    """The :class:`VisionExperimentConfig` of parsed arguments: preset, then ``--config``, then options."""
    from mirrorattn.config import build_config
    from mirrorattn.experiments.vision import VisionExperimentConfig, preset_values

    dataset = (args.dataset or "digits").lower()
    preset = preset_values(args.preset, dataset)
    overrides: dict[str, Any] = {}
    for f in dataclasses.fields(VisionExperimentConfig):
        if f.name not in _SPECIAL and getattr(args, f.name, None) is not None:
            overrides[f.name] = getattr(args, f.name)
    if args.data_root is not None:
        overrides["data_root"] = args.data_root
    if args.download:
        overrides["download"] = True
    if args.device is not None:
        overrides["device"] = args.device
    if args.optimizers is not None:
        overrides["optimizers"] = tuple(_split_list(args.optimizers))
    nones = [k for k, v in overrides.items() if v is NONE]  # "--max-train none": set the field to None
    given = {k: v for k, v in overrides.items() if v is not NONE}
    config = build_config(VisionExperimentConfig, preset, args.config, given)
    for name in nones:
        setattr(config, name, None)
    if config.dataset != dataset:
        raise ValueError(f"--config sets dataset {config.dataset!r} but the preset was chosen for {dataset!r}; "
                         "pass --dataset instead")
    # steps of optimizers that are not run are dropped (the preset names steps for its default optimizers)
    lrs = {k: v for k, v in config.lrs.items() if k in config.optimizers}
    if args.lr is not None:
        lrs, common = _parse_lrs(args.lr, lrs)
        if common is not None:
            config.lr = common
    config.lrs = lrs
    config.validate()
    return config


def _run(args: argparse.Namespace) -> int:
    from mirrorattn.experiments.vision import run_vision_experiment
    from mirrorattn.train import dist_info

    if args.threads:
        import torch

        torch.set_num_threads(int(args.threads))
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
    from mirrorattn.experiments.vision import PRESETS

    p = subparsers.add_parser(
        "vision",
        help="CIFAR-10 / Fashion-MNIST / digits comparison of l_p-MD, Adam and SGD on a vision transformer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", default=None, choices=DATASETS, help="data set (default digits, no download needed)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick", help="starting configuration (default quick)")
    p.add_argument("--config", default=None, metavar="FILE.toml", help="TOML file of config fields (after the preset)")
    p.add_argument("--out", required=True, help="output folder (run folders are reused / resumed)")
    p.add_argument("--data-root", default=None, help="data root (default $MIRRORATTN_DATA)")
    p.add_argument("--download", action="store_true", help="download the data set if it is missing")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1")
    p.add_argument("--optimizers", default=None, help="comma-separated specs, e.g. adam,lp-md:1.1,sgd")
    p.add_argument("--lr", default=None, help="step for all optimizers, or per optimizer: adam=1e-3,lp-md:1.1=5e-2")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per process (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_config_options(p)
    p.set_defaults(func=_run)
