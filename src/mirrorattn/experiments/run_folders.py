"""Run folders of the classification experiments: what to do with a folder before a run starts.

A finished run (a valid ``summary.json``) is never deleted implicitly: :func:`plan_run` refuses a
folder holding one of other settings with one line naming the settings that differ
(:func:`identity_diff`), unless ``overwrite`` (the CLI's ``--overwrite``); an unfinished run of
other settings (a checkpoint, no summary) is moved aside to ``<run>.old-<n>/``; a damaged
``summary.json`` / ``run_config.json`` of the run itself counts as missing. :func:`preflight`
plans every run of a comparison before the first one trains. Under DDP the main process decides
and every process follows (``_on_main``).
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mirrorattn.io import (
    LOCK_NAME,
    CorruptFileError,
    FolderInUseError,
    config_hash,
    ensure_unlocked,
    read_json,
    to_jsonable,
)

if TYPE_CHECKING:
    from mirrorattn.experiments.classification import RunSpec

__all__ = ["RUN_CONFIG", "SUMMARY", "STOPPING", "RunConflictError", "RunPlan", "identity_diff", "plan_run",
           "preflight"]

#: identity entries that may change between a run and its continuation (``RunSpec.resume_longer``)
STOPPING = ("epochs", "stop_train_acc", "patience")

#: a run folder's own records (written by :func:`run_one`)
SUMMARY, RUN_CONFIG = "summary.json", "run_config.json"
#: ``run_config.json`` entries besides the run's identity
_BOOKKEEPING = ("config_hash", "resume_hash", "optimizer", "lr", "seed")
_UNSET = object()


class RunConflictError(ValueError):
    """A run folder holds a finished run of other settings; replacing it needs ``overwrite`` (``--overwrite``)."""


@dataclass
class RunPlan:
    """What :func:`run_one` does with a run folder, decided by :func:`plan_run` before anything changes.

    ``action``: "reuse" (return ``summary``), "resume" (continue from the checkpoint, if any), "fresh"
    (clear the folder: nothing trained is in it), "set-aside" (move an unfinished run of other settings
    to ``<run>.old-<n>/``) or "replace" (``overwrite``: delete a run of other settings). ``diff``: the
    settings that differ from the folder's run; ``damaged``: the run's own records that could not be read.
    """

    action: str
    summary: dict[str, Any] | None = None
    diff: str = ""
    damaged: list[str] = field(default_factory=list)


def _read_record(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """A run's own record (a JSON object with a ``config_hash``): ``(value, None)``, ``(None, None)`` when
    missing, ``(None, why)`` when damaged - then it counts as missing."""
    if not path.is_file():
        return None, None
    try:
        value = read_json(path, expect=dict)
    except CorruptFileError as exc:
        return None, f"{path.name} ({exc.why})"
    if not isinstance(value.get("config_hash"), str):
        return None, f"{path.name} (it holds no config_hash)"
    return value, None


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def identity_diff(old: dict[str, Any], new: dict[str, Any], limit: int = 6) -> str:
    """The settings that differ between a saved ``run_config.json`` (``old``) and a run identity (``new``):
    ``"train.lr 0.001 -> 0.003; epochs 4 -> 5"`` (dotted names, JSON values, at most ``limit`` named)."""
    a = _flatten({k: v for k, v in old.items() if k not in _BOOKKEEPING})
    b = _flatten(to_jsonable(new))
    names = list(b) + [k for k in a if k not in b]

    def show(v: Any) -> str:
        return "(unset)" if v is _UNSET else json.dumps(v)

    changed = [f"{k} {show(a.get(k, _UNSET))} -> {show(b.get(k, _UNSET))}" for k in names
               if a.get(k, _UNSET) != b.get(k, _UNSET)]
    if not changed:
        return f"config hash {old.get('config_hash')} -> {config_hash(new)}"
    more = f"; and {len(changed) - limit} more" if len(changed) > limit else ""
    return "; ".join(changed[:limit]) + more


def plan_run(spec: RunSpec, out_dir: Path, *, overwrite: bool = False) -> RunPlan:
    """Decide what :func:`run_one` does with ``out_dir``, changing nothing (see :class:`RunPlan`).

    Raises :class:`RunConflictError` (one line naming the folder and the settings that differ) when the
    folder holds a finished run (a valid ``summary.json``) of other settings, unless ``overwrite``.
    A continuation (``resume_longer``, same ``resume_hash``) is not a conflict: more epochs were asked for.
    """
    from mirrorattn.train.resume import CHECKPOINT

    out_dir = Path(out_dir)
    digest = config_hash(spec.identity)
    summary, s_bad = _read_record(out_dir / SUMMARY)
    run_cfg, c_bad = _read_record(out_dir / RUN_CONFIG)
    damaged = [d for d in (s_bad, c_bad) if d]
    same_hash = summary is not None and summary["config_hash"] == digest
    if same_hash and (summary.get("analysis") is not None or spec.analyse is None or summary.get("diverged")):
        return RunPlan("reuse", summary=summary)
    key, value = _resume_key(spec)
    if same_hash or (run_cfg is not None and run_cfg.get(key) == value):
        return RunPlan("resume", damaged=damaged)
    old_hash = (summary or {}).get("config_hash", "unknown")
    diff = identity_diff(run_cfg, spec.identity) if run_cfg is not None else (
        f"config hash {old_hash} -> {digest}; no readable {RUN_CONFIG} says which settings differ")
    if summary is not None and not overwrite:
        raise RunConflictError(f"run folder {out_dir} holds a finished run of other settings ({diff}); it is kept: "
                               "rerun with --overwrite to replace it, or use another --out")
    if overwrite and (summary is not None or run_cfg is not None):
        return RunPlan("replace", diff=diff, damaged=damaged)
    if (out_dir / CHECKPOINT).is_file():
        return RunPlan("set-aside", diff=diff, damaged=damaged)
    return RunPlan("fresh", damaged=damaged)


def _resume_key(spec: RunSpec) -> tuple[str, str]:
    """The ``run_config.json`` entry that marks the folder's run as this one: its config hash, or with
    ``resume_longer`` the hash of its identity without the stopping rule."""
    if spec.resume_longer:
        return "resume_hash", config_hash({k: v for k, v in spec.identity.items() if k not in STOPPING})
    return "config_hash", config_hash(spec.identity)


def _clear(folder: Path, into: Path | None = None) -> None:
    """Delete everything in ``folder`` but its lock file, or move it into the new folder ``into``."""
    if into is not None:
        into.mkdir(parents=True)
    for entry in list(folder.iterdir()) if folder.is_dir() else []:
        if entry.name == LOCK_NAME:
            continue
        if into is not None:
            entry.rename(into / entry.name)
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _enter_folder(plan: RunPlan, out_dir: Path) -> None:
    """Make ``out_dir`` ready for ``plan`` (main process): clear or set aside, and say what happened in one
    line on stderr when it is more than starting or resuming as usual."""
    from mirrorattn.train.resume import CHECKPOINT

    said = [f"damaged {' and '.join(plan.damaged)} treated as missing"] if plan.damaged else []
    if plan.action == "set-aside":
        n = 1
        while out_dir.with_name(f"{out_dir.name}.old-{n}").exists():
            n += 1
        aside = out_dir.with_name(f"{out_dir.name}.old-{n}")
        _clear(out_dir, into=aside)
        said.append(f"the unfinished run there, of other settings ({plan.diff}), was moved to {aside}; "
                    "training starts over")
    elif plan.action == "replace":
        _clear(out_dir)
        said.append(f"replaced a run of other settings ({plan.diff}), as --overwrite asked")
    elif plan.action == "fresh":
        _clear(out_dir)
    if plan.damaged and plan.action in ("resume", "fresh"):
        said.append("resuming the run from its checkpoint" if plan.action == "resume"
                    and (out_dir / CHECKPOINT).is_file() else "training the run from the start")
    if said:
        print(f"run folder {out_dir}: {'; '.join(said)}", file=sys.stderr, flush=True)


def _on_main(fn: Callable[[], Any]) -> Any:
    """``fn()`` run on the main process only; its value (or its exception, raised) on every process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return fn()
    box: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            box = [("ok", fn())]
        except Exception as exc:  # noqa: BLE001 - handed to every process, raised there
            box = [("error", exc)]
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


