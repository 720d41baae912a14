"""Helpers shared by the synthetic experiments: config checks, initial weights, safe directional
divergences, SVM solves that record failures instead of dropping seeds, a run folder
(config.json, its pieces, arrays.npz / figures / summary.json) and the ``run_<experiment>`` function
built around an experiment's own part, and progress bars."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from mirrorattn.checks import check_finite, check_int
from mirrorattn.experiments.synthetic.runner import Piece, PieceResult, run_per_p, run_pieces
from mirrorattn.io import config_hash, write_json, write_npz
from mirrorattn.mirror import P_MAX, P_MIN, bregman_divergence, check_p_range, lp_norm

__all__ = [
    "RunFolder",
    "SolveBatch",
    "check_positive",
    "check_ps",
    "check_solver",
    "cosine_or_nan",
    "directional_divergence",
    "experiment_runner",
    "init_weights",
    "nanmean",
    "per_p_counts",
    "progress_bar",
    "quantile_band",
    "reused",
    "seed_list",
    "solve_each",
    "solve_or_record",
    "status_counts",
    "tag",
]


def check_ps(ps: Any, name: str = "ps") -> tuple[float, ...]:
    """A non-empty tuple of exponents in [P_MIN, P_MAX] (:func:`mirrorattn.mirror.check_p_range`), or a clear
    ``ValueError``."""
    if isinstance(ps, (int, float, np.number)):
        ps = (ps,)
    if isinstance(ps, str) or not isinstance(ps, (list, tuple, np.ndarray)):
        raise ValueError(f"{name} must be a list of exponents p (e.g. [1.75, 2, 3]), got {ps!r}")
    ps = tuple(check_p_range(p, name) for p in ps)
    if not ps:
        raise ValueError(f"{name} must list at least one p (from {P_MIN:g} to {P_MAX:g})")
    if len(set(ps)) != len(ps):
        raise ValueError(f"{name} has repeated values: {ps}")
    return ps


def per_p_counts(counts: Any, ps: tuple[float, ...], name: str = "iterations") -> tuple[int, ...]:
    """One positive count per p: a single value is repeated for every p; a clear ``ValueError`` otherwise."""
    its = (counts,) if isinstance(counts, (int, np.integer)) or not isinstance(counts, (list, tuple)) else counts
    its = tuple(its)
    if len(its) == 1 and len(ps) > 1:
        its = its * len(ps)
    if len(its) != len(ps):
        raise ValueError(f"{name} must give one positive count per p (ps = {ps}), got {counts!r}")
    return tuple(check_int(i, f"{name} (one count per p)", 1) for i in its)


def check_positive(cfg: Any, names: Sequence[str], at_least_two: Sequence[str] = ("T",)) -> None:
    """Every field in ``names`` is an integer >= 1 (>= 2 for those in ``at_least_two``); ``eta`` is a finite
    number > 0 and so is ``eps`` (when present); a ``ValueError`` naming the field otherwise."""
    for name in names:
        check_int(getattr(cfg, name), name, 2 if name in at_least_two else 1)
    if hasattr(cfg, "eta"):
        check_finite(cfg.eta, "eta (step size)", low=0.0, strict=True)
    if hasattr(cfg, "eps"):
        check_finite(cfg.eps, "eps (added to the dual norm)", low=0.0, strict=True)  # 0: a zero gradient gives NaN


def check_solver(name: Any, field: str = "svm_solver") -> str:
    """``name`` if it is an installed cvxpy conic solver, else a ``ValueError`` listing the installed ones (an
    unknown solver would otherwise fail every SVM solve, each recorded as 'failed')."""
    from mirrorattn.svm.core import resolve_solver

    if not isinstance(name, str):
        raise ValueError(f"{field} must be a solver name (e.g. 'clarabel'), got {name!r}")
    try:
        resolve_solver(name)
    except ValueError as exc:  # SVMInputError naming the installed solvers
        raise ValueError(f"{field}: {exc}") from None
    return name


def seed_list(first_seed: int, seeds: int) -> list[int]:
    """The seeds first_seed, ..., first_seed + seeds - 1."""
    return list(range(int(first_seed), int(first_seed) + int(seeds)))


def reused(results: dict[str, Any], prefix: str) -> list[str]:
    """Keys ``<prefix>_p<tag>`` of the pieces in ``results`` (tag -> PieceResult) loaded from disk."""
    return [f"{prefix}_p{t}" for t, r in results.items() if r.reused]


def tag(p: float) -> str:
    """How p appears in piece keys and array names: ``1.75``, ``2``, ``3``."""
    return f"{float(p):g}"


def init_weights(seeds: list[int], shape: tuple[int, ...], scale: float, stream: int = 1) -> np.ndarray:
    """Initial weights N(0, scale^2) per seed, (S, *shape), from ``default_rng([seed, stream])``.

    The stream is separate from the data stream (``default_rng(seed)``), and the same seed gives
    the same W_0 whatever p is trained.
    """
    check_finite(scale, "init scale", low=0.0)
    out = np.zeros((len(seeds),) + tuple(shape))
    for i, s in enumerate(seeds):
        out[i] = scale * np.random.default_rng([int(s), stream]).standard_normal(shape)
    return out


def directional_divergence(a: np.ndarray, b: np.ndarray, p: float, batch_dims: int) -> np.ndarray:
    """D_psi(a / ||a||_p, b / ||b||_p) per batch entry; NaN where either array is zero or NaN.

    ``a`` and ``b`` broadcast against each other on the batch axes.
    """
    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    na = np.asarray(lp_norm(np.nan_to_num(a), p, batch_dims))
    nb = np.asarray(lp_norm(np.nan_to_num(b), p, batch_dims))
    bad = (na == 0) | (nb == 0) | np.isnan(a).any(axis=tuple(range(batch_dims, a.ndim)))
    bad |= np.isnan(b).any(axis=tuple(range(batch_dims, b.ndim)))
    tail = (1,) * (a.ndim - batch_dims)
    an = np.nan_to_num(a) / np.where(na == 0, 1.0, na).reshape(na.shape + tail)
    bn = np.nan_to_num(b) / np.where(nb == 0, 1.0, nb).reshape(nb.shape + tail)
    d = np.asarray(bregman_divergence(an, bn, p, batch_dims), dtype=np.float64)
    return np.where(bad, np.nan, np.maximum(d, 0.0))


def nanmean(values: np.ndarray, axis: int | None = None) -> Any:
    """Mean ignoring NaN (seeds whose SVM failed, iterates without a direction); NaN, silently,
    where everything is NaN."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def quantile_band(values: np.ndarray, lo: float = 0.1, hi: float = 0.9, axis: int = -1) -> tuple[np.ndarray, ...]:
    """Mean and the (lo, hi) quantiles along ``axis``, ignoring NaN (seeds whose SVM failed)."""
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return (
                np.nanmean(values, axis=axis),
                np.nanquantile(values, lo, axis=axis),
                np.nanquantile(values, hi, axis=axis),
            )


