"""Step time of LpMirrorDescent against torch.optim.SGD and Adam, measured side by side.

Prints JSON with three cases, each timed in one process with the optimizers interleaved (one step of each
per round, in a rotating order, so that load from other processes hits every optimizer alike):

- ``uniform``: 8 float32 tensors of 512 x 1024 (4.19 M weights);
- ``text_transformer``: the parameters of the paper's text transformer (3 blocks, width 384, WordPiece
  30,522; 11.7 M of its 17.6 M weights in the token embedding; 39 tensors, the layer norms' small ones
  among them), dense gradients;
- ``tiny``: the synthetic experiments' 10 x 10 float64 W, normalised l_1.75-MD against the authors' naive
  stateless step (u = sign(W)|W|^(p-1) from the weight each step, g / ||g||_q, then the inverse map, in
  eager torch ops) - the per-step overhead.

For the first two: the median step time (ms) of LpMirrorDescent for p in {1.1, 1.75, 2, 3}, plain and
normalised (``_norm``), of SGD (momentum 0 and 0.9) and Adam, all foreach; ratios to SGD with momentum 0.9;
the path each LpMirrorDescent step took; the first-step time (which includes any compilation, excluded from
the medians). Targets (issue 17): plain <= 1.0, normalised <= 1.1, tiny <= 1.0 (ratio to the naive step).

    python benchmarks/optimizer_step.py [--rounds 60] [--threads 1] [--eager] [--cases uniform,tiny] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable

import torch

from mirrorattn.io import to_jsonable, write_json
from mirrorattn.mirror import dual_exponent, exponent_kind, inverse_exponent
from mirrorattn.models.transformer import TextTransformer, TextTransformerConfig
from mirrorattn.optim import LpMirrorDescent, _kernels

P_VALUES = (1.1, 1.75, 2.0, 3.0)
REFERENCE = "sgd_momentum0.9"
TARGETS = {**{f"lpmd_p{p:g}": 1.0 for p in (1.1, 1.75, 3.0)},
           **{f"lpmd_p{p:g}_norm": 1.1 for p in (1.1, 1.75, 3.0)}}
TINY_P = 1.75


def uniform_shapes() -> list[tuple[int, ...]]:
    return [(512, 1024)] * 8


def text_transformer_shapes() -> list[tuple[int, ...]]:
    """Parameter shapes of the paper's text transformer (its default config), in the model's order."""
    model = TextTransformer(TextTransformerConfig())
    return [tuple(prm.shape) for prm in model.parameters()]


def _params(shapes: list[tuple[int, ...]], seed: int) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g) * 0.05) for s in shapes]


def _builders(compile_flag: bool | None) -> dict[str, Callable[[list], torch.optim.Optimizer]]:
    b: dict[str, Callable[[list], torch.optim.Optimizer]] = {}
    for p in P_VALUES:
        for norm in (False, True):
            key = f"lpmd_p{p:g}" + ("_norm" if norm else "")
            b[key] = lambda ps, p=p, norm=norm: LpMirrorDescent(ps, lr=1e-4, p=p, normalized=norm, foreach=True,
                                                                compile=compile_flag)
    b["sgd_momentum0"] = lambda ps: torch.optim.SGD(ps, lr=1e-4, momentum=0.0, foreach=True)
    b["sgd_momentum0.9"] = lambda ps: torch.optim.SGD(ps, lr=1e-4, momentum=0.9, foreach=True)
    b["adam"] = lambda ps: torch.optim.Adam(ps, lr=1e-4, foreach=True)
    return b


def _interleaved(steps: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median time (ms) of each callable, one call of each per round in a rotating order."""
    times: dict[str, list[float]] = {k: [] for k in steps}
    names = list(steps)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - t0)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def run_case(shapes: list[tuple[int, ...]], rounds: int, warmup: int, compile_flag: bool | None) -> dict:
    """Time every optimizer on float32 parameters of ``shapes`` (shared read-only gradients)."""
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(s, generator=gen) * 1e-2 for s in shapes]
    opts: dict[str, torch.optim.Optimizer] = {}
    first: dict[str, float] = {}
    for name, build in _builders(compile_flag).items():
        ps = _params(shapes, seed=0)
        for prm, g in zip(ps, grads):
            prm.grad = g
        opt = build(ps)
        t0 = time.perf_counter()
        opt.step()
        first[name] = time.perf_counter() - t0
        for _ in range(warmup):
            opt.step()
        opts[name] = opt
    med = _interleaved({k: o.step for k, o in opts.items()}, rounds)
    ratios = {k: v / med[REFERENCE] for k, v in med.items()}
    return {
        "params": sum(int(torch.Size(s).numel()) for s in shapes),
        "tensors": len(shapes),
        "tensors_compiled_size": sum(int(torch.Size(s).numel()) >= 1 << 16 for s in shapes),
        "median_step_ms": med,
        "ratio_to": REFERENCE,
        "ratios": ratios,
        "lpmd_paths_last_step": {k: dict(o.last_step_paths) for k, o in opts.items()
                                 if isinstance(o, LpMirrorDescent)},
        "first_step_s_incl_compile": first,
        "targets_max_ratio": TARGETS,
        "meets_targets": all(ratios[k] <= t for k, t in TARGETS.items()),
    }


