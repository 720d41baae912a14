"""Command-line options shared by ``mirrorattn text`` and ``mirrorattn vision`` and their ``-sweep`` commands.

Every scalar field of the experiment's config dataclass is an option (``--epochs 1``,
``--no-bias``, ``--grad-clip none``, ``--sweep-epochs 1``; :func:`add_config_options`), applied
after the preset and the ``--config`` TOML file (:func:`config_from_args`). ``--optimizers a,b,c``
names the compared optimizers (multi-key specs work: ``adam,lp-md:p=1.1,normalized=true``, or
separate with ';'; :func:`mirrorattn.optim.registry.split_optimizer_list`); ``--lr 3e-3`` sets
every optimizer's step, ``--lr adam=1e-3,lp-md:1.1=5e-2`` single ones (:func:`apply_lr_option`). The step-size sweep
(:mod:`mirrorattn.experiments.sweep`): ``EXP-sweep`` writes ``OUT/sweep.json``, ``EXP --lr-from
OUT/sweep.json`` takes its chosen steps (:func:`steps_from_sweep`), ``--sweep-lrs 1e-3,1e-2`` is
one grid for every optimizer (:func:`sweep_overrides`), ``--workers N`` trains N runs at once
(:func:`add_sweep_options`); :func:`add_experiment_commands` registers ``EXP`` and ``EXP-sweep``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from mirrorattn.config import NONE

__all__ = [
    "NONE",
    "SWEEP_FIELDS",
    "add_command",
    "add_config_options",
    "add_experiment_commands",
    "add_process_options",
    "add_run_options",
    "add_sweep_options",
    "apply_lr_option",
    "config_from_args",
    "print_sweep",
    "run_sweep_command",
    "set_threads",
    "split_list",
    "steps_from_sweep",
    "sweep_overrides",
]

#: config fields set by the sweep options (not by the generic field options)
SWEEP_FIELDS = ("sweep_lrs", "sweep_grids")

C = TypeVar("C")


def _show_value(value: Any) -> str:
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else f"{value:g}" \
        if isinstance(value, float) else str(value)


def preset_note(name: str, default: Any, presets: Mapping[str, Mapping[str, Any]]) -> str:
    """How the presets set field ``name``: ``"quick 2; converge 500"``; for per-data-set presets (keys
    ``"preset/dataset"``) ``"quick: digits 20, cifar10 7"`` (one value when all its data sets agree). Presets
    that leave the field at ``default`` are not named; '' when none sets it."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for key, values in presets.items():
        preset, _, dataset = key.partition("/")
        groups.setdefault(preset, []).append((dataset, _show_value(values.get(name, default))))
    parts = []
    for preset, items in groups.items():
        shown = {v for _, v in items}
        if len(shown) == 1:
            if shown != {_show_value(default)}:
                parts.append(f"{preset} {items[0][1]}")
        else:
            parts.append(f"{preset}: " + ", ".join(f"{d} {v}" for d, v in items))
    return "; ".join(parts)


def option_help(doc: str, default: Any, note: str) -> str:
    """An option's help text: the field's documentation, its default and the presets' values (argparse-escaped)."""
    text = f"{doc.rstrip('.')} (default {_show_value(default)}" + (f"; presets: {note})" if note else ")")
    return text.replace("``", "").replace("%", "%%")


