"""Step time of LpMirrorDescent against torch.optim.SGD and Adam, measured side by side.

Prints JSON: the median step time (ms) of LpMirrorDescent for p in {1.1, 1.75, 2, 3} and of
SGD (momentum 0 and 0.9) and Adam, all foreach, on copies of the same float32 parameters
(default 8 tensors of 512 x 1024 = 4.19 M), the ratios to SGD with momentum 0.9, the exponent kind and the path each
LpMirrorDescent step took (compiled/foreach/direct), the first-step time (which includes any
compilation, excluded from the medians), the torch version and thread count.

Steps are interleaved (one step of each optimizer per round, in a rotating order) so that load
from other processes hits every optimizer alike. Usage::

    python benchmarks/optimizer_step.py [--rounds 40] [--threads 1] [--eager] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

from mirrorattn.io import to_jsonable, write_json
from mirrorattn.mirror import inverse_exponent
from mirrorattn.optim import LpMirrorDescent, _kernels

P_VALUES = (1.1, 1.75, 2.0, 3.0)
REFERENCE = "sgd_momentum0.9"
TARGETS = {"lpmd_p1.1": 1.5, "lpmd_p2": 1.5, "lpmd_p3": 1.5, "lpmd_p1.75": 3.0}


def _params(shapes: list[tuple[int, int]], seed: int) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g) * 0.05) for s in shapes]


def _builders(compile_flag: bool | None) -> dict[str, object]:
    b: dict[str, object] = {}
    for p in P_VALUES:
        key = f"lpmd_p{p:g}"
        b[key] = lambda ps, p=p: LpMirrorDescent(ps, lr=1e-4, p=p, foreach=True, compile=compile_flag)
    b["sgd_momentum0"] = lambda ps: torch.optim.SGD(ps, lr=1e-4, momentum=0.0, foreach=True)
    b["sgd_momentum0.9"] = lambda ps: torch.optim.SGD(ps, lr=1e-4, momentum=0.9, foreach=True)
    b["adam"] = lambda ps: torch.optim.Adam(ps, lr=1e-4, foreach=True)
    return b


def run(rounds: int, n_tensors: int, rows: int, cols: int, warmup: int, compile_flag: bool | None) -> dict:
    """Time every optimizer; returns the JSON-ready result dict."""
    shapes = [(rows, cols)] * n_tensors
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(s, generator=gen) * 1e-2 for s in shapes]
    opts: dict[str, torch.optim.Optimizer] = {}
    first: dict[str, float] = {}
    for name, build in _builders(compile_flag).items():
        ps = _params(shapes, seed=0)
        for prm, g in zip(ps, grads):
            prm.grad = g  # shared, read-only
        opt = build(ps)
        t0 = time.perf_counter()
        opt.step()
        first[name] = time.perf_counter() - t0
        for _ in range(warmup):
            opt.step()
        opts[name] = opt
    times: dict[str, list[float]] = {k: [] for k in opts}
    names = list(opts)
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            opts[name].step()
            times[name].append(time.perf_counter() - t0)
    med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    ref = med[REFERENCE]
    ratios = {k: v / ref for k, v in med.items()}
    paths = {k: dict(o.last_step_paths) for k, o in opts.items() if isinstance(o, LpMirrorDescent)}
    return {
        "benchmark": "optimizer_step",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg_1min_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "params": sum(r * c for r, c in shapes),
        "tensors": [list(s) for s in shapes],
        "dtype": "float32",
        "rounds": rounds,
        "median_step_ms": med,
        "ratio_to": REFERENCE,
        "ratios": ratios,
        "lpmd_paths_last_step": paths,
        "lpmd_exponent_kind": {f"lpmd_p{p:g}": list(_kernels.exponent_kind(inverse_exponent(p))) for p in P_VALUES},
        "compile_forced_off": compile_flag is False or _kernels.compile_disabled(),
        "compile_failures": dict((str(k), v) for k, v in _kernels._FAILED.items()),
        "first_step_s_incl_compile": first,
        "targets_max_ratio": TARGETS,
        "meets_targets": all(ratios[k] <= t for k, t in TARGETS.items()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=40, help="timed steps per optimizer (interleaved)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per optimizer after the first")
    ap.add_argument("--tensors", type=int, default=8)
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--cols", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--eager", action="store_true", help="force the eager path (no torch.compile)")
    ap.add_argument("--out", default=None, help="also write the JSON here (atomically)")
    a = ap.parse_args(argv)
    if a.rounds < 1 or a.tensors < 1 or a.rows < 1 or a.cols < 1 or a.threads < 1:
        ap.error("--rounds, --tensors, --rows, --cols and --threads must be >= 1")
    torch.set_num_threads(a.threads)
    result = run(a.rounds, a.tensors, a.rows, a.cols, a.warmup, False if a.eager else None)
    text = json.dumps(to_jsonable(result), indent=2)
    print(text)
    if a.out:
        write_json(a.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
