"""The d x d l_p-AttSVM of trained models solved on its dual (a query per sample, as for a deeper model) against
the exact shared-query reduction of the same problem (the 1-block model's [CLS] query is one vector).

    MIRRORATTN_DATA=../shared/data python docs/results/polarity-converge-trend/dual_check.py OUT.json

from the repository root, after the runs of this folder's README (results/polarity-converge-trend/runs/...).
Prints per run, head and p: both methods, both objectives, their relative difference, the dual's seconds and
the number of constraints; writes them to OUT.json (here: dual_check.json).
"""
import json, sys, time
from pathlib import Path
from mirrorattn.experiments.analyse_cli import load_run
from mirrorattn.experiments.token_selection import layer_attention_svm, sample_indices
out = {}
for name in ("lp-md-1.1-seed0", "lp-md-2-seed0"):
    run = Path("results/polarity-converge-trend/runs") / name
    kind, model, split = load_run(run)
    idx = sample_indices(len(split), 400)
    ids, mask = split.inputs[0][idx], split.inputs[1][idx]
    res = {}
    for sq in (True, False):
        t = time.process_time()
        r = layer_attention_svm(model, ids, mask, shared_query=sq)
        res[str(sq)] = {"cpu_seconds": time.process_time() - t,
                        "heads": [{p: {k: v[k] for k in ("objective", "method", "n_constraints", "n_used", "solve_seconds", "directional_bregman")} for p, v in h["p"].items()} for h in r["heads"]]}
    out[name] = res
    for h in range(len(res["True"]["heads"])):
        for p in res["True"]["heads"][h]:
            a, b = res["True"]["heads"][h][p], res["False"]["heads"][h][p]
            print(name, h, p, a["method"], b["method"], a["objective"], b["objective"], abs(a["objective"] / b["objective"] - 1), round(b["solve_seconds"], 2), a["n_constraints"], flush=True)
Path(sys.argv[1]).write_text(json.dumps(out, indent=1))
