"""``mirrorattn report DIR``: redraw report.md from the results saved in DIR (no training)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _main(args: argparse.Namespace) -> int:
    from mirrorattn.report.build import build_report, collect_claims

    if not Path(args.dir).is_dir():
        raise ValueError(f"DIR {args.dir} is not a folder; give the results folder written by mirrorattn reproduce")
    path = build_report(args.dir)
    for c in collect_claims(args.dir):
        print(f"  {c.verdict:>15}  {c.title}")
    print(f"report: {path}")
    return 0


def register(subparsers: Any) -> None:
    """Add the ``report`` subcommand."""
    p = subparsers.add_parser("report", help="write DIR/report.md from the results saved in DIR (no training)",
                              description=__doc__)
    p.add_argument("dir", type=Path, help="results folder written by `mirrorattn reproduce`")
    p.set_defaults(func=_main)
