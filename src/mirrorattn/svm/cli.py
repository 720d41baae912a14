"""``mirrorattn svm``: solve l_p-AttSVM (and the decoder l_p-SVM) for arrays saved in an NPZ file.

    mirrorattn svm --data arrays.npz --p 1.75 [--out summary.json] [--save-w W.npz]

The NPZ holds ``X`` (n, T, d), ``z`` (n, d), ``alpha`` (n,) and optionally ``mask`` (n, T),
``y`` (n,) and ``v`` (d,). With ``y`` the decoder l_p-SVM is solved too; with ``y`` and ``v`` the
summary also says whether alpha is globally / locally optimal for the token scores
gamma = y * (X v). The JSON summary is printed and, with ``--out``, written atomically.
"""

from __future__ import annotations

import argparse
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from mirrorattn.io import to_jsonable, write_json, write_npz
from mirrorattn.svm.errors import SVMInputError

REQUIRED = ("X", "z", "alpha")


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an NPZ file, checked to contain X, z and alpha (one clear error otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise SVMInputError(f"--data {path}: no such file; save the arrays with numpy.savez(path, X=, z=, alpha=)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: np.asarray(f[k]) for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise SVMInputError(f"--data {path}: not a readable NPZ file ({exc})") from None
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise SVMInputError(
            f"--data {path}: missing arrays {missing} (found {sorted(arrays)}); the file needs X (n, T, d), "
            "z (n, d), alpha (n,) and optionally mask (n, T), y (n,), v (d,)"
        )
    return arrays


def run(args: argparse.Namespace) -> int:
    """Solve and report; returns the exit code."""
    from mirrorattn.svm.attention import attention_svm
    from mirrorattn.svm.decoder import decoder_svm
    from mirrorattn.svm.nuclear import attention_svm_nuclear
    from mirrorattn.tokens import globally_optimal_tokens, locally_optimal_samples, token_scores

    arr = load_arrays(args.data)
    X, z, alpha, mask = arr["X"], arr["z"], arr["alpha"], arr.get("mask")
    kw: dict[str, Any] = {"mask": mask, "solver": args.solver, "active_set": args.active_set, "tol": args.tol}
    if args.nuclear:
        att = attention_svm_nuclear(X, z, alpha, **kw)
    else:
        if args.p is None:
            raise SVMInputError("--p is required (the exponent of ||W||_p, > 1), unless --nuclear")
        att = attention_svm(X, z, alpha, args.p, **kw)
    summary: dict[str, Any] = {"data": str(args.data), "attention": att.summary()}
    if "y" in arr:
        p_dec = args.p if args.p is not None else 2.0
        summary["decoder"] = decoder_svm(X, arr["y"], alpha, p_dec, **kw).summary()
        if "v" in arr:
            gamma = token_scores(np.asarray(X, np.float64), np.asarray(arr["y"], np.float64), np.asarray(arr["v"]))
            try:
                best = globally_optimal_tokens(gamma, mask)
                glob: Any = bool(np.array_equal(best, att.alpha))
            except ValueError:
                glob = None  # ties: the globally optimal token is not unique
            local = locally_optimal_samples(att.alpha, att, gamma)
            summary["optimality"] = {
                "globally_optimal": glob,
                "locally_optimal": bool(local.all()),
                "n_locally_optimal_samples": int(local.sum()),
                "not_locally_optimal_samples": np.flatnonzero(~local).tolist()[:100],
            }
    if args.save_w:
        write_npz(args.save_w, W=att.W, duals=att.duals, support=att.support, alpha=att.alpha)
        summary["saved_w"] = str(args.save_w)
    print(json.dumps(to_jsonable(summary), indent=2))
    if args.out:
        write_json(args.out, summary)
    return 0


def register(subparsers: Any) -> None:
    """Add the ``svm`` subcommand."""
    p = subparsers.add_parser(
        "svm",
        help="solve l_p-AttSVM (and the decoder l_p-SVM) for arrays in an NPZ file",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, type=Path, help="NPZ with X, z, alpha [, mask, y, v]")
    p.add_argument("--p", type=float, default=None, help="exponent p > 1 of ||W||_p (e.g. 1.75)")
    p.add_argument("--nuclear", action="store_true", help="minimise the nuclear norm instead (K/Q form)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON summary here (atomically)")
    p.add_argument("--save-w", type=Path, default=None, help="write W, duals, support, alpha to this NPZ")
    p.add_argument(
        "--active-set",
        choices=("auto", "on", "off"),
        default="auto",
        help="constraint generation: auto = on above 5,000 constraints",
    )
    p.add_argument("--tol", type=float, default=1e-8, help="solver tolerance / allowed margin violation")
    p.add_argument("--solver", default="clarabel", help="cvxpy conic solver (clarabel, scs)")
    p.set_defaults(func=run)


__all__ = ["load_arrays", "register", "run"]