def run_tiny(rounds: int, compile_flag: bool | None) -> dict:
    """Normalised l_1.75-MD on a 10 x 10 float64 W: LpMirrorDescent against the naive stateless step."""
    p, lr = TINY_P, 0.1
    q, e = dual_exponent(p), inverse_exponent(p)
    gen = torch.Generator().manual_seed(2)
    w_ours = torch.nn.Parameter(torch.randn(10, 10, generator=gen, dtype=torch.float64) * 0.1)
    w_naive = w_ours.detach().clone()
    grad = torch.randn(10, 10, generator=gen, dtype=torch.float64) * 1e-2
    w_ours.grad = grad
    opt = LpMirrorDescent([w_ours], lr=lr, p=p, normalized=True, compile=compile_flag)

    def naive() -> None:
        u = torch.sign(w_naive) * w_naive.abs() ** (p - 1.0)
        u = u - lr * grad / torch.linalg.vector_norm(grad, q)
        w_naive.copy_(torch.sign(u) * u.abs() ** e)

    for _ in range(20):
        opt.step()
        naive()
    med = _interleaved({"lpmd": opt.step, "naive": naive}, rounds * 20)
    return {"shape": [10, 10], "dtype": "float64", "p": p, "normalized": True, "median_step_us":
            {k: 1e3 * v for k, v in med.items()}, "ratio_lpmd_to_naive": med["lpmd"] / med["naive"],
            "lpmd_paths_last_step": dict(opt.last_step_paths), "target_max_ratio": 1.0,
            "meets_target": med["lpmd"] <= med["naive"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=40, help="timed steps per optimizer (interleaved)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per optimizer after the first")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--cases", default="uniform,text_transformer,tiny", help="comma-separated cases to run")
    ap.add_argument("--eager", action="store_true", help="force the eager path (no torch.compile)")
    ap.add_argument("--out", default=None, help="also write the JSON here (atomically)")
    a = ap.parse_args(argv)
    cases = [c.strip() for c in a.cases.split(",") if c.strip()]
    unknown = sorted(set(cases) - {"uniform", "text_transformer", "tiny"})
    if a.rounds < 1 or a.threads < 1 or a.warmup < 0 or unknown or not cases:
        ap.error(f"--rounds and --threads must be >= 1, --warmup >= 0, --cases from uniform, text_transformer, "
                 f"tiny (got {unknown or a.cases!r})")
    torch.set_num_threads(a.threads)
    compile_flag = False if a.eager else None
    result: dict = {"benchmark": "optimizer_step", "torch": torch.__version__, "python": platform.python_version(),
                    "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "dtype": "float32",
                    "rounds": a.rounds, "lpmd_exponent_kind": {f"lpmd_p{p:g}": list(exponent_kind(
                        inverse_exponent(p))) for p in P_VALUES},
                    "compile_forced_off": compile_flag is False or _kernels.compile_disabled()}
    shapes = {"uniform": uniform_shapes, "text_transformer": text_transformer_shapes}
    for case in cases:
        result[case] = run_tiny(a.rounds, compile_flag) if case == "tiny" else \
            run_case(shapes[case](), a.rounds, a.warmup, compile_flag)
    result["compile_failures"] = {str(k): v for k, v in _kernels._FAILED.items()}
    result["loadavg_1min_at_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result["meets_targets"] = all(result[c].get("meets_targets", result[c].get("meets_target")) for c in cases)
    print(json.dumps(to_jsonable(result), indent=2))
    if a.out:
        write_json(a.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
