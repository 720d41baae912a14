"""The ``mirrorattn`` command line.

Each subcommand lives beside the code it drives and exposes ``register(subparsers)``, which
adds its parser and sets ``func`` (a callable taking the parsed namespace and returning an exit
code). Errors that are the user's (bad config, missing data, infeasible SVM...) are printed as
one line, without a traceback; ``--debug`` shows the traceback. So are the operating system's
(:func:`describe_os_error`: an unwritable ``--out``, a full disk, a read-only file system), and
the outputs named on the command line are checked before the subcommand runs
(:func:`check_outputs`: an existing file given as the ``--out`` folder, a folder without write
permission).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from pathlib import Path
from typing import Sequence

#: (module, what it adds) - the modules that register subcommands
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "mirrorattn.svm.cli",
    "mirrorattn.experiments.synthetic.cli",
    "mirrorattn.experiments.text_cli",
    "mirrorattn.experiments.vision_cli",
    "mirrorattn.experiments.analyse_cli",
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
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_subcommands(subparsers, SUBCOMMAND_MODULES)
    register_reproduce(subparsers)
    return parser


def register_reproduce(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``reproduce`` subcommand: the experiments' steps, then the report (so it lives above both)."""
    from mirrorattn.experiments import reproduce

    p = subparsers.add_parser("reproduce", help="run the paper's experiments the data allows and write a report",
                              description=reproduce.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=reproduce.PRESETS, default="quick",
                   help="quick (minutes, demo), cpu (hours on a CPU), paper (the authors' settings, GPU); "
                   "tiny (seconds, for tests)")
    p.add_argument("--out", type=Path, default=Path("results/reproduce"), help="results folder (default %(default)s)")
    p.add_argument("--data-root", default=None, help="data root (default $MIRRORATTN_DATA)")
    p.add_argument("--download", action="store_true", help="download IMDb / CIFAR-10 when missing")
    p.add_argument("--workers", type=int, default=1, help="worker processes for the synthetic suite")
    p.add_argument("--only", nargs="+", default=None, metavar="STEP",
                   help="run only these steps (e.g. synthetic text/polarity); the report covers all results present")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_reproduce)


def _reproduce(args: argparse.Namespace) -> int:
    """``mirrorattn reproduce``: run the preset's steps, build ``report.md``, print the verdicts; 1 if a step failed."""
    from mirrorattn.experiments.reproduce import run_reproduce
    from mirrorattn.report import build_report, collect_claims

    record = run_reproduce(args.preset, args.out, data_root=args.data_root, download=args.download,
                           workers=args.workers, progress=not args.no_progress, only=args.only)
    print(f"report: {build_report(args.out)}")
    for c in collect_claims(args.out):
        print(f"  {c.verdict:>15}  {c.title}")
    failed = [k for k, v in record["steps"].items() if v.get("status") == "failed"]
    return 1 if failed else 0


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types reported as one clear line instead of a traceback."""
    from mirrorattn.config import ConfigError
    from mirrorattn.data.paths import DataNotFoundError

    errors: list[type[BaseException]] = [ConfigError, DataNotFoundError, ValueError]
    try:
        from mirrorattn.svm import SVMError  # type: ignore[attr-defined]

        errors.append(SVMError)
    except ImportError:
        pass
    return tuple(errors)


#: subcommands whose ``--out`` (and ``--save-w``) name a file; every other ``--out`` is a folder
FILE_OUTPUT_COMMANDS: tuple[str, ...] = ("svm",)

#: how :func:`describe_os_error` words the common causes (errno -> text)
_CAUSES: dict[int, str] = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENOTDIR: "not a directory (a part of the path is a file)",
    errno.EEXIST: "a file of that name exists",
    errno.EISDIR: "is a folder, not a file",
    errno.ENOENT: "no such file or directory",
}


def output_paths(args: argparse.Namespace) -> list[tuple[str, Path, bool]]:
    """(option, path, is a folder) of each output the parsed arguments name: ``--out``, ``--save-w``, report's DIR."""
    folder = getattr(args, "command", None) not in FILE_OUTPUT_COMMANDS
    outputs = [(option, Path(value), folder) for option, value in
               (("--out", getattr(args, "out", None)), ("--save-w", getattr(args, "save_w", None)))
               if value is not None and str(value) != ""]
    if getattr(args, "command", None) == "report" and getattr(args, "dir", None) is not None:
        outputs.append(("DIR", Path(args.dir), True))
    return outputs


