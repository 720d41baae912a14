"""``mirrorattn reproduce``: run the paper's experiments that the data allows, then write the report.

Steps run in order, each into its own folder under ``--out``; each experiment reuses its finished
runs (same config hash) and resumes interrupted ones, so an interrupted reproduce started again
redoes nothing that finished. ``reproduce.json`` records each step's status (done / skipped with
the reason and how to get the data / failed with the error), and ``report.md`` is built from the
saved results at the end (``mirrorattn report DIR`` redraws it).

Presets:

- ``quick`` (``make demo``, minutes on a 2-core CPU, no download, no data root): the synthetic suite
  at reduced size, the ViT on scikit-learn's 8x8 digits, and the text transformer on the embedded
  sentence polarity data, trained to 99.5 % training accuracy (the ``converge`` text preset).
- ``cpu`` (hours on a 2-core CPU): the synthetic suite with the paper's settings, the converge text
  preset on sentence polarity (3 seeds, 4 optimizers), and the short-training quick presets on IMDb
  and CIFAR-10 (folders ``*-quick``: the report lists them apart, without verdicts) and digits.
- ``paper`` (GPU): the authors' configurations everywhere (paper.md section 5).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mirrorattn.io import read_json, write_json


@dataclass
class Step:
    """One experiment of a reproduce preset: a ``mirrorattn`` command line and its data needs."""

    name: str  # also the folder under --out, e.g. "synthetic", "text/imdb"
    argv: list[str]
    needs: str | None = None  # "imdb", "polarity", "cifar10", "fashion-mnist" or None (embedded)
    how_to_get: str = ""
    options: dict[str, Any] = field(default_factory=dict)


_GET = {
    "imdb": "put aclImdb_v1.tar.gz (or the extracted aclImdb/) under the data root (--data-root or MIRRORATTN_DATA), "
            "or pass --download",
    "polarity": "put sentence_polarity.zip (Pang & Lee rt-polarity) under the data root (--data-root or "
                "MIRRORATTN_DATA)",
    "cifar10": "put cifar-10-python.tar.gz (or a class-folder tarball) under the data root, or pass --download",
}

#: the demo's real-data runs, one torch thread per run (tiny models: threads only add overhead). Text: the
#: converge preset (trained toward 99.5 % training accuracy) on the embedded sentence polarity data, shrunk to
#: fit minutes: a 2,000-sentence training pool (which the rule is reached on far sooner, but which generalises
#: worse: docs/results/converge_probes.md), width 64, at most 150 epochs, two seeds of l_1.1-MD, GD and Adam,
#: two runs at once; vision: the digits quick preset as it is (its own epochs), two seeds
_DEMO_TEXT = ["--seeds", "2", "--optimizers", "lp-md:1.1,lp-md:2,adam", "--max-train", "2000", "--width", "64",
              "--epochs", "150", "--workers", "2", "--threads", "1"]
_DEMO_VISION = ["--seeds", "2", "--optimizers", "adam,lp-md:1.1,sgd", "--threads", "1"]


def preset_steps(preset: str) -> list[Step]:
    """The steps of a reproduce preset (``quick``, ``cpu`` or ``paper``)."""
    if preset == "quick":
        return [
            Step("synthetic", ["synthetic", "all", "--preset", "quick"]),
            Step("vision/digits", ["vision", "--dataset", "digits", "--preset", "quick", *_DEMO_VISION]),
            Step("text/polarity", ["text", "--dataset", "polarity", "--preset", "converge", *_DEMO_TEXT]),
        ]
    if preset == "tiny":  # seconds; for the tests of reproduce itself, not for conclusions
        return [
            Step("synthetic", ["synthetic", "all", "--preset", "quick", "--seeds", "2", "--iterations", "300",
                               "--grid-points", "8"]),
            Step("vision/digits", ["vision", "--dataset", "digits", "--preset", "quick", "--seeds", "1", "--epochs",
                                   "1", "--optimizers", "adam,lp-md:1.1", "--width", "16", "--depth", "1", "--heads",
                                   "2", "--mlp-hidden", "32", "--max-train", "400", "--max-test", "200"]),
            Step("text/polarity", ["text", "--dataset", "polarity", "--preset", "converge", "--seeds", "1",
                                   "--epochs", "2", "--warmup-epochs", "1", "--optimizers", "lp-md:1.1,lp-md:2",
                                   "--max-train", "400",
                                   "--max-test", "200", "--width", "16", "--vocab-size", "2000", "--max-length", "32",
                                   "--analysis-samples", "100"]),
        ]
    if preset == "cpu":
        return [
            Step("synthetic", ["synthetic", "all", "--preset", "paper"]),
            Step("vision/digits", ["vision", "--dataset", "digits", "--preset", "quick"]),
            Step("text/polarity", ["text", "--dataset", "polarity", "--preset", "converge"]),
            Step("text/imdb-quick", ["text", "--dataset", "imdb", "--preset", "quick"], needs="imdb"),
            Step("vision/cifar10-quick", ["vision", "--dataset", "cifar10", "--preset", "quick"], needs="cifar10"),
        ]
    if preset == "paper":
        return [
            Step("synthetic", ["synthetic", "all", "--preset", "paper"]),
            Step("text/imdb", ["text", "--dataset", "imdb", "--preset", "paper"], needs="imdb"),
            Step("vision/cifar10", ["vision", "--dataset", "cifar10", "--preset", "paper"], needs="cifar10"),
        ]
    raise ValueError(f"unknown reproduce preset {preset!r}; choose {', '.join(PRESETS)}")


#: the reproduce presets; "tiny" exists for the tests of reproduce itself
PRESETS = ("quick", "cpu", "paper", "tiny")


def data_available(kind: str, data_root: str | None, download: bool) -> tuple[bool, str]:
    """Whether the data set ``kind`` is under the data root (or may be downloaded); the reason when not."""
    from mirrorattn.data.paths import data_root as resolve_root

    if download and kind in ("imdb", "cifar10"):
        return True, ""
    root = resolve_root(data_root)
    if kind == "imdb":
        from mirrorattn.data.text_sources import imdb_candidates as candidates
    elif kind == "polarity":
        from mirrorattn.data.text_sources import polarity_candidates as candidates
    elif kind == "cifar10":
        from mirrorattn.data.vision import _cifar_candidates as candidates
    else:
        raise ValueError(f"unknown data set {kind!r}")
    if any(p.exists() for p in candidates(root)):
        return True, ""
    if kind == "polarity":
        from mirrorattn.data.text_sources import EMBEDDED_POLARITY

        if EMBEDDED_POLARITY.is_file():  # the package's own copy
            return True, ""
    return False, f"{kind} data not found under the data root {root}; to run it, {_GET[kind]}"


def check_only(preset: str, only: list[str] | None) -> None:
    """``ValueError`` (one line, listing the preset's steps) when ``only`` names a step that ``preset`` lacks."""
    known = [step.name for step in preset_steps(preset)]
    unknown = [name for name in only or () if name not in known]
    if unknown:
        raise ValueError(f"--only: unknown step(s) {', '.join(map(repr, unknown))} for preset {preset!r}; "
                         f"its steps are: {', '.join(known)}")


def read_record(path: Path) -> dict[str, Any]:
    """The status record ``reproduce.json`` at ``path`` ({} when absent).

    A file that is not a JSON object with a ``steps`` table (cut short, corrupt) is reproduce's own record, so
    it is started afresh ({}), with one line on stderr saying so: the steps' finished runs are still reused.
    """
    import sys

    if not path.is_file():
        return {}
    try:
        record = read_json(path)
    except ValueError as exc:  # mirrorattn.io.CorruptFileError, json.JSONDecodeError, UnicodeDecodeError
        why = f"cannot be read ({getattr(exc, 'why', exc)})"
    else:
        if isinstance(record, dict) and isinstance(record.get("steps", {}), dict):
            return record
        why = "is not a reproduce status record"
    print(f"note: {path} {why}; starting a new record (finished runs are still reused)", file=sys.stderr)
    return {}


def run_reproduce(
    preset: str,
    out: str | Path,
    *,
    data_root: str | None = None,
    download: bool = False,
    workers: int = 1,
    progress: bool = True,
    only: list[str] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the steps of ``preset`` into ``out`` and build ``out/report.md``; return the status record."""
    from mirrorattn.cli import main as cli_main
    from mirrorattn.report import build_report

    check_only(preset, only)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    status_path = out / "reproduce.json"
    record = read_record(status_path)
    if record.get("preset") not in (None, preset):
        log(f"note: {out} holds a reproduce of preset {record['preset']!r}; its finished runs are reused where "
            f"their settings match")
    now = _dt.datetime.now().isoformat(timespec="seconds")
    record.update({"preset": preset, "started": record.get("started") or now})
    steps = record.setdefault("steps", {})
    for step in preset_steps(preset):
        if only and step.name not in only:
            continue
        if step.needs:
            ok, reason = data_available(step.needs, data_root, download)
            if not ok:
                log(f"[skip] {step.name}: {reason}")
                steps[step.name] = {"status": "skipped", "reason": reason}
                write_json(status_path, record)
                continue
        argv = [*step.argv, "--out", str(out / step.name)]
        if step.argv[0] in ("text", "vision"):
            if data_root:
                argv += ["--data-root", str(data_root)]
            if download and step.needs in ("imdb", "cifar10"):
                argv += ["--download"]
            if not progress:
                argv += ["--no-progress"]
        elif not progress:
            argv += ["--no-progress"]
        if step.argv[0] == "synthetic" and workers > 1:
            argv += ["--workers", str(workers)]
        log(f"[run] {step.name}: mirrorattn {' '.join(argv)}")
        steps[step.name] = {"status": "running", "argv": argv}
        write_json(status_path, record)
        t0 = time.perf_counter()
        try:
            rc, error = cli_main(argv), ""
        except Exception as exc:  # a bug in one experiment must not stop the others: report it, go on
            traceback.print_exc()
            rc, error = 1, f"{type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - t0
        steps[step.name] = {"status": "done" if rc == 0 else "failed", "argv": argv, "seconds": seconds,
                            "exit_code": rc}
        if rc != 0:
            why = error or "see the error above"
            steps[step.name]["reason"] = f"`mirrorattn {' '.join(argv)}` failed ({why})"
            log(f"[fail] {step.name}: {why}")
        write_json(status_path, record)
    record["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
    write_json(status_path, record)
    report = build_report(out)
    log(f"report: {report}")
    return record


def _main(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise ValueError(f"--workers must be a positive integer, got {args.workers}")
    record = run_reproduce(args.preset, args.out, data_root=args.data_root, download=args.download,
                           workers=args.workers, progress=not args.no_progress, only=args.only)
    from mirrorattn.report import collect_claims

    for c in collect_claims(args.out):
        print(f"  {c.verdict:>15}  {c.title}")
    failed = [k for k, v in record["steps"].items() if v.get("status") == "failed"]
    return 1 if failed else 0


def register(subparsers: Any) -> None:
    """Add the ``reproduce`` subcommand."""
    p = subparsers.add_parser("reproduce", help="run the paper's experiments the data allows and write a report",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=PRESETS, default="quick",
                   help="quick (minutes, demo), cpu (hours on a CPU), paper (the authors' settings, GPU); "
                   "tiny (seconds, for tests)")
    p.add_argument("--out", type=Path, default=Path("results/reproduce"), help="results folder (default %(default)s)")
    p.add_argument("--data-root", default=None, help="data root (default $MIRRORATTN_DATA)")
    p.add_argument("--download", action="store_true", help="download IMDb / CIFAR-10 when missing")
    p.add_argument("--workers", type=int, default=1, help="worker processes for the synthetic suite")
    p.add_argument("--only", nargs="+", default=None, metavar="STEP",
                   help="run only these steps (e.g. synthetic text/polarity); the report covers all results present")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_main)
