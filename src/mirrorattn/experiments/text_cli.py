"""``mirrorattn text`` (the optimizer comparison) and ``mirrorattn text-sweep`` (step-size selection).

Every field of :class:`~mirrorattn.experiments.text.TextExperimentConfig` is an option
(``--epochs 1``, ``--width 128``, ``--no-bias``, ``--grad-clip none`` ...), applied after the
preset and the ``--config`` TOML file. Special forms: ``--optimizers lp-md:1.1,sgd,adam``;
``--lr 3e-3`` (every optimizer) or ``--lr lp-md:1.1=3e-3,adam=1e-3`` (per optimizer);
``--lr-from OUT/sweep.json`` takes the sweep's chosen steps; ``--sweep-lrs 1e-3,1e-2`` (one grid for
every optimizer, replacing the preset's per-optimizer ``sweep_grids``, which a ``--config`` TOML
file can set). ``--workers N`` trains N runs (or sweep points) at once in separate processes.
``text-sweep`` prints one line per finished (optimizer, step) and, at the end, a WARNING line
when an optimizer's grid is flat, its best is within noise of chance or at the grid's edge.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

__all__ = ["build_text_config", "register"]

_SPECIAL = {"dataset", "optimizers", "lrs", "lr", "sweep_lrs", "sweep_grids", "data_root", "download", "device"}


class _NoneValue:
    """``--grad-clip none``: set the field to None (build_config treats None as "not given")."""

    def __repr__(self) -> str:
        return "none"


NONE = _NoneValue()


def _parse_scalar(kind: Any, text: str, flag: str) -> Any:
    if text.strip().lower() in ("none", "null", "off"):
        return NONE
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{flag}: expected a {kind.__name__} or 'none', got {text!r}") from None


def _field_kind(annotation: Any) -> tuple[Any, bool]:
    """(scalar type, optional) of a config field annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    optional = type(None) in typing.get_args(annotation)
    base = args[0] if optional and args else annotation
    return base, optional


def add_config_options(p: argparse.ArgumentParser, cls: type, special: set[str] | frozenset[str]) -> None:
    """One ``--field-name`` option per scalar field of the config dataclass ``cls`` (except ``special``).

    Shared by the text and vision commands; values are parsed by the field's type, ``none`` for
    optional fields.
    """
    hints = typing.get_type_hints(cls)
    g = p.add_argument_group("experiment settings (override the preset and --config)")
    for f in dataclasses.fields(cls):
        if f.name in special:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind, optional = _field_kind(hints[f.name])
        if kind is bool:
            g.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None)
        elif kind in (int, float, str):
            g.add_argument(flag, dest=f.name, default=None, metavar=kind.__name__.upper(),
                           type=(lambda s, k=kind, fl=flag: _parse_scalar(k, s, fl)))


def _add_config_options(p: argparse.ArgumentParser) -> None:
    from mirrorattn.experiments.text import TextExperimentConfig

    add_config_options(p, TextExperimentConfig, _SPECIAL)


