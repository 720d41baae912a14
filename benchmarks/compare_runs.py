"""Compare every number of two experiment output folders (all ``.json`` and ``.npz`` files, matched by relative path).

Prints JSON: the files and numbers compared, the largest absolute and relative differences (with where), and the
non-numeric mismatches (strings, shapes, NaN patterns, missing keys or files). Timing fields (keys containing
``seconds``, ``computed_at``, ...) are skipped. Used to show that a change leaves an experiment's results
unchanged, e.g. the synthetic suite before and after (issue 13)::

    mirrorattn synthetic all --preset paper --out /tmp/before      # on the old code
    mirrorattn synthetic all --preset paper --out /tmp/after       # on the new code
    python benchmarks/compare_runs.py /tmp/before /tmp/after
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np

#: keys (parts of) that hold wall-clock values, which differ between any two runs
TIMING_KEYS = ("seconds", "computed_at", "elapsed", "started", "finished", "duration", "host", "created", "wall")


def _leaves(x: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _leaves(v, f"{path}/{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path, x


class Comparison:
    """Accumulates the largest differences and the mismatches."""

    def __init__(self) -> None:
        self.numbers = 0
        self.max_abs: tuple[float, str] = (0.0, "")
        self.max_rel: tuple[float, str] = (0.0, "")
        self.mismatches: list[str] = []

    def values(self, name: str, a: Any, b: Any) -> None:
        x, y = np.asarray(a), np.asarray(b)
        if x.shape != y.shape:
            self.mismatches.append(f"{name}: shape {x.shape} vs {y.shape}")
        elif x.dtype.kind in "fiub" and y.dtype.kind in "fiub":
            x, y = x.astype(float), y.astype(float)
            if not np.array_equal(np.isnan(x), np.isnan(y)):
                self.mismatches.append(f"{name}: NaN pattern differs")
                return
            ok = ~np.isnan(x)
            if not ok.any():
                return
            d = np.abs(x[ok] - y[ok])
            r = np.where(d == 0, 0.0, d / np.maximum(np.abs(x[ok]), 1e-300))
            self.numbers += d.size
            if d.max() > self.max_abs[0]:
                self.max_abs = (float(d.max()), name)
            if r.max() > self.max_rel[0]:
                self.max_rel = (float(r.max()), name)
        elif not np.array_equal(x, y):
            self.mismatches.append(f"{name}: {str(x)[:60]} vs {str(y)[:60]}")

    def file(self, a: Path, b: Path, rel: Path) -> None:
        if rel.suffix == ".npz":
            with np.load(a, allow_pickle=False) as A, np.load(b, allow_pickle=False) as B:
                pairs = {k: (A[k], B[k]) for k in set(A.files) | set(B.files) if k in A.files and k in B.files}
                missing = set(A.files) ^ set(B.files)
        else:
            ja, jb = dict(_leaves(json.loads(a.read_text()))), dict(_leaves(json.loads(b.read_text())))
            pairs = {k: (ja[k], jb[k]) for k in ja.keys() & jb.keys()}
            missing = ja.keys() ^ jb.keys()
        self.mismatches += [f"{rel}:{k} only on one side" for k in sorted(missing)]
        for k, (x, y) in sorted(pairs.items()):
            if not any(t in k.lower() for t in TIMING_KEYS):
                self.values(f"{rel}:{k}", np.nan if x is None else x, np.nan if y is None else y)


def compare(a_root: Path, b_root: Path) -> dict[str, Any]:
    """The comparison of the ``.json`` / ``.npz`` files of two folders, as a JSON-ready dict."""
    files = [{p.relative_to(root) for p in root.rglob("*") if p.suffix in (".json", ".npz")}
             for root in (a_root, b_root)]
    c = Comparison()
    c.mismatches += [f"{rel} only in one folder" for rel in sorted(files[0] ^ files[1])]
    for rel in sorted(files[0] & files[1]):
        c.file(a_root / rel, b_root / rel, rel)
    return {"files": len(files[0] & files[1]), "numbers": c.numbers, "max_abs_diff": list(c.max_abs),
            "max_rel_diff": list(c.max_rel), "mismatches": len(c.mismatches), "first_mismatches": c.mismatches[:15]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    args = ap.parse_args()
    print(json.dumps(compare(args.a, args.b), indent=1))


if __name__ == "__main__":
    main()