def solve_or_record(fn: Callable[[], Any]) -> tuple[Any, str, str]:
    """Run a solver call; return (result or None, status, reason). SVM errors are recorded, not raised."""
    from mirrorattn.svm import InfeasibleSVMError, SVMError

    try:
        res = fn()
    except InfeasibleSVMError as exc:
        return None, "infeasible", str(exc)
    except SVMError as exc:
        return None, "failed", str(exc)
    return res, str(res.status), ""


def status_counts(statuses: Any) -> dict[str, int]:
    """How often each solver status occurs: {"optimal": 99, "infeasible": 1}."""
    vals, counts = np.unique(np.asarray(statuses, dtype=str), return_counts=True)
    return {str(v): int(c) for v, c in zip(vals, counts)}


@dataclasses.dataclass
class SolveBatch:
    """SVM solutions of a batch of independent problems: ``W`` (B, ...) NaN where the solve failed,
    ``status`` and ``reason`` (B,) strings (reason empty on success), ``results`` the result objects
    (None where failed) and ``seconds`` (B,) per solve."""

    W: np.ndarray
    status: np.ndarray
    reason: np.ndarray
    results: list[Any]
    seconds: np.ndarray


def solve_each(
    count: int,
    call: Callable[[int], Any],
    shape: tuple[int, ...],
    field: str = "W",
    key: Callable[[int], Any] | None = None,
    on_done: Callable[[], None] | None = None,
) -> SolveBatch:
    """Solve ``call(b)`` for b = 0 .. count - 1, recording failures (see :func:`solve_or_record`).

    ``field`` names the solution array of the result (``W`` or ``v``), of shape ``shape``. Problems
    with equal ``key(b)`` are solved once and share the result. ``on_done`` runs after each b.
    """
    W = np.full((count,) + tuple(shape), np.nan)
    status = np.full(count, "", dtype=object)
    reason = np.full(count, "", dtype=object)
    secs = np.zeros(count)
    results: list[Any] = []
    cache: dict[Any, tuple[Any, str, str, float]] = {}
    for b in range(count):
        k = key(b) if key is not None else b
        if k not in cache:
            t0 = time.perf_counter()
            res, st, why = solve_or_record(lambda b=b: call(b))
            cache[k] = (res, st, why, time.perf_counter() - t0)
        res, status[b], reason[b], secs[b] = cache[k]
        if res is not None:
            W[b] = getattr(res, field)
        results.append(res)
        if on_done is not None:
            on_done()
    return SolveBatch(W=W, status=status.astype(str), reason=reason.astype(str), results=results, seconds=secs)