def _not_writable(folder: Path) -> str | None:
    """Why results cannot be written into the existing folder ``folder`` (None when they can)."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except OSError:
        pass
    if not os.access(folder, os.W_OK | os.X_OK):
        return "permission denied"
    return None


def check_output(option: str, path: Path, folder: bool) -> None:
    """``ConfigError`` (one line) when results cannot be written to ``path`` (a folder when ``folder``, else a file).

    Refused: an existing file where a folder is wanted (or the reverse), a path under an existing file, a
    nearest existing folder without write permission or on a read-only file system. Nothing is created.
    """
    from mirrorattn.config import ConfigError

    fix = f"choose another {option}"
    if path.exists():
        if folder and not path.is_dir():
            raise ConfigError(f"{option} {path} is an existing file, not a folder; {fix}")
        if not folder and path.is_dir():
            raise ConfigError(f"{option} {path} is an existing folder, not a file name; {fix}")
    parent = path if folder else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"{option} {path}: {parent} is a file, not a folder; {fix}")
    if parent.is_dir():
        why = _not_writable(parent)
        if why:
            raise ConfigError(f"cannot write results to {path}: {why} ({parent}); {fix}")


def check_outputs(args: argparse.Namespace) -> None:
    """:func:`check_output` for every output the parsed arguments name (before the subcommand runs)."""
    for option, path, folder in output_paths(args):
        check_output(option, path, folder)


def _inside(path: Path, other: Path) -> bool:
    """Whether ``path`` is ``other``, inside it or one of its parent folders."""
    a, b = Path(os.path.abspath(path)), Path(os.path.abspath(other))
    return a == b or a in b.parents or b in a.parents


def describe_os_error(exc: OSError, outputs: Sequence[tuple[str, Path, bool]] = ()) -> str:
    """One line for an operating-system error: the path, the cause and, for an output, what to do.

    ``outputs``: (option, path, is a folder) as :func:`output_paths` gives; an error on one of them (or inside
    or above it) reads "cannot write results to PATH: permission denied; choose another --out".
    """
    cause = _CAUSES.get(exc.errno or -1) or (exc.strerror or str(exc) or type(exc).__name__)
    if exc.errno not in _CAUSES and exc.strerror:
        cause = cause[:1].lower() + cause[1:]
    filename = exc.filename if exc.filename is not None else exc.filename2
    if filename is None:
        return f"system error: {cause}"
    path = Path(os.fsdecode(filename))
    for option, out, _ in outputs:
        if _inside(path, out):
            return f"cannot write results to {path}: {cause}; choose another {option}"
    return f"cannot use {path}: {cause}"


def dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace, prog: str) -> int:
    """Run the parsed subcommand; user errors become one line on stderr (exit 1), not a traceback.

    User errors: :func:`user_errors` and every ``OSError`` (worded by :func:`describe_os_error`); the outputs
    are checked first (:func:`check_outputs`). ``--debug`` re-raises them.
    """
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        check_outputs(args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except user_errors() as exc:  # first: the project's errors (DataNotFoundError is also an OSError)
        if getattr(args, "debug", False):
            raise
        print(f"{prog} {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:
        if getattr(args, "debug", False):
            raise
        print(f"{prog} {args.command}: error: {describe_os_error(exc, output_paths(args))}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (line breaks become '; ')."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    return dispatch(parser, parser.parse_args(argv), "mirrorattn")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
