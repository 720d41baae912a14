"""``mirrorattn analyse RUN_DIR [RUN_DIR ...]``: the token-selection measurements of saved runs, without training.

Each RUN_DIR is a run folder of ``mirrorattn text`` / ``vision`` (or a comparison folder: its ``runs/*``).
From its ``run_config.json`` (model and data settings) and ``best_model.pt`` (the validation-best weights,
read with ``weights_only=True``) the model is rebuilt and the test split reloaded (``--data-root`` or
``MIRRORATTN_DATA``; the tokenizer from the cache, else trained again), then
(:mod:`mirrorattn.experiments.token_selection`):

* the optimal-token share, per head, the attention mass on the optimal token and the attended token's
  score rank, on the fixed seeded test sample of the runs' own analysis (``--samples``);
* with ``--svm-samples N`` > 0, the last layer's per-head l_p-AttSVM for every ``--ps`` on the first N
  of those samples: cosine and directional Bregman divergence between W_h and W_mm;
* with ``--trend`` (runs trained with ``--snapshots log``; the converge presets keep snapshots), the same
  over training, at every weight snapshot (:mod:`mirrorattn.experiments.selection_trend`): the
  optimal-token share on the same sample and, with ``--svm-samples N``, each head's cosine and directional
  divergence to a FIXED W_mm per p - the AttSVM of the last snapshot's states and selection, solved once
  (this replaces the best model's AttSVM: the trend's last point is that of the final weights).

Writes ``token_selection.json`` (the trend under "trend") and ``token_selection.png`` into the run folder
(or ``--out/<run>/``) and prints one line per run. Given a comparison folder OUT, it then summarises the
runs (:mod:`mirrorattn.experiments.selection_figures`) into OUT (or ``--out``): ``token_selection.json`` /
``.md`` (per optimizer: share mean ± std, chance, divergence to its own-p W_mm at the first and last
snapshot), ``selection_share.png``, ``selection_mass.png`` and, with a trend, ``selection_trend.png``;
``--figures-only`` redraws these from the runs' saved results without loading any model. A folder that is
not a run, a damaged record or weights file, weights of another model, a run without snapshots under
``--trend``, or missing data is reported in one line (exit code 1).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the command line imports this module at start: torch only when a run is analysed
    from torch import nn

__all__ = ["analyse_folder", "comparison_records", "load_run", "register", "run_folders", "summarize_comparison"]

RESULT_JSON, RESULT_PNG = "token_selection.json", "token_selection.png"


def run_folders(paths: list[Path]) -> list[Path]:
    """The run folders named: each path itself if it holds ``run_config.json``, else its ``runs/*`` that do."""
    from mirrorattn.experiments.run_folders import RUN_CONFIG

    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise ValueError(f"RUN_DIR {path} is not a folder; give a run folder (OUT/runs/<optimizer>-seed<k>)")
        if (path / RUN_CONFIG).is_file():
            found.append(path)
            continue
        inner = sorted(p for p in (path / "runs").glob("*") if (p / RUN_CONFIG).is_file())
        if not inner:
            raise ValueError(f"{path} holds no {RUN_CONFIG}: not a run folder of mirrorattn text / vision "
                             "(nor a comparison folder with runs/*)")
        found += inner
    return found


def _config(cls: type, values: Any, what: str, path: Path) -> Any:
    """``cls(**values)`` with tuples for lists; a ValueError naming ``what`` and ``path`` for anything else."""
    if not isinstance(values, dict):
        raise ValueError(f"{path}: the {what} settings are missing or not a table")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"{path}: unknown {what} settings {', '.join(unknown)} (written by another version?)")
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: bad {what} settings: {exc}") from None


def load_run(run: Path, data_root: str | None = None) -> tuple[str, nn.Module, Any]:
    """(kind "text" or "vision", the model with its ``best_model.pt`` weights, the test split) of a run folder."""
    from mirrorattn.experiments.run_folders import RUN_CONFIG
    from mirrorattn.io import read_json
    from mirrorattn.train.checkpoint import load_weights
    from mirrorattn.train.resume import BEST_MODEL

    try:
        record = read_json(run / RUN_CONFIG)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{run / RUN_CONFIG} cannot be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("model"), dict):
        raise ValueError(f"{run / RUN_CONFIG} has no model settings: not a run of mirrorattn text / vision")
    if not (run / BEST_MODEL).is_file():
        raise ValueError(f"{run} has no {BEST_MODEL} (the run has not finished an epoch)")
    kind = "text" if "vocab_size" in record["model"] else "vision" if "patch" in record["model"] else None
    if kind is None:
        raise ValueError(f"{run / RUN_CONFIG}: the model is neither a text transformer nor a ViT")
    model = _build_model(kind, record["model"], run / RUN_CONFIG)
    try:
        model.load_state_dict(load_weights(run / BEST_MODEL))
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise ValueError(f"{run / BEST_MODEL} does not fit the model of {RUN_CONFIG}: {first[0].strip()}") from None
    return kind, model, _test_split(kind, record.get("data"), run / RUN_CONFIG, data_root, model)


def _build_model(kind: str, values: dict[str, Any], path: Path) -> nn.Module:
    if kind == "text":
        from mirrorattn.models.transformer import TextTransformer, TextTransformerConfig

        return TextTransformer(_config(TextTransformerConfig, values, "model", path))
    from mirrorattn.models.vit import ViT, ViTConfig

    return ViT(_config(ViTConfig, values, "model", path))


def _test_split(kind: str, data: Any, path: Path, data_root: str | None, model: nn.Module) -> Any:
    """The run's test split, reloaded from its data settings (the tokenizer must have the model's vocabulary)."""
    if kind == "text":
        from mirrorattn.experiments.text import TextExperimentConfig, prepare_text_data

        cfg = _config(TextExperimentConfig, data, "data", path)
        cfg.data_root = data_root
        prepared = prepare_text_data(cfg, progress=False)
        if prepared.tokenizer.get_vocab_size() != model.config.vocab_size:
            raise ValueError(f"the tokenizer rebuilt for {path.parent} has {prepared.tokenizer.get_vocab_size()} "
                             f"tokens, the model {model.config.vocab_size}: not the run's tokenizer")
    else:
        from mirrorattn.experiments.vision import VisionExperimentConfig, prepare_vision_data

        cfg = _config(VisionExperimentConfig, data, "data", path)
        cfg.data_root = data_root
        prepared = prepare_vision_data(cfg, progress=False)
    if prepared.data.test is None or len(prepared.data.test) == 0:
        raise ValueError(f"the data of {path.parent} has no test split")
    return prepared.data.test


def analyse_folder(run: Path, out: Path, *, samples: int | None = None, svm_samples: int = 0,
                   ps: tuple[float, ...] = (1.1, 2.0, 3.0), data_root: str | None = None,
                   device: str = "auto", trend: bool = False) -> dict[str, Any]:
    """Token selection (and, with ``svm_samples``, the last layer's AttSVM) of one run; written into ``out``.

    ``samples``: test sample cap (default 500 text / 256 vision, as the runs' own analysis). ``trend``: also
    the trend over the run's weight snapshots (:func:`~mirrorattn.experiments.selection_trend.run_selection_trend`,
    under "trend"); the AttSVM is then solved on the last snapshot only (the trend's targets), not on the best
    model. Returns what ``out/token_selection.json`` holds.
    """
    from mirrorattn.experiments.token_selection import (
        TEXT_SAMPLES,
        VISION_SAMPLES,
        layer_attention_svm,
        sample_indices,
        split_token_selection,
    )
    from mirrorattn.io import write_json
    from mirrorattn.train import resolve_device
    from mirrorattn.train.checkpoint import list_snapshots

    if trend and not list_snapshots(run):  # before the data is loaded
        from mirrorattn.experiments.selection_trend import no_snapshots_message

        raise ValueError(no_snapshots_message(run))
    kind, model, test = load_run(run, data_root)
    model.to(resolve_device(device))
    cap = int(samples or (TEXT_SAMPLES if kind == "text" else VISION_SAMPLES))
    result: dict[str, Any] = {"run": str(run), "kind": kind,
                              "token_selection": split_token_selection(model, test, cap)}
    if trend:
        from mirrorattn.experiments.selection_trend import run_selection_trend

        result["trend"] = run_selection_trend(run, model, test, cap, svm_samples=min(cap, int(svm_samples)),
                                              ps=tuple(ps))
    elif svm_samples > 0:
        idx = sample_indices(len(test), min(cap, int(svm_samples)))
        mask = test.inputs[1][idx] if kind == "text" else None
        result["attention_svm"] = layer_attention_svm(model, test.inputs[0][idx], mask, ps=tuple(ps))
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / RESULT_JSON, result)
    plot_selection(result, out / RESULT_PNG)
    return result


def plot_selection(result: dict[str, Any], path: Path) -> None:
    """Optimal-token share (mean over heads and per head, with the chance level) and the attention mass by
    score rank of one run."""
    import matplotlib.pyplot as plt

    from mirrorattn.io import save_figure

    ts = result["token_selection"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    names = ["mean"] + [f"head {h}" for h in range(ts["heads"])]
    axes[0].bar(names, [ts["optimal_token_share"], *ts["optimal_token_share_per_head"]], color="tab:blue")
    axes[0].axhline(ts["chance_share"], color="grey", ls="--", lw=1, label="chance")
    axes[0].set(ylabel="optimal-token share", ylim=(0, 1), title=f"{ts['n']} test samples")
    axes[0].legend(fontsize=8)
    mass = [(r + 1, m) for r, m in enumerate(ts["mass_by_score_rank"]) if m is not None]
    axes[1].bar([r for r, _ in mass], [m for _, m in mass], color="tab:orange")
    axes[1].set(xlabel="score rank of the token (1 = optimal)", ylabel="attention mass (mean over heads)")
    fig.suptitle(f"token selection of the last layer's [CLS] attention: {Path(result['run']).name}", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def _line(result: dict[str, Any]) -> str:
    ts = result["token_selection"]
    text = (f"{Path(result['run']).name}: optimal-token share {ts['optimal_token_share']:.3f} (chance "
            f"{ts['chance_share']:.3f}; heads {', '.join(f'{v:.3f}' for v in ts['optimal_token_share_per_head'])}), "
            f"mass {ts['optimal_token_mass']:.3f}, attended rank {ts['attended_token_rank']:.2f}, n {ts['n']}")
    tr = result.get("trend")
    if tr:
        text += (f"\n  trend over {len(tr['epochs'])} snapshots (epochs {tr['epochs'][0]}-{tr['epochs'][-1]}): "
                 f"share {tr['optimal_token_share'][0]:.3f} -> {tr['optimal_token_share'][-1]:.3f}")
        for h, row in enumerate(tr["heads"]):
            text += f"\n  head {h}, D to the last snapshot's W_mm: " + "; ".join(
                f"p={p}: {r['directional_bregman'][0]:.3g} -> {r['directional_bregman'][-1]:.3g}"
                + (f" ({r['n_dropped']} dropped)" if r["n_dropped"] else "") for p, r in row["p"].items())
    for h, row in enumerate((result.get("attention_svm") or {}).get("heads", [])):
        text += f"\n  head {h}: " + "; ".join(
            f"p={p}: cos {r['cosine']:.3f}, D {r['directional_bregman']:.3g}, {r['solve_seconds']:.1f} s"
            + (f", {r['n_dropped']} dropped" if r["n_dropped"] else "") for p, r in row["p"].items())
    return text


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1.1,2,3, got {text!r}") from None


def comparison_records(comparison: Path, result_root: Path | None = None) -> list[dict[str, Any]]:
    """The analysed runs of a comparison folder, for :func:`summarize_comparison`: per run {"optimizer", "seed",
    "run", "result"} from its ``run_config.json`` and its ``token_selection.json`` (in the run folder, or
    ``result_root/<run>/`` where the runs were analysed with ``--out``); in the order of the comparison's
    ``results.json`` optimizers, then by seed."""
    from mirrorattn.experiments.run_folders import RUN_CONFIG
    from mirrorattn.io import read_json

    records = []
    for run in run_folders([comparison]):
        path = (run if result_root is None else result_root / run.name) / RESULT_JSON
        if not path.is_file():
            raise ValueError(f"{path} is missing: analyse the run first (`mirrorattn analyse {comparison}`)")
        try:
            record, result = read_json(run / RUN_CONFIG, expect=dict), read_json(path, expect=dict)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path.parent} cannot be read ({type(exc).__name__}: {exc})") from None
        if "token_selection" not in result:
            raise ValueError(f"{path} holds no token_selection results (written by another version?)")
        records.append({"optimizer": str(record.get("optimizer", run.name)), "seed": record.get("seed"),
                        "run": run.name, "result": result})
    order = _optimizer_order(comparison)
    return sorted(records, key=lambda r: (order.get(r["optimizer"], len(order)), r["optimizer"], str(r["seed"])))


def _optimizer_order(comparison: Path) -> dict[str, int]:
    from mirrorattn.io import read_json

    try:
        agg = read_json(comparison / "results.json", expect=dict).get("aggregate") or {}
    except (OSError, ValueError):
        return {}
    return {opt: i for i, opt in enumerate(agg)}


def summarize_comparison(comparison: Path, out: Path, result_root: Path | None = None) -> dict[str, Any]:
    """The comparison-level tables and figures of a comparison folder's analysed runs, written into ``out``
    (:func:`mirrorattn.experiments.selection_figures.write_comparison`)."""
    from mirrorattn.experiments.selection_figures import write_comparison

    return write_comparison(out, comparison_records(comparison, result_root), f"Token selection: {comparison.name}")


def _check_args(args: argparse.Namespace) -> None:
    if args.samples is not None and args.samples < 1:
        raise ValueError(f"--samples must be a positive integer, got {args.samples}")
    if args.svm_samples < 0:
        raise ValueError(f"--svm-samples must be >= 0, got {args.svm_samples}")
    if args.svm_samples:
        from mirrorattn.mirror import check_p_range

        for p in args.ps:
            check_p_range(p)


def _main(args: argparse.Namespace) -> int:
    from mirrorattn.experiments.run_folders import RUN_CONFIG

    _check_args(args)
    for path in args.run_dirs:
        runs = run_folders([path])
        comparison = not (path / RUN_CONFIG).is_file()
        if args.figures_only and not comparison:
            raise ValueError(f"--figures-only needs a comparison folder (OUT with runs/*), got the run folder {path}")
        root = None if args.out is None else Path(args.out)
        for run in [] if args.figures_only else runs:
            out = run if root is None else root / run.name
            result = analyse_folder(run, out, samples=args.samples, svm_samples=args.svm_samples, ps=args.ps,
                                    data_root=args.data_root, device=args.device, trend=args.trend)
            print(_line(result), flush=True)
            print(f"  -> {out / RESULT_JSON}", flush=True)
        if comparison:
            summary = summarize_comparison(path, root or path, root)
            print(f"{path.name}: token selection of {len(runs)} run(s) -> "
                  + ", ".join(str((root or path) / f) for f in summary["files"]), flush=True)
    return 0


def register(subparsers: Any) -> None:
    """Add the ``analyse`` subcommand."""
    p = subparsers.add_parser("analyse", help="token selection of saved runs: optimal-token share, AttSVM of the "
                              "last layer, their trend over training, comparison figures (no training)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                   help="run folder(s) (OUT/runs/<optimizer>-seed<k>) or comparison folder(s) OUT")
    p.add_argument("--samples", type=int, default=None, help="test samples (default 500 text, 256 vision)")
    p.add_argument("--svm-samples", type=int, default=0,
                   help="solve the last layer's per-head l_p-AttSVM on this many of them (0: no)")
    p.add_argument("--ps", type=_floats, default=(1.1, 2.0, 3.0), help="p of the AttSVMs (default 1.1,2,3)")
    p.add_argument("--trend", action="store_true",
                   help="also at every weight snapshot (runs trained with --snapshots log): share and, with "
                   "--svm-samples, the distance to the last snapshot's AttSVM (solved once, instead of the best "
                   "model's)")
    p.add_argument("--figures-only", action="store_true",
                   help="comparison folders: redraw the comparison's tables and figures from the runs' saved "
                   "token_selection.json (no model loaded)")
    p.add_argument("--data-root", default=None, help="folder of the data archives (default MIRRORATTN_DATA)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--out", default=None, help="write into OUT/<run>/ (and the comparison's files into OUT) instead "
                   "of the run and comparison folders")
    p.set_defaults(func=_main)
