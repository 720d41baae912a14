"""``python -m mirrorattn.torchrun text|vision ...`` - the entry point for ``torchrun`` (DDP).

Example (2 CPU processes, gloo)::

    torchrun --standalone --nproc_per_node 2 -m mirrorattn.torchrun text --dataset polarity --preset quick --out runs/p

Each process runs the same experiment command; :func:`mirrorattn.train.fit` joins the process
group from torchrun's environment, splits every global batch across the processes, and only
rank 0 writes files and shows progress bars. It is part of the command line (beside
:mod:`mirrorattn.cli`), so that the ``train`` layer imports nothing above it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from mirrorattn.cli import add_subcommands, dispatch

#: experiment modules whose ``register(subparsers)`` adds a subcommand that trains with ``fit``
TRAIN_COMMAND_MODULES = ("mirrorattn.experiments.text_cli", "mirrorattn.experiments.vision_cli")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m mirrorattn.torchrun``: the ``text`` and ``vision`` commands (and their sweeps)."""
    parser = argparse.ArgumentParser(
        prog="python -m mirrorattn.torchrun",
        description="Train a text or vision experiment (works under torchrun for DDP: "
        "torchrun --standalone --nproc_per_node N -m mirrorattn.torchrun text ...).",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    add_subcommands(parser.add_subparsers(dest="command", metavar="COMMAND"), TRAIN_COMMAND_MODULES)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command of ``argv`` (default: ``sys.argv``), then leave the process group; the exit code.

    Run as ``python -m mirrorattn.torchrun`` by torchrun, the process then ends by
    :func:`mirrorattn.train.distributed.exit_process` (no interpreter teardown: torch keeps an FSDP2 process
    group alive past ``destroy_process_group``, and its threads can abort the teardown)."""
    from mirrorattn.train.distributed import shutdown_distributed

    parser = build_parser()
    try:
        return dispatch(parser, parser.parse_args(argv), "mirrorattn.torchrun")
    finally:
        shutdown_distributed()


if __name__ == "__main__":
    from mirrorattn.train.distributed import exit_process, launched_by_torchrun

    code = main()
    if launched_by_torchrun():
        exit_process(code)
    sys.exit(code)
