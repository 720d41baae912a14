"""``mirrorattn synthetic {local,joint,regpath,kq,all}``: the paper's synthetic experiments.

Each subcommand starts from ``--preset`` (paper or quick), then a TOML ``--config`` file, then the
options given on the command line, and writes one run folder to ``--out``. A rerun with the
same settings reuses the finished pieces (an interrupted run resumes). ``all`` writes the four
run folders under ``--out`` (``local/``, ``joint/``, ``regpath/``, ``kq/``); its TOML file has one
table per experiment (``[local]``, ``[joint]``, ...).

``--workers`` (default min(2, CPU count)): a single experiment runs its pieces (one per p) in that
many processes; ``all`` runs the four experiments side by side in that many processes (longest
first), which keeps both cores busy, figures included. Results do not depend on it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import tomllib
from pathlib import Path
from typing import Any, Callable

from mirrorattn.checks import check_int
from mirrorattn.config import ConfigError, build_config
from mirrorattn.experiments.synthetic.presets import PRESETS, preset
from mirrorattn.mirror import P_MAX, P_MIN

__all__ = ["EXPERIMENTS", "default_workers", "experiment_overrides", "register", "run_all", "run_experiment"]


def default_workers() -> int:
    """min(2, CPU count): two processes halve the wall time of the suite on a 2-core machine."""
    return max(1, min(2, os.cpu_count() or 1))


def _experiments() -> dict[str, tuple[type, Callable[..., dict]]]:
    from mirrorattn.experiments.synthetic.joint import JointConfig, run_joint
    from mirrorattn.experiments.synthetic.kq import KQConfig, run_kq
    from mirrorattn.experiments.synthetic.local import LocalConfig, run_local
    from mirrorattn.experiments.synthetic.regpath import RegPathConfig, run_regpath

    return {
        "local": (LocalConfig, run_local),
        "joint": (JointConfig, run_joint),
        "regpath": (RegPathConfig, run_regpath),
        "kq": (KQConfig, run_kq),
    }


EXPERIMENTS = ("local", "joint", "regpath", "kq")
#: the experiments by CPU time with the paper's settings (local ~28 s, kq ~14 s, joint ~10 s, regpath ~7 s)
_LONGEST_FIRST = ("local", "kq", "joint", "regpath")

_HELP = {
    "local": "local convergence of l_p-AttGD to the l_p-AttSVM direction (the paper's main figure)",
    "joint": "joint (W, v) training on the paper's fixed 2-sample data set",
    "regpath": "regularisation path argmin_{||W||_p <= R} L(W) against R",
    "kq": "K/Q parameterisation W = K Q^T against the W form and the nuclear-norm SVM",
    "all": "all four experiments, one run folder each under --out",
}

def _fields() -> dict[str, tuple[Any, Any, str]]:
    """Every field of the four experiments' configs (:func:`mirrorattn.config.flat_fields`), the first
    documented one of each name: every subcommand has the same options (one that an experiment lacks is
    refused by name, :func:`experiment_overrides`)."""
    from mirrorattn.config import flat_fields

    fields: dict[str, tuple[Any, Any, str]] = {}
    for cls, _ in _experiments().values():
        for name, spec in flat_fields(cls).items():
            if not fields.get(name, (None, None, ""))[2]:
                fields[name] = spec
    return fields


def _option_help(name: str, default: Any, doc: str) -> str:
    """The help of a config option: the field's documentation, the default left to the preset."""
    text = doc or name.replace("_", " ")
    if name == "ps":
        text += f", each from {P_MIN:g} to {P_MAX:g}"
    return f"{text} (default: the preset's)".replace("%", "%%")


def _add_options(p: argparse.ArgumentParser, name: str) -> None:
    from mirrorattn.config import add_field_options

    p.add_argument("--preset", choices=sorted(PRESETS), default="paper",
                   help="starting settings: the paper's (default) or a quick reduced run")
    p.add_argument("--out", type=Path, default=None, help=f"run folder (default runs/synthetic/{name})")
    p.add_argument("--config", type=Path, default=None, metavar="FILE.toml", help="TOML file of config fields")
    add_field_options(p.add_argument_group("experiment settings (override the preset and --config)"), _fields(),
                      _option_help, aliases={"ps": ("-p",)})
    p.add_argument("--workers", type=int, default=default_workers(),
                   help="worker processes for independent pieces; 'all' runs the experiments side by side "
                        f"(default min(2, CPU count) = {default_workers()})")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bars")
    p.set_defaults(func=_main, experiment=name)


