"""Benchmark: one-shot against active-set (constraint generation) l_p-AttSVM solves.

Prints JSON with, per (n, T, d) and p, both solve times (wall and process CPU seconds: on a
shared machine CPU time is the fairer measure of one single-threaded solve), their ratios and
the objectives' relative difference, plus one active-set solve at 1,000,000 constraints (n = 20,000, T = 51,
d = 16, p = 1.75) with its time and the process's peak resident memory. Data as in paper.md
section 5: unit-norm Gaussian tokens and queries; alpha_i = argmax_t x_it^T W0 z_i for a random
W0, which makes the problem feasible.

    nice -n 10 python benchmarks/svm_scale.py [--out results.json] [--max-one-shot-constraints 40000]
    python benchmarks/svm_scale.py --shared-query 400,51,64 60,11,16,full --p 1.1 2 3   # the shared-query reduction
    python benchmarks/svm_scale.py --no-million --sizes 400,51,64 --max-one-shot-constraints 0 --p 1.1 2 3  # d = 64
    python benchmarks/svm_scale.py --no-million --sizes 60,11,32 --conic-one-shot --p 1.1 2 3  # dual against Clarabel

The active set solves its working sets by the dense interior-point method for d <= 31 (:mod:`mirrorattn.svm.ipm`)
and on the dual for a query per sample and d >= 32 (:mod:`mirrorattn.svm.dual`, method "... (dual)"). The one-shot
reference is one cvxpy (Clarabel) solve of every constraint; for d >= 32 it is solved on the dual unless
``--conic-one-shot``. Every case records the duality gap of the answers (``duality_gap``: from the duals alone).

The JSON is rewritten (atomically) after every case, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time

import numpy as np

import mirrorattn.svm.dual as dual
import mirrorattn.svm.ipm as ipm
from mirrorattn.io import to_jsonable, write_json
from mirrorattn.svm import attention_svm

SIZES = [(6, 8, 10), (200, 16, 16), (2000, 16, 16), (2000, 32, 16)]
P_VALUES = [1.75, 2.0, 3.0]
MILLION = (20000, 51, 16, 1.75)


def make_data(n: int, T: int, d: int, seed: int, shared: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """X (n, T, d), z (n, d) with unit-l2 rows; alpha = argmax_t x_it^T W0 z_i (feasible). ``shared``: every
    z_i is z_0 (a 1-block transformer's [CLS] query)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, T, d))
    X /= np.linalg.norm(X, axis=2, keepdims=True)
    z = rng.standard_normal((n, d))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    if shared:
        z[:] = z[0]
    W0 = rng.standard_normal((d, d))
    alpha = np.empty(n, dtype=np.int64)
    for s in range(0, n, 4096):
        alpha[s : s + 4096] = np.argmax(np.einsum("ntd,de,ne->nt", X[s : s + 4096], W0, z[s : s + 4096]), axis=1)
    return X, z, alpha


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_case(n: int, T: int, d: int, p: float, seed: int, one_shot: bool, conic_one_shot: bool = False) -> dict:
    X, z, alpha = make_data(n, T, d, seed)
    case: dict = {"n": n, "T": T, "d": d, "p": p, "constraints": n * (T - 1)}
    c0 = time.process_time()
    act = attention_svm(X, z, alpha, p, active_set="on")
    case.update(
        active_set_seconds=act.solve_seconds,
        active_set_cpu_seconds=time.process_time() - c0,
        active_set_objective=act.objective,
        active_set_iterations=act.iterations,
        active_set_working=act.n_working,
        active_set_polished=act.polished,
        active_set_method=act.method,
        active_set_duality_gap=act.duality_gap,
        n_support=int(act.support.sum()),
    )
    if one_shot:
        c0 = time.process_time()
        saved = dual.DUAL_MIN_VARS, ipm.IPM_MAX_VARS
        # the reference: one cvxpy (Clarabel) solve of every constraint; d >= 32 on the dual unless --conic-one-shot
        dual.DUAL_MIN_VARS, ipm.IPM_MAX_VARS = (10**9 if conic_one_shot else saved[0]), 0
        try:
            one = attention_svm(X, z, alpha, p, active_set="off")
        finally:
            dual.DUAL_MIN_VARS, ipm.IPM_MAX_VARS = saved
        case["one_shot_method"] = one.method
        one_cpu = time.process_time() - c0
        case.update(
            one_shot_seconds=one.solve_seconds,
            one_shot_cpu_seconds=one_cpu,
            speedup_cpu=one_cpu / case["active_set_cpu_seconds"],
            one_shot_objective=one.objective,
            one_shot_polished=one.polished,
            one_shot_duality_gap=one.duality_gap,
            speedup=one.solve_seconds / act.solve_seconds,
            objective_rel_diff=abs(act.objective - one.objective) / one.objective,
            W_max_rel_diff=float(np.abs(act.W - one.W).max() / np.abs(one.W).max()),
        )
    else:
        case["one_shot_seconds"] = None
        case["note"] = "one-shot skipped (--max-one-shot-constraints)"
    return case


def run_shared_case(n: int, T: int, d: int, p: float, seed: int, full: bool) -> dict:
    """A shared-query instance: the exact d-variable reduction, and (``full``) the d x d problem beside it."""
    X, z, alpha = make_data(n, T, d, seed, shared=True)
    case: dict = {"n": n, "T": T, "d": d, "p": p, "constraints": n * (T - 1), "shared_query": True}
    c0 = time.process_time()
    red = attention_svm(X, z, alpha, p)
    case.update(reduced_cpu_seconds=time.process_time() - c0, reduced_seconds=red.solve_seconds,
                reduced_method=red.method, reduced_objective=red.objective, reduced_polished=red.polished,
                min_margin=red.min_margin, n_support=int(red.support.sum()))
    if full:
        c0 = time.process_time()
        one = attention_svm(X, z, alpha, p, shared_query=False)
        cpu = time.process_time() - c0
        case.update(full_cpu_seconds=cpu, full_method=one.method, full_objective=one.objective,
                    speedup_cpu=cpu / case["reduced_cpu_seconds"],
                    objective_rel_diff=abs(red.objective - one.objective) / one.objective,
                    W_max_rel_diff=float(np.abs(red.W - one.W).max() / np.abs(one.W).max()))
    return case


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="write the JSON here too (atomically, after every case)")
    ap.add_argument(
        "--max-one-shot-constraints",
        type=int,
        default=None,
        help="skip the (slow) one-shot solve above this many constraints; default: run all",
    )
    ap.add_argument("--no-million", action="store_true", help="skip the 1,000,000-constraint run")
    ap.add_argument("--million-only", action="store_true", help="only the 1,000,000-constraint run")
    ap.add_argument("--p", type=float, nargs="+", default=P_VALUES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--conic-one-shot", action="store_true",
                    help="solve the one-shot reference with Clarabel alone (not on the dual) for d >= 32")
    ap.add_argument("--sizes", nargs="+", default=None, help="n,T,d triples such as 2000,32,16 (default: the issue's)")
    ap.add_argument("--shared-query", nargs="+", default=None, metavar="n,T,d[,full]",
                    help="shared-query instances (one z for every sample), e.g. 400,51,64 or 60,21,16,full (the d x d "
                         "problem solved beside the reduction); only these are run")
    args = ap.parse_args()
    out: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_start": os.getloadavg()},
        "cases": [],
    }

    def emit() -> None:
        out["machine"]["load_avg_now"] = os.getloadavg()
        if args.out:
            write_json(args.out, out)

    if args.shared_query:
        for spec in args.shared_query:
            parts = spec.split(",")
            n, T, d = (int(v) for v in parts[:3])
            for p in args.p:
                out["cases"].append(run_shared_case(n, T, d, p, args.seed, full=parts[3:] == ["full"]))
                emit()
        print(json.dumps(to_jsonable(out), indent=2))
        return 0
    if not args.no_million:  # first, so that the peak RSS is this run's own
        n, T, d, p = MILLION
        X, z, alpha = make_data(n, T, d, args.seed)
        t0, c0 = time.perf_counter(), time.process_time()
        res = attention_svm(X, z, alpha, p, active_set="on")
        cpu = time.process_time() - c0
        out["million"] = {
            "n": n,
            "T": T,
            "d": d,
            "p": p,
            "constraints": res.n_constraints,
            "seconds": time.perf_counter() - t0,
            "cpu_seconds": cpu,
            "objective": res.objective,
            "iterations": res.iterations,
            "working_set": res.n_working,
            "n_support": int(res.support.sum()),
            "min_margin": res.min_margin,
            "polished": res.polished,
            "duality_gap": res.duality_gap,
            "method": res.method,
            "peak_rss_mib": peak_rss_mib(),
        }
        del X, z, alpha, res
        emit()
    if not args.million_only:
        sizes = [tuple(int(v) for v in s.split(",")) for s in args.sizes] if args.sizes else SIZES
        for n, T, d in sizes:
            for p in args.p:
                m = n * (T - 1)
                one_shot = args.max_one_shot_constraints is None or m <= args.max_one_shot_constraints
                out["cases"].append(run_case(n, T, d, p, args.seed, one_shot, args.conic_one_shot))
                emit()
    print(json.dumps(to_jsonable(out), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