def add_config_options(p: argparse.ArgumentParser, cls: type, special: Iterable[str],
                       presets: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """One ``--field-name`` option per scalar field of the config dataclass ``cls`` (except ``special``).

    The fields are those of :func:`mirrorattn.config.flat_fields` (a nested config's fields by their own names:
    ``--epochs``). Values are parsed by the field's type, ``none`` for optional fields; booleans get ``--x`` /
    ``--no-x``. The help of each is the field's ``#:`` documentation (:func:`mirrorattn.config.field_docs`), its default
    and the values ``presets`` (name -> field values; ``"preset/dataset"`` keys for per-data-set presets) give it.
    """
    from mirrorattn.config import add_field_options, flat_fields

    special = set(special)
    fields = {name: spec for name, spec in flat_fields(cls).items() if name not in special}
    add_field_options(p.add_argument_group("experiment settings (override the preset and --config)"), fields,
                      lambda name, default, doc: option_help(doc or name.replace("_", " "), default,
                                                             preset_note(name, default, presets or {})))


def add_command(subparsers: Any, name: str, summary: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of subcommand ``name``: ``summary`` in the command list, ``doc`` (kept as written) in its help."""
    raw = argparse.RawDescriptionHelpFormatter
    return subparsers.add_parser(name, help=summary, description=doc, formatter_class=raw)


def add_run_options(p: argparse.ArgumentParser, presets: Iterable[str], *, download: str, optimizers: str,
                    lr: str) -> None:
    """``--preset`` (default quick), ``--config``, ``--out``, ``--data-root``, ``--download``, ``--device``,
    ``--optimizers``, ``--lr`` and ``--overwrite``; ``download``, ``optimizers`` and ``lr`` complete their help
    texts."""
    p.add_argument("--preset", choices=sorted(presets), default="quick", help="starting configuration (default quick)")
    p.add_argument("--config", default=None, metavar="FILE.toml", help="TOML file of config fields (after the preset)")
    p.add_argument("--out", required=True, help="output folder (run folders are reused / resumed)")
    p.add_argument("--data-root", default=None, help="data root (default $MIRRORATTN_DATA)")
    p.add_argument("--download", action="store_true", help=f"download {download} if it is missing")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1")
    p.add_argument("--optimizers", default=None,
                   help=f"comma-separated specs, e.g. {optimizers} (multi-key specs: adam,lp-md:p=1.1,normalized=true; "
                        "or separate the specs with ';')")
    p.add_argument("--lr", default=None, help=f"step for all optimizers, or per optimizer: {lr}")
    p.add_argument("--overwrite", action="store_true",
                   help="replace finished runs in --out that have other settings (without it they are kept and the "
                        "command stops before training)")


def add_process_options(p: argparse.ArgumentParser, cls: type, special: Iterable[str],
                        presets: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """``--threads``, ``--no-progress`` and the config-field options (:func:`add_config_options`)."""
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per process (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_options(p, cls, special, presets)


def split_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [t.strip() for t in text.split(",") if t.strip()]


def config_from_args(cls: type[C], preset: Mapping[str, Any], args: argparse.Namespace, special: Iterable[str],
                     overrides: Mapping[str, Any] | None = None) -> C:
    """A ``cls`` config: ``preset``, then ``--config``, then the options (``none``: the field is set to None).

    The options are the config-field options (fields not in ``special``), ``--data-root``,
    ``--download``, ``--device`` and ``--optimizers``, then ``overrides`` (the command's own).
    """
    from mirrorattn.config import build_config, flat_fields

    special = set(special)
    given: dict[str, Any] = {name: getattr(args, name) for name in flat_fields(cls)
                             if name not in special and getattr(args, name, None) is not None}
    if args.data_root is not None:
        given["data_root"] = args.data_root
    if args.download:
        given["download"] = True
    if args.device is not None:
        given["device"] = args.device
    if args.optimizers is not None:
        from mirrorattn.optim.registry import split_optimizer_list

        given["optimizers"] = tuple(split_optimizer_list(args.optimizers))
    given.update(overrides or {})
    config = build_config(cls, preset, args.config, {k: v for k, v in given.items() if v is not NONE})
    for name in [k for k, v in given.items() if v is NONE]:
        setattr(config, name, None)
    return config


def apply_lr_option(config: Any, text: str | None, lrs: Mapping[str, float]) -> None:
    """Set ``config.lrs`` to ``lrs`` updated by ``--lr`` OPT=STEP pairs, or, for ``--lr STEP``, ``config.lr``
    to STEP and ``config.lrs`` to {} (every optimizer takes STEP). ``ValueError`` (one line) for what cannot be
    read: no optimizer before '=', an optimizer spec that does not parse, a step that is not a positive number.

    The pairs are split like ``--optimizers`` (:func:`~mirrorattn.optim.registry.split_optimizer_list`), the
    step after the last '=': ``lp-md:p=1.1,normalized=true=5e-2,adam=1e-3``.
    """
    from mirrorattn.optim.registry import split_optimizer_list

    lrs = dict(lrs)
    if text is not None and "=" in text:
        for item in split_optimizer_list(text):
            try:
                pairs = [_lr_pair(item)]
            except ValueError:
                if ";" in text or "," not in item:
                    raise
                pairs = [_lr_pair(piece) for piece in split_list(item)]  # not one spec: each piece's own error
            lrs.update(pairs)
    elif text is not None:
        config.lr = _positive_step(text, f"--lr: expected a number or OPT=STEP pairs, got {text!r}")
        lrs = {}
    config.lrs = lrs


def _lr_pair(item: str) -> tuple[str, float]:
    """``"adam=1e-3"`` -> ``("adam", 1e-3)``; ``ValueError`` (one line) naming what is wrong with ``item``."""
    from mirrorattn.optim.registry import parse_optimizer_spec

    name, eq, value = (part.strip() for part in item.rpartition("="))
    unreadable = f"--lr: cannot read {item!r}; write OPTIMIZER=STEP, e.g. adam=1e-3"
    if not eq:
        raise ValueError(unreadable)
    if not name:
        raise ValueError(f"--lr: {item!r} has no optimizer name before '='; write OPTIMIZER=STEP, e.g. adam=1e-3")
    try:
        parse_optimizer_spec(name)
    except ValueError as exc:
        raise ValueError(f"--lr {item!r}: {exc}") from None
    return name, _positive_step(value, unreadable)


def _positive_step(text: str, unreadable: str) -> float:
    """``text`` as a finite step size > 0; ``ValueError(unreadable)`` if it is no number, another one if not > 0."""
    try:
        step = float(text)
    except ValueError:
        raise ValueError(unreadable) from None
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"--lr: the step must be a positive number, got {text!r}")
    return step


def set_threads(args: argparse.Namespace) -> None:
    """``--threads N``: torch's CPU threads of this process; first, ``ValueError`` unless ``--threads`` and
    ``--workers`` (where the command has them) are positive integers."""
    for option in ("threads", "workers"):
        value = getattr(args, option, None)
        if value is not None and value < 1:
            raise ValueError(f"--{option} must be a positive integer, got {value}")
    if args.threads:
        import torch

        torch.set_num_threads(int(args.threads))


def add_sweep_options(p: argparse.ArgumentParser, *, command: str, sweep: bool) -> None:
    """``--lr-from SWEEP.json`` (not on the sweep command itself), ``--workers`` and ``--sweep-lrs``;
    ``command``: the experiment's run command (``text``), whose sweep is ``command-sweep``."""
    if not sweep:
        p.add_argument("--lr-from", default=None, metavar="SWEEP.json",
                       help=f"use the steps chosen by {command}-sweep (the sweep.json in its --out)")
    p.add_argument("--workers", type=int, default=1,
                   help=f"{'sweep points' if sweep else 'runs'} trained in parallel processes (default 1)")
    p.add_argument("--sweep-lrs", default=None,
                   help="comma-separated step sizes of the sweep grid, one grid for every optimizer (replaces the "
                        "preset's per-optimizer sweep_grids)")


def sweep_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config overrides of ``--sweep-lrs`` (``sweep_lrs`` and empty ``sweep_grids``); {} without it."""
    if getattr(args, "sweep_lrs", None) is None:
        return {}
    try:
        steps = tuple(float(x) for x in split_list(args.sweep_lrs))
    except ValueError:
        raise ValueError(f"--sweep-lrs: expected comma-separated numbers, got {args.sweep_lrs!r}") from None
    return {"sweep_lrs": steps, "sweep_grids": {}}  # one grid for every optimizer


def steps_from_sweep(path: str, command: str) -> dict[str, float]:
    """The chosen steps (optimizer -> step) of a ``sweep.json`` written by ``command-sweep`` (``--lr-from``).

    ``ValueError`` (one line: the file, what is wrong, what to give) for a missing or unreadable file,
    one that is not JSON, has no ``lrs`` table or a step that is not a positive number.
    """
    import json

    from mirrorattn.io import read_json

    hint = f"give the sweep.json written by mirrorattn {command}-sweep"
    try:
        sweep = read_json(path)
    except OSError as exc:
        raise ValueError(f"--lr-from {path}: cannot read it ({exc.strerror or exc}); {hint}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"--lr-from {path}: not a JSON file ({exc}); {hint}") from None
    if not isinstance(sweep, dict) or not isinstance(sweep.get("lrs"), dict):
        raise ValueError(f"--lr-from {path}: no 'lrs' table of chosen steps; {hint}")
    steps: dict[str, float] = {}
    for name, value in sweep["lrs"].items():
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
        if not ok:
            raise ValueError(f"--lr-from {path}: the step of {name} is {value!r}, not a positive number; {hint}")
        steps[str(name)] = float(value)
    return steps


def print_sweep(result: Mapping[str, Any]) -> None:
    """One line per optimizer (chosen step, validation accuracy, stability back-off), then a WARNING line each."""
    for opt, row in result["sweep"].items():
        margin = (f"; {row['backed_off_from']:g} scored higher but the next larger step failed (stability margin)"
                  if row.get("backed_off_from") else "")
        print(f"{opt}: chosen lr {row['best_lr']:g} (validation accuracy {row['best_val_acc']:.4f}{margin})")
    for warning in result["warnings"]:
        print(f"WARNING {warning}")


def run_sweep_command(args: argparse.Namespace, build_config: Callable[[argparse.Namespace], Any],
                      sweep: Callable[..., dict[str, Any]]) -> int:
    """An ``EXP-sweep`` command: ``--threads``, the config, ``sweep(config, out, progress=, workers=)``, the
    chosen steps printed (main process)."""
    from mirrorattn.train import dist_info

    set_threads(args)
    result = sweep(build_config(args), args.out, progress=not args.no_progress, workers=args.workers,
                   overwrite=args.overwrite)
    if dist_info().is_main:
        print_sweep(result)
    return 0


def add_experiment_commands(subparsers: Any, command: str, doc: str | None, *, summary: str,
                            add_options: Callable[[argparse.ArgumentParser, bool], None],
                            run: Callable[[argparse.Namespace], int],
                            sweep: Callable[[argparse.Namespace], int]) -> None:
    """Register ``command`` (``run``) and ``command-sweep`` (``sweep``), both with ``doc`` as their help.

    ``add_options(parser, is_sweep)`` adds the experiment's options; then come the sweep options
    (:func:`add_sweep_options`, ``--workers`` included).
    """
    p = add_command(subparsers, command, summary, doc)
    add_options(p, False)
    add_sweep_options(p, command=command, sweep=False)
    p.set_defaults(func=run)
    s = add_command(subparsers, f"{command}-sweep", "choose each optimizer's step size on the validation split "
                    "(writes sweep.json)", doc)
    add_options(s, True)
    add_sweep_options(s, command=command, sweep=True)
    s.set_defaults(func=sweep)