def _add_common(p: argparse.ArgumentParser, sweep: bool) -> None:
    from mirrorattn.experiments.text_presets import PRESETS

    p.add_argument("--dataset", default=None, help="imdb, polarity, or a .jsonl/.csv/.tsv file")
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick", help="starting configuration (default quick)")
    p.add_argument("--config", default=None, metavar="FILE.toml", help="TOML file of config fields (after the preset)")
    p.add_argument("--out", required=True, help="output folder (run folders are reused / resumed)")
    p.add_argument("--data-root", default=None, help="data root (default $MIRRORATTN_DATA)")
    p.add_argument("--download", action="store_true", help="download IMDb if it is missing")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1")
    p.add_argument("--optimizers", default=None, help="comma-separated specs, e.g. lp-md:1.1,lp-md:2,sgd,adam")
    p.add_argument("--lr", default=None, help="step for all optimizers, or per optimizer: lp-md:1.1=3e-3,adam=1e-3")
    if not sweep:
        p.add_argument("--lr-from", default=None, metavar="SWEEP.json", help="use the steps chosen by text-sweep")
    p.add_argument("--workers", type=int, default=1, help="runs trained in parallel processes (default 1)")
    p.add_argument("--sweep-lrs", default=None, help="comma-separated step sizes of the sweep grid")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per process (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_config_options(p)


def _split_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_text_config(args: argparse.Namespace):
    """The :class:`TextExperimentConfig` of parsed arguments: preset, then ``--config``, then options."""
    from mirrorattn.config import build_config
    from mirrorattn.experiments.text import TextExperimentConfig
    from mirrorattn.experiments.text_presets import PRESETS
    from mirrorattn.io import read_json

    preset = dict(PRESETS[args.preset])
    overrides: dict[str, Any] = {}
    for f in dataclasses.fields(TextExperimentConfig):
        if f.name not in _SPECIAL and getattr(args, f.name, None) is not None:
            overrides[f.name] = getattr(args, f.name)
    if args.dataset is not None:
        overrides["dataset"] = args.dataset
    if args.data_root is not None:
        overrides["data_root"] = args.data_root
    if args.download:
        overrides["download"] = True
    if args.device is not None:
        overrides["device"] = args.device
    if args.optimizers is not None:
        overrides["optimizers"] = tuple(_split_list(args.optimizers))
    if args.sweep_lrs is not None:
        try:
            overrides["sweep_lrs"] = tuple(float(x) for x in _split_list(args.sweep_lrs))
        except ValueError:
            raise ValueError(f"--sweep-lrs: expected comma-separated numbers, got {args.sweep_lrs!r}") from None
        overrides["sweep_grids"] = {}  # one grid for every optimizer
    nones = [k for k, v in overrides.items() if v is NONE]
    given = {k: v for k, v in overrides.items() if v is not NONE}
    config = build_config(TextExperimentConfig, preset, args.config, given)
    for name in nones:
        setattr(config, name, None)
    lrs = dict(config.lrs)
    if getattr(args, "lr_from", None):
        sweep = read_json(args.lr_from)
        if "lrs" not in sweep:
            raise ValueError(f"{args.lr_from} is not a sweep.json written by mirrorattn text-sweep (no 'lrs')")
        lrs.update({k: float(v) for k, v in sweep["lrs"].items()})
    if args.lr is not None:
        if "=" in args.lr:
            for item in _split_list(args.lr):
                name, _, value = item.rpartition("=")
                try:
                    lrs[name.strip()] = float(value)
                except ValueError:
                    raise ValueError(f"--lr: cannot read {item!r}; write OPTIMIZER=STEP, e.g. adam=1e-3") from None
        else:
            try:
                step = float(args.lr)
            except ValueError:
                raise ValueError(f"--lr: expected a number or OPT=STEP pairs, got {args.lr!r}") from None
            lrs = {}
            config.lr = step
    config.lrs = lrs
    config.validate()
    return config


def _run(args: argparse.Namespace) -> int:
    from mirrorattn.experiments.text import run_text_experiment

    _threads(args)
    config = build_text_config(args)
    results = run_text_experiment(config, args.out, progress=not args.no_progress, workers=args.workers)
    _print_table(results)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from mirrorattn.experiments.text import run_lr_sweep
    from mirrorattn.train import dist_info

    _threads(args)
    config = build_text_config(args)
    result = run_lr_sweep(config, args.out, progress=not args.no_progress, workers=args.workers)
    if dist_info().is_main:
        for opt, row in result["sweep"].items():
            margin = (f"; {row['backed_off_from']:g} scored higher but the next larger step failed (stability margin)"
                      if row.get("backed_off_from") else "")
            print(f"{opt}: chosen lr {row['best_lr']:g} (validation accuracy {row['best_val_acc']:.4f}{margin})")
        for warning in result["warnings"]:
            print(f"WARNING {warning}")
    return 0


def _threads(args: argparse.Namespace) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(int(args.threads))


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
    p = subparsers.add_parser(
        "text",
        help="IMDb / sentence-polarity comparison of l_p-MD, SGD and Adam on a transformer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(p, sweep=False)
    p.set_defaults(func=_run)
    s = subparsers.add_parser(
        "text-sweep",
        help="choose each optimizer's step size on the validation split (writes sweep.json)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(s, sweep=True)
    s.set_defaults(func=_sweep)
