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

import datetime as _dt
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mirrorattn.checks import check_int
from mirrorattn.io import read_json, write_json


@dataclass(frozen=True)
class Step:
    """One experiment of a reproduce preset: which experiment, its preset, the fields it changes, its data needs.

    ``settings`` are config fields applied over the experiment's preset (for ``synthetic``: the fields of the
    four experiments that have them; ``iterations`` a tuple, one value or one per p); ``threads``: torch's CPU
    threads of this process from this step on; ``workers``: runs trained at once (text and vision).
    """

    name: str  # also the folder under --out, e.g. "synthetic", "text/imdb"
    experiment: str  # "synthetic", "text" or "vision"
    preset: str
    settings: dict[str, Any] = field(default_factory=dict)
    needs: str | None = None  # "imdb", "polarity", "cifar10", "fashion-mnist" or None (embedded)
    threads: int | None = None
    workers: int = 1


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
_DEMO_TEXT = {"dataset": "polarity", "seeds": 2, "optimizers": ("lp-md:1.1", "lp-md:2", "adam"), "max_train": 2000,
              "width": 64, "epochs": 150}
_DEMO_VISION = {"dataset": "digits", "seeds": 2, "optimizers": ("adam", "lp-md:1.1", "sgd")}
#: the tiny preset (seconds; for the tests of reproduce itself, not for conclusions)
_TINY_SYNTHETIC = {"seeds": 2, "iterations": (300,), "grid_points": 8}
_TINY_VISION = {"dataset": "digits", "seeds": 1, "epochs": 1, "optimizers": ("adam", "lp-md:1.1"), "width": 16,
                "depth": 1, "heads": 2, "mlp_hidden": 32, "max_train": 400, "max_test": 200}
_TINY_TEXT = {"dataset": "polarity", "seeds": 1, "epochs": 2, "warmup_epochs": 1,
              "optimizers": ("lp-md:1.1", "lp-md:2"), "max_train": 400, "max_test": 200, "width": 16,
              "vocab_size": 2000, "max_length": 32, "analysis_samples": 100}


def preset_steps(preset: str) -> list[Step]:
    """The steps of a reproduce preset (``quick``, ``cpu``, ``paper`` or ``tiny``)."""
    steps = {
        "quick": [
            Step("synthetic", "synthetic", "quick"),
            Step("vision/digits", "vision", "quick", _DEMO_VISION, threads=1),
            Step("text/polarity", "text", "converge", _DEMO_TEXT, threads=1, workers=2),
        ],
        "tiny": [
            Step("synthetic", "synthetic", "quick", _TINY_SYNTHETIC),
            Step("vision/digits", "vision", "quick", _TINY_VISION),
            Step("text/polarity", "text", "converge", _TINY_TEXT),
        ],
        "cpu": [
            Step("synthetic", "synthetic", "paper"),
            Step("vision/digits", "vision", "quick", {"dataset": "digits"}),
            Step("text/polarity", "text", "converge", {"dataset": "polarity"}),
            Step("text/imdb-quick", "text", "quick", {"dataset": "imdb"}, needs="imdb"),
            Step("vision/cifar10-quick", "vision", "quick", {"dataset": "cifar10"}, needs="cifar10"),
        ],
        "paper": [
            Step("synthetic", "synthetic", "paper"),
            Step("text/imdb", "text", "paper", {"dataset": "imdb"}, needs="imdb"),
            Step("vision/cifar10", "vision", "paper", {"dataset": "cifar10"}, needs="cifar10"),
        ],
    }
    if preset not in steps:
        raise ValueError(f"unknown reproduce preset {preset!r}; choose {', '.join(PRESETS)}")
    return steps[preset]


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