def preflight(runs: Iterable[tuple[RunSpec, Path]], *, overwrite: bool = False) -> None:
    """Check every run folder of a comparison before the first run trains, so a refusal leaves nothing half done.

    Raises the first :class:`RunConflictError` (finished runs of other settings, unless ``overwrite``) or
    :class:`~mirrorattn.io.FolderInUseError` (a folder another process works in), saying how many more
    folders have a problem, and ``ValueError`` when two runs of other settings would share one folder
    (sweep steps that agree in their first digit). Changes nothing.
    """
    def check() -> None:
        problems: list[tuple[type[ValueError], str]] = []
        seen: dict[Path, RunSpec] = {}
        for spec, out_dir in runs:
            other = seen.setdefault(Path(out_dir), spec)
            if other is not spec and config_hash(other.identity) != config_hash(spec.identity):
                diff = identity_diff(to_jsonable(other.identity), spec.identity)
                raise ValueError(f"two runs of this command would share the run folder {out_dir} ({diff}); "
                                 "make their settings differ in the folder name (e.g. steps in the first digit)")
            try:
                ensure_unlocked(out_dir)
                plan_run(spec, out_dir, overwrite=overwrite)
            except (RunConflictError, FolderInUseError) as exc:
                problems.append((type(exc), str(exc)))
        if problems:
            kind, message = problems[0]
            more = f" (and {len(problems) - 1} more run folder(s) of this command)" if len(problems) > 1 else ""
            raise kind(message + more)

    _on_main(check)
