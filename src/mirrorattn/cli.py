"""The ``mirrorattn`` command line.

Each subcommand lives beside the code it drives and exposes ``register(subparsers)``, which
adds its parser and sets ``func`` (a callable taking the parsed namespace and returning an exit
code). Errors that are the user's (bad config, missing data, infeasible SVM...) are printed as
one line, without a traceback; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

#: (module, what it adds) - the modules that register subcommands
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "mirrorattn.svm.cli",
    "mirrorattn.experiments.synthetic.cli",
    "mirrorattn.experiments.text_cli",
    "mirrorattn.experiments.vision_cli",
    "mirrorattn.experiments.reproduce",
    "mirrorattn.report.cli",
)


def add_subcommands(subparsers: argparse._SubParsersAction, modules: Sequence[str]) -> None:
    """Import each module and let its ``register(subparsers)`` add its subcommand(s)."""
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # that part of the package is not installed / not written yet
            raise
        module.register(subparsers)


def build_parser() -> argparse.ArgumentParser:
    from mirrorattn import __version__

    parser = argparse.ArgumentParser(
        prog="mirrorattn",
        description="l_p mirror descent for softmax attention: optimizer, max-margin solvers, experiments.",
    )
    parser.add_argument("--version", action="version", version=f"mirrorattn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    add_subcommands(parser.add_subparsers(dest="command", metavar="COMMAND"), SUBCOMMAND_MODULES)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types reported as one clear line instead of a traceback."""
    from mirrorattn.config import ConfigError
    from mirrorattn.data.paths import DataNotFoundError

    errors: list[type[BaseException]] = [ConfigError, DataNotFoundError, ValueError, FileNotFoundError]
    try:
        from mirrorattn.svm import SVMError  # type: ignore[attr-defined]

        errors.append(SVMError)
    except ImportError:
        pass
    return tuple(errors)


def dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace, prog: str) -> int:
    """Run the parsed subcommand; user errors become one line on stderr (exit 1), not a traceback."""
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except user_errors() as exc:
        if args.debug:
            raise
        print(f"{prog} {args.command}: error: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    return dispatch(parser, parser.parse_args(argv), "mirrorattn")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