def step_config(step: Step, data_root: str | None = None, download: bool = False) -> Any:
    """The validated experiment config of a ``text`` or ``vision`` step: its preset, then its settings.

    ``data_root`` and ``download`` (for the steps that need IMDb or CIFAR-10) are set as the fields of those
    names; the config equals what ``mirrorattn text|vision --preset P --field value ...`` builds.
    """
    from mirrorattn.config import build_config

    settings = dict(step.settings)
    if data_root:
        settings["data_root"] = str(data_root)
    if download and step.needs in ("imdb", "cifar10"):
        settings["download"] = True
    if step.experiment == "text":
        from mirrorattn.experiments.text import TextExperimentConfig
        from mirrorattn.experiments.text_presets import PRESETS as TEXT_PRESETS

        config = build_config(TextExperimentConfig, dict(TEXT_PRESETS[step.preset]), None, settings)
        config.lrs = dict(config.lrs)
    elif step.experiment == "vision":
        from mirrorattn.data.vision import dataset_kind
        from mirrorattn.experiments.vision import VisionExperimentConfig
        from mirrorattn.experiments.vision_presets import preset_values

        values = preset_values(step.preset, dataset_kind(settings["dataset"], settings.get("data_root")))
        config = build_config(VisionExperimentConfig, values, None, settings)
        config.lrs = {k: v for k, v in config.lrs.items() if k in config.optimizers}
    else:
        raise ValueError(f"step {step.name!r}: experiment {step.experiment!r} has no config; expected text or vision")
    config.validate()
    return config


def synthetic_jobs(step: Step, out: Path) -> list[tuple[str, Path, None, dict[str, Any]]]:
    """The (experiment, run folder, config file, overrides) of a ``synthetic`` step's four experiments."""
    from mirrorattn.experiments.synthetic.cli import EXPERIMENTS, experiment_overrides

    return [(name, out / name, None, experiment_overrides(name, step.settings)) for name in EXPERIMENTS]


def run_step(step: Step, out: Path, *, data_root: str | None = None, download: bool = False, workers: int = 1,
             progress: bool = True) -> None:
    """Run the experiment of ``step`` into ``out`` (finished runs reused, interrupted ones resumed).

    ``workers``: processes of the synthetic suite (1: its default, min(2, CPU count)); text and vision steps
    train ``step.workers`` runs at once.
    """
    if step.threads:
        import torch

        torch.set_num_threads(step.threads)
    if step.experiment == "synthetic":
        from mirrorattn.experiments.synthetic.cli import default_workers, run_all

        run_all(synthetic_jobs(step, out), step.preset, workers if workers > 1 else default_workers(), progress)
        return
    config = step_config(step, data_root, download)
    if step.experiment == "text":
        from mirrorattn.experiments.text import run_text_experiment as run
    else:
        from mirrorattn.experiments.vision import run_vision_experiment as run
    run(config, out, progress=progress, workers=step.workers)


#: errors of a step reported in one line (its settings, data or disk); any other is a bug: with its traceback
_STEP_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)


def _run_recorded(step: Step, out: Path, log: Callable[[str], None], **options: Any) -> dict[str, Any]:
    """Run ``step`` into ``out / step.name``; its status entry (done, or failed with the error)."""
    entry: dict[str, Any] = {"experiment": step.experiment, "preset": step.preset, "settings": step.settings}
    t0 = time.perf_counter()
    try:
        run_step(step, out / step.name, **options)
        entry["status"] = "done"
    except Exception as exc:  # a failure of one experiment must not stop the others: report it, go on
        if not isinstance(exc, _STEP_ERRORS):
            traceback.print_exc()
        error = " ".join(f"{type(exc).__name__}: {exc}".split())
        entry.update(status="failed", reason=f"step {step.name} ({step.experiment}, preset {step.preset}) "
                     f"failed: {error}")
        log(f"[fail] {step.name}: {error}")
    entry["seconds"] = time.perf_counter() - t0
    return entry


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
    """Run the steps of ``preset`` into ``out``, recording each in ``out/reproduce.json``; return the record.

    The report is not built here (it is a layer above the experiments): ``mirrorattn reproduce`` then calls
    :func:`mirrorattn.report.build_report` on ``out``.
    """
    check_only(preset, only)
    check_int(workers, "--workers")
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
        ok, reason = data_available(step.needs, data_root, download) if step.needs else (True, "")
        if not ok:
            log(f"[skip] {step.name}: {reason}")
            steps[step.name] = {"status": "skipped", "reason": reason}
        else:
            log(f"[run] {step.name}: {step.experiment}, preset {step.preset}, {step.settings}")
            steps[step.name] = {"status": "running"}
            write_json(status_path, record)
            steps[step.name] = _run_recorded(step, out, log, data_root=data_root, download=download,
                                             workers=workers, progress=progress)
        write_json(status_path, record)
    record["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
    write_json(status_path, record)
    return record