def cosine_or_nan(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`mirrorattn.metrics.cosine_correlation` over the last two axes of ``a`` and ``b``
    (broadcast on the leading axes); NaN where either matrix is zero or holds NaN."""
    from mirrorattn.metrics import cosine_correlation

    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    out = np.full(a.shape[:-2], np.nan)
    for idx in np.ndindex(out.shape):
        x, y = a[idx], b[idx]
        if np.isfinite(x).all() and np.isfinite(y).all() and x.any() and y.any():
            out[idx] = cosine_correlation(x, y)
    return out


@dataclasses.dataclass
class RunFolder:
    """One experiment's run: its folder, config, config hash, start time and how to run its pieces.

    :meth:`start` writes ``config.json``; :meth:`per_p` and :meth:`piece` run (or reload) pieces
    with the run's settings (workers, progress bars, log) and note the reused ones in
    ``reused_pieces``; :meth:`finish` writes ``arrays.npz``, the figures (drawn from those arrays)
    and ``summary.json``, and returns the summary.
    """

    experiment: str
    out: Path
    chash: str
    t0: float
    cfg: Any = None
    workers: int = 1  #: worker processes for the pieces of one :meth:`per_p` call
    progress: bool = True  #: show progress bars
    log: Callable[[str], None] | None = None  #: receives one line per reused piece
    position: int = 0  #: first progress-bar row
    reused_pieces: list[str] = dataclasses.field(default_factory=list)  #: keys of the pieces loaded from disk

    @classmethod
    def start(
        cls,
        experiment: str,
        cfg: Any,
        out: str | Path,
        workers: int = 1,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
        position: int = 0,
    ) -> RunFolder:
        t0 = time.perf_counter()
        out = Path(out)
        chash = config_hash(cfg)
        write_json(out / "config.json", {"experiment": experiment, "config_hash": chash,
                                         "config": dataclasses.asdict(cfg)})
        return cls(experiment=experiment, out=out, chash=chash, t0=t0, cfg=cfg, workers=workers, progress=progress,
                   log=log, position=position)

    def per_p(
        self,
        prefix: str,
        fn: Callable[..., tuple[dict[str, np.ndarray], dict[str, Any]]],
        per_p: dict[str, Sequence[Any]] | None = None,
        **kwargs: Any,
    ) -> dict[str, PieceResult]:
        """Pieces ``<prefix>_p<p>`` for every p of the config: ``fn(cfg=cfg, p=p, position=..., progress=...,
        **kwargs)`` (see :func:`~mirrorattn.experiments.synthetic.runner.run_per_p`); results keyed by p tag."""
        res = run_per_p(self.out, self.chash, prefix, fn, self.cfg.ps, self.workers, self.log, per_p=per_p,
                        cfg=self.cfg, progress=self.progress, position0=self.position, **kwargs)
        self.reused_pieces += reused(res, prefix)
        return res

    def piece(self, key: str, fn: Callable[..., tuple[dict[str, np.ndarray], dict[str, Any]]],
              **kwargs: Any) -> PieceResult:
        """One piece ``key`` run in this process: ``fn(cfg=cfg, position=..., progress=..., **kwargs)``."""
        kwargs = dict(kwargs, cfg=self.cfg, position=self.position, progress=self.progress)
        res = run_pieces(self.out, [Piece(key, fn, kwargs)], self.chash, 1, self.log)[key]
        if res.reused:
            self.reused_pieces.append(key)
        return res

    def finish(
        self,
        summary: dict[str, Any],
        arrays: dict[str, np.ndarray],
        cfg: Any,
        figures: bool = True,
        seconds_key: tuple[str, ...] = ("seconds_total_this_call",),
    ) -> dict[str, Any]:
        """Write ``arrays.npz``, the figures (``figures.<experiment>_figures``, drawn from the arrays)
        and ``summary.json``; return the summary.

        ``seconds_key`` is where the total time of this call goes in the summary (a path of keys).
        """
        write_npz(self.out / "arrays.npz", **arrays)
        if figures:
            from mirrorattn.experiments.synthetic import figures as figs

            summary["figures"] = getattr(figs, f"{self.experiment}_figures")(self.out, cfg, arrays)
        node = summary
        for k in seconds_key[:-1]:
            node = node.setdefault(k, {})
        node[seconds_key[-1]] = time.perf_counter() - self.t0
        write_json(self.out / "summary.json", summary)
        return summary


def experiment_runner(
    experiment: str,
    body: Callable[[RunFolder], tuple[dict[str, Any], dict[str, np.ndarray]]],
    what: str,
    seconds_key: tuple[str, ...] = ("seconds_total_this_call",),
) -> Callable[..., dict[str, Any]]:
    """The ``run_<experiment>(cfg, out, workers=1, progress=True, log=None, figures=True, position=0)``
    function of one experiment, built around its ``body``.

    The function starts the run folder (:meth:`RunFolder.start`), calls ``body(run)``, which runs the
    pieces through ``run.per_p`` / ``run.piece`` and returns (summary entries, arrays), then writes the
    summary ``{"experiment", "config_hash", "ps", <body's entries>, "reused_pieces"}`` with the arrays
    and figures (:meth:`RunFolder.finish`, total time at ``seconds_key``) and returns it. ``what``
    names the experiment in the function's docstring.
    """

    def run(
        cfg: Any,
        out: str | Path,
        workers: int = 1,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
        figures: bool = True,
        position: int = 0,
    ) -> dict[str, Any]:
        folder = RunFolder.start(experiment, cfg, out, workers=workers, progress=progress, log=log, position=position)
        entries, arrays = body(folder)
        summary = {"experiment": experiment, "config_hash": folder.chash, "ps": list(cfg.ps), **entries,
                   "reused_pieces": folder.reused_pieces}
        return folder.finish(summary, arrays, cfg, figures, seconds_key=seconds_key)

    run.__name__ = run.__qualname__ = f"run_{experiment}"
    run.__module__ = body.__module__
    run.__doc__ = (f"Run (or resume) {what} into the run folder ``out``; returns the summary dict.\n\n"
                   "    ``workers`` > 1 runs the pieces in worker processes; ``position`` offsets the progress-bar\n"
                   "    rows; ``log`` receives a line per reused piece; ``figures=False`` skips the PNGs.\n")
    return run


def progress_bar(total: int, desc: str, unit: str = "it", position: int = 0, enabled: bool = True) -> Any:
    """A tqdm progress bar on stderr (disabled when ``enabled`` is false)."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        position=position,
        leave=True,
        disable=not enabled,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5,
    )


def token_tools() -> tuple[Callable, Callable, Callable]:
    """(token_scores, globally_optimal_tokens, is_locally_optimal) from :mod:`mirrorattn.tokens`."""
    from mirrorattn.tokens import globally_optimal_tokens, is_locally_optimal, token_scores

    return token_scores, globally_optimal_tokens, is_locally_optimal
