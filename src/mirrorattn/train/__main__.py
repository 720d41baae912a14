"""``python -m mirrorattn.train text|vision ...`` - also the entry point for ``torchrun``.

Example (2 CPU processes, gloo)::

    torchrun --standalone --nproc_per_node 2 -m mirrorattn.train text --dataset polarity --preset quick --out runs/p

Each process runs the same experiment command; :func:`mirrorattn.train.fit` joins the process
group from torchrun's environment, splits every global batch across the processes, and only
rank 0 writes files and shows progress bars.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

#: experiment modules whose ``register(subparsers)`` adds a subcommand that trains with ``fit``
TRAIN_COMMAND_MODULES = ("mirrorattn.experiments.text_cli", "mirrorattn.experiments.vision_cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mirrorattn.train",
        description="Train a text or vision experiment (works under torchrun for DDP: "
        "torchrun --standalone --nproc_per_node N -m mirrorattn.train text ...).",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in TRAIN_COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # that experiment is not installed / not written yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from mirrorattn.cli import user_errors
    from mirrorattn.train.distributed import shutdown_distributed

    parser = build_parser()
    args = parser.parse_args(argv)
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
        print(f"mirrorattn.train {args.command}: error: {exc}", file=sys.stderr)
        return 1
    finally:
        shutdown_distributed()


if __name__ == "__main__":
    sys.exit(main())