def register(subparsers: Any) -> None:
    """Add ``synthetic`` with the sub-subcommands local, joint, regpath, kq and all."""
    syn = subparsers.add_parser("synthetic", help="the paper's synthetic experiments (one-layer attention)",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = syn.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    for name in (*EXPERIMENTS, "all"):
        _add_options(sub.add_parser(name, help=_HELP[name], description=_HELP[name]), name)
    syn.set_defaults(func=lambda args: (syn.print_help(), 2)[1])


def experiment_overrides(name: str, values: dict[str, Any], strict: bool = False) -> dict[str, Any]:
    """The config overrides of experiment ``name`` among the option values ``values`` (option -> value or None).

    Only the fields the experiment has (``strict``: a ``ConfigError`` for one it lacks); lists become tuples
    (the config's own type check and ``__post_init__`` take it from there: kq reads equal counts as one).
    """
    from mirrorattn.config import NONE

    cls, _ = _experiments()[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for key in _fields():
        val = values.get(key)
        if val is None:
            continue
        option = f"--{key.replace('_', '-')}"
        if val is NONE or (isinstance(val, (list, tuple)) and NONE in val):
            raise ConfigError(f"option {option} needs a value, not 'none'")
        if key in fields:
            out[key] = tuple(val) if isinstance(val, (list, tuple)) else val
        elif strict:
            raise ConfigError(f"option {option} does not apply to the {cls.__name__} experiment")
    return out


def run_experiment(
    name: str,
    preset_name: str = "paper",
    out: str | Path | None = None,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    workers: int = 1,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    position: int = 0,
    figures: bool = True,
    section: str | None = None,
) -> dict[str, Any]:
    """Build the config of experiment ``name`` and run it into ``out``; returns its summary.

    ``position`` offsets the rows of its progress bars (experiments running side by side);
    ``figures=False`` skips the PNGs (they can be drawn later from ``arrays.npz``); ``section``:
    read the fields from that table of ``config_file`` (``synthetic all``: one table per experiment).
    """
    cls, fn = _experiments()[name]
    cfg = build_config(cls, preset(preset_name, name), config_file, overrides, section=section)
    return fn(cfg, out or Path("runs/synthetic") / name, workers=workers, progress=progress, log=log,
              position=position, figures=figures)


def _check_all_tables(path: Path) -> None:
    """``synthetic all --config FILE``: the file holds only tables named after the experiments."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = set(data) - set(EXPERIMENTS)
    if unknown:
        raise ConfigError(f"config file {path} for 'all' must hold tables {list(EXPERIMENTS)}, got {sorted(unknown)}")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


def _report(name: str, out: Path, summary: dict[str, Any], seconds: float) -> None:
    print(f"synthetic {name}: wrote {out} ({seconds:.1f} s)", flush=True)
    if name == "local":
        import numpy as np

        m = np.asarray(summary["final_mean_divergence"], dtype=float)
        print(f"  final mean directional divergence, rows = path p, columns = SVM p' {summary['ps']}:")
        for row in m:
            print("   " + "  ".join(f"{x:9.3e}" for x in row), flush=True)


def _timed_experiment(*args: Any, **kwargs: Any) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    return run_experiment(*args, **kwargs), time.perf_counter() - t0


def run_all(
    jobs: list[tuple[str, Path, Path | None, dict[str, Any]]],
    preset_name: str,
    workers: int,
    progress: bool,
    done: Callable[[str, Path, dict[str, Any], float], None] | None = None,
    figures: bool = True,
    sections: bool = False,
) -> dict[str, dict[str, Any]]:
    """Run several experiments, given as (name, out, config file, overrides); returns name -> summary.

    ``sections``: each experiment reads the table named after it in its config file.

    With ``workers`` > 1 the experiments run side by side in that many processes (each experiment
    single-process inside, the longest first); ``done(name, out, summary, seconds)`` runs as each finishes.
    """
    summaries: dict[str, dict[str, Any]] = {}
    if workers <= 1 or len(jobs) <= 1:
        for name, out, cfile, over in jobs:
            summary, secs = _timed_experiment(name, preset_name, out, cfile, over, workers=workers,
                                              progress=progress, log=_log, figures=figures,
                                              section=name if sections else None)
            summaries[name] = summary
            if done:
                done(name, out, summary, secs)
        return summaries
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from mirrorattn.experiments.synthetic.runner import mp_context, preload

    _experiments()
    preload()
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=mp_context()) as pool:
        futures = {}
        order = sorted(jobs, key=lambda job: _LONGEST_FIRST.index(job[0]) if job[0] in _LONGEST_FIRST else -1)
        for k, (name, out, cfile, over) in enumerate(order):
            futures[pool.submit(_timed_experiment, name, preset_name, out, cfile, over, workers=1, progress=progress,
                                log=_log, position=3 * k, figures=figures,
                                section=name if sections else None)] = (name, out)
        for fut in as_completed(futures):
            name, out = futures[fut]
            summary, secs = fut.result()
            summaries[name] = summary
            if done:
                done(name, out, summary, secs)
    return {name: summaries[name] for name, *_ in jobs}


def _main(args: argparse.Namespace) -> int:
    names = list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    check_int(args.workers, "--workers")
    base = args.out
    if base is None:
        base = Path("runs/synthetic") if args.experiment == "all" else Path("runs/synthetic") / args.experiment
    t0 = time.perf_counter()
    every = args.experiment == "all"
    if every and args.config is not None:
        _check_all_tables(Path(args.config))
    jobs = []
    for name in names:
        out = Path(base) / name if every else Path(base)
        jobs.append((name, out, args.config, experiment_overrides(name, vars(args), not every)))
    run_all(jobs, args.preset, args.workers, args.progress, done=_report, sections=every)
    if len(names) > 1:
        print(f"synthetic all: {time.perf_counter() - t0:.1f} s in total")
    return 0
