"""The d x d l_p-AttSVM of trained models solved on its dual (a query per sample, as for a deeper model) against
the exact shared-query reduction of the same problem (the 1-block model's [CLS] query is one vector).

    MIRRORATTN_DATA=../shared/data python docs/results/polarity-converge-trend/dual_check.py OUT.json

from the repository root, after the runs of this folder's README (results/polarity-converge-trend/runs/...).
Prints per run, head and p: both methods, both objectives, their relative difference, the dual's seconds and
the number of constraints; writes them to OUT.json (here: dual_check.json).
"""

import json
import sys
import time
from pathlib import Path

from mirrorattn.experiments.analyse_cli import load_run
from mirrorattn.experiments.token_selection import layer_attention_svm, sample_indices

KEYS = ("objective", "method", "n_constraints", "n_used", "solve_seconds", "directional_bregman")


def solve_both(name: str) -> dict:
    """Per method (shared query True / False): CPU seconds and per head and p the solution's fields."""
    kind, model, split = load_run(Path("results/polarity-converge-trend/runs") / name)
    idx = sample_indices(len(split), 400)
    ids, mask = split.inputs[0][idx], split.inputs[1][idx]
    res = {}
    for shared in (True, False):
        t = time.process_time()
        r = layer_attention_svm(model, ids, mask, shared_query=shared)
        heads = [{p: {k: v[k] for k in KEYS} for p, v in h["p"].items()} for h in r["heads"]]
        res[str(shared)] = {"cpu_seconds": time.process_time() - t, "heads": heads}
    return res


def main() -> None:
    out = {}
    for name in ("lp-md-1.1-seed0", "lp-md-2-seed0"):
        res = out[name] = solve_both(name)
        for h, (red, full) in enumerate(zip(res["True"]["heads"], res["False"]["heads"])):
            for p in red:
                a, b = red[p], full[p]
                rel = abs(a["objective"] / b["objective"] - 1)
                print(name, h, p, a["method"], b["method"], a["objective"], b["objective"], rel,
                      round(b["solve_seconds"], 2), a["n_constraints"], flush=True)
    Path(sys.argv[1]).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
