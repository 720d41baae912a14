"""Command-line options shared by ``mirrorattn text`` and ``mirrorattn vision``.

Every scalar field of the experiment's config dataclass is an option (``--epochs 1``,
``--no-bias``, ``--grad-clip none``; :func:`add_config_options`), applied after the preset and the
``--config`` TOML file (:func:`config_from_args`). ``--optimizers a,b,c`` names the compared
optimizers; ``--lr 3e-3`` sets every optimizer's step, ``--lr adam=1e-3,lp-md:1.1=5e-2`` single
ones (:func:`apply_lr_option`).
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

__all__ = [
    "NONE",
    "add_command",
    "add_config_options",
    "add_process_options",
    "add_run_options",
    "apply_lr_option",
    "config_from_args",
    "set_threads",
    "split_list",
]

C = TypeVar("C")


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


def add_config_options(p: argparse.ArgumentParser, cls: type, special: Iterable[str]) -> None:
    """One ``--field-name`` option per scalar field of the config dataclass ``cls`` (except ``special``).

    Values are parsed by the field's type, ``none`` for optional fields; booleans get ``--x`` / ``--no-x``.
    """
    special = set(special)
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


def add_command(subparsers: Any, name: str, summary: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of subcommand ``name``: ``summary`` in the command list, ``doc`` (kept as written) in its help."""
    raw = argparse.RawDescriptionHelpFormatter
    return subparsers.add_parser(name, help=summary, description=doc, formatter_class=raw)


def add_run_options(p: argparse.ArgumentParser, presets: Iterable[str], *, download: str, optimizers: str,
                    lr: str) -> None:
    """``--preset`` (default quick), ``--config``, ``--out``, ``--data-root``, ``--download``, ``--device``,
    ``--optimizers`` and ``--lr``; ``download``, ``optimizers`` and ``lr`` complete their help texts."""
    p.add_argument("--preset", choices=sorted(presets), default="quick", help="starting configuration (default quick)")
    p.add_argument("--config", default=None, metavar="FILE.toml", help="TOML file of config fields (after the preset)")
    p.add_argument("--out", required=True, help="output folder (run folders are reused / resumed)")
    p.add_argument("--data-root", default=None, help="data root (default $MIRRORATTN_DATA)")
    p.add_argument("--download", action="store_true", help=f"download {download} if it is missing")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1")
    p.add_argument("--optimizers", default=None, help=f"comma-separated specs, e.g. {optimizers}")
    p.add_argument("--lr", default=None, help=f"step for all optimizers, or per optimizer: {lr}")


def add_process_options(p: argparse.ArgumentParser, cls: type, special: Iterable[str]) -> None:
    """``--threads``, ``--no-progress`` and the config-field options (:func:`add_config_options`)."""
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per process (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_options(p, cls, special)


def split_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [t.strip() for t in text.split(",") if t.strip()]


def config_from_args(cls: type[C], preset: Mapping[str, Any], args: argparse.Namespace, special: Iterable[str],
                     overrides: Mapping[str, Any] | None = None) -> C:
    """A ``cls`` config: ``preset``, then ``--config``, then the options (``none``: the field is set to None).

    The options are the config-field options (fields not in ``special``), ``--data-root``,
    ``--download``, ``--device`` and ``--optimizers``, then ``overrides`` (the command's own).
    """
    from mirrorattn.config import build_config

    special = set(special)
    given: dict[str, Any] = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
                             if f.name not in special and getattr(args, f.name, None) is not None}
    if args.data_root is not None:
        given["data_root"] = args.data_root
    if args.download:
        given["download"] = True
    if args.device is not None:
        given["device"] = args.device
    if args.optimizers is not None:
        given["optimizers"] = tuple(split_list(args.optimizers))
    given.update(overrides or {})
    config = build_config(cls, preset, args.config, {k: v for k, v in given.items() if v is not NONE})
    for name in [k for k, v in given.items() if v is NONE]:
        setattr(config, name, None)
    return config


def apply_lr_option(config: Any, text: str | None, lrs: Mapping[str, float]) -> None:
    """Set ``config.lrs`` to ``lrs`` updated by ``--lr`` OPT=STEP pairs, or, for ``--lr STEP``, ``config.lr``
    to STEP and ``config.lrs`` to {} (every optimizer takes STEP). ``ValueError`` for what cannot be read."""
    lrs = dict(lrs)
    if text is not None and "=" in text:
        for item in split_list(text):
            name, _, value = item.rpartition("=")
            try:
                lrs[name.strip()] = float(value)
            except ValueError:
                raise ValueError(f"--lr: cannot read {item!r}; write OPTIMIZER=STEP, e.g. adam=1e-3") from None
    elif text is not None:
        try:
            config.lr = float(text)
        except ValueError:
            raise ValueError(f"--lr: expected a number or OPT=STEP pairs, got {text!r}") from None
        lrs = {}
    config.lrs = lrs


def set_threads(args: argparse.Namespace) -> None:
    """``--threads N``: torch's CPU threads of this process."""
    if args.threads:
        import torch

        torch.set_num_threads(int(args.threads))
