"""``mirrorattn svm``: solve l_p-AttSVM (and the decoder l_p-SVM) for arrays saved in an NPZ file.

    mirrorattn svm --data arrays.npz --p 1.75 [--out summary.json] [--save-w W.npz]

The NPZ holds ``X`` (n, T, d), ``z`` (n, d), ``alpha`` (n,) and optionally ``mask`` (n, T),
``y`` (n,) and ``v`` (d,). With ``y`` the decoder l_p-SVM is solved too; with ``y`` and ``v`` the
summary also says whether alpha is globally / locally optimal for the token scores
gamma = y * (X v). Every array must hold real numbers (NaN/inf only on padding tokens); arrays with other
names are listed as ``ignored_arrays``. The JSON summary is printed and, with ``--out``, written
atomically; ``--out`` and ``--save-w`` are written together, once everything succeeded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mirrorattn.io import atomic_path, to_jsonable
from mirrorattn.mirror import P_MAX, P_MIN
from mirrorattn.svm.errors import SVMInputError

REQUIRED = ("X", "z", "alpha")
OPTIONAL = ("mask", "y", "v")
_LAYOUT = "X (n, T, d), z (n, d), alpha (n,) and optionally mask (n, T), y (n,), v (d,)"
#: what reading a damaged or crafted NPZ can raise (zip, zlib and .npy header errors; a header asking for
#: more memory than there is)
_READ_ERRORS = (OSError, EOFError, KeyError, NotImplementedError, OverflowError, MemoryError,
                RuntimeError, zipfile.BadZipFile, zlib.error)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of the NPZ file ``path`` (never unpickled); one-line :class:`SVMInputError` naming the file
    for an empty file, a file that is not a zip archive, a damaged archive or object arrays."""
    how = "save the arrays with numpy.savez(path, X=X, z=z, alpha=alpha)"
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not head:
        raise SVMInputError(f"--data {path}: the file is empty (0 bytes), not an NPZ file; {how}")
    if head[:2] != b"PK":
        raise SVMInputError(f"--data {path}: not an NPZ file (an NPZ is a zip archive of .npy arrays; this file "
                            f"starts with {head!r}); {how}")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: np.asarray(f[k]) for k in f.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise SVMInputError(f"--data {path}: holds object arrays, which only pickle could load (never done: "
                                "unpickling can run code); save numeric arrays") from None
        raise SVMInputError(f"--data {path}: not a readable NPZ file ({' '.join(str(exc).split())})") from None
    except _READ_ERRORS as exc:
        why = " ".join(str(exc).split()) or type(exc).__name__
        raise SVMInputError(f"--data {path}: not a readable NPZ file, damaged or truncated ({why})") from None


def _check_arrays(arrays: dict[str, np.ndarray]) -> None:
    """Dtypes of every array and the values / shape of ``v`` and ``y`` (the solvers check the rest)."""
    from mirrorattn.tokens import check_real

    for key in ("X", "z", "y", "v", "mask"):
        if key in arrays:
            check_real(arrays[key], key, finite=key in ("y", "v"), error=SVMInputError)
    X, v = arrays["X"], arrays.get("v")
    if v is not None and X.ndim == 3 and v.shape != (X.shape[2],):
        raise SVMInputError(f"v must have shape (d,) = ({X.shape[2]},) to match X {X.shape}, got {v.shape}")


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an NPZ file, checked to contain X, z and alpha (real numbers; y and v finite) - one clear
    :class:`SVMInputError` otherwise."""
    path = Path(path)
    if path.is_dir():
        raise SVMInputError(f"--data {path} is a folder; give the NPZ file")
    if not path.is_file():
        raise SVMInputError(f"--data {path}: no such file; save the arrays with numpy.savez(path, X=, z=, alpha=)")
    arrays = _read_npz(path)
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise SVMInputError(f"--data {path}: missing arrays {missing} (found {sorted(arrays)}); "
                            f"the file needs {_LAYOUT}")
    try:
        _check_arrays(arrays)
    except SVMInputError as exc:
        raise SVMInputError(f"--data {path}: {exc}") from None
    return arrays


def ignored_arrays(arrays: dict[str, np.ndarray]) -> list[str]:
    """Names of arrays that the command does not use (unknown names; ``v`` without ``y``)."""
    extra = sorted(k for k in arrays if k not in REQUIRED + OPTIONAL)
    return extra + (["v"] if "v" in arrays and "y" not in arrays else [])


def write_outputs(outputs: list[tuple[str, Path, str, Callable[[Path], None]]]) -> None:
    """Write several result files so that either all of them appear or none that this call would create.

    ``outputs``: (option, path, suffix, write(tmp)). Every file is written to a temporary file beside its
    destination and renamed only once all of them were written (:func:`mirrorattn.io.atomic_path`); when a
    step fails, a destination that did not exist before the call is removed again.
    """
    paths = [Path(path) for _, path, _, _ in outputs]
    for (option, path, _, _), other in zip(outputs, paths):
        if path.is_dir():
            raise SVMInputError(f"{option} {path} is an existing folder; give a file name")
        if sum(p.resolve() == other.resolve() for p in paths) > 1:
            raise SVMInputError(f"{option} {path} is also given to another option; give each output its own file")
    existed = {p: p.exists() for p in paths}
    try:
        with contextlib.ExitStack() as stack:
            tmps = [stack.enter_context(atomic_path(p, suffix)) for p, (_, _, suffix, _) in zip(paths, outputs)]
            for tmp, (_, _, _, write) in zip(tmps, outputs):
                write(tmp)
    except BaseException:
        for p in paths:
            if not existed[p] and p.exists():
                p.unlink()
        raise


def _optimality(arr: dict[str, np.ndarray], att: Any, mask: Any) -> dict[str, Any]:
    """Whether alpha is globally / locally optimal for the token scores gamma = y * (X v)."""
    from mirrorattn.tokens import NonUniqueTokenError, globally_optimal_tokens, locally_optimal_samples, token_scores

    X = np.asarray(arr["X"], np.float64)
    real = np.ones(X.shape[:2], dtype=bool) if mask is None else np.asarray(mask).astype(bool)
    X = np.where(real[..., None], X, 0.0)  # padding may hold anything, even NaN
    try:
        gamma = token_scores(X, np.asarray(arr["y"], np.float64), np.asarray(arr["v"], np.float64))
        try:
            glob: Any = bool(np.array_equal(globally_optimal_tokens(gamma, real), att.alpha))
        except NonUniqueTokenError:
            glob = None  # ties: the globally optimal token is not unique
        local = locally_optimal_samples(att.alpha, att, gamma)
    except ValueError as exc:  # e.g. y (X v) overflows float64
        raise SVMInputError(f"the optimality check failed: {exc}") from None
    return {
        "globally_optimal": glob,
        "locally_optimal": bool(local.all()),
        "n_locally_optimal_samples": int(local.sum()),
        "not_locally_optimal_samples": np.flatnonzero(~local).tolist()[:100],
    }


def run(args: argparse.Namespace) -> int:
    """Solve and report; returns the exit code. Nothing is written unless everything succeeded."""
    from mirrorattn.svm.attention import attention_svm
    from mirrorattn.svm.constraints import solver_p
    from mirrorattn.svm.decoder import decoder_svm
    from mirrorattn.svm.nuclear import attention_svm_nuclear

    if not args.nuclear and args.p is None:
        raise SVMInputError(f"--p is required (the exponent of ||W||_p, from {P_MIN:g} to {P_MAX:g}), unless --nuclear")
    if args.p is not None:
        solver_p(args.p, "--p")
    arr = load_arrays(args.data)
    X, z, alpha, mask = arr["X"], arr["z"], arr["alpha"], arr.get("mask")
    kw: dict[str, Any] = {"mask": mask, "solver": args.solver, "active_set": args.active_set, "tol": args.tol}
    att = attention_svm_nuclear(X, z, alpha, **kw) if args.nuclear else attention_svm(X, z, alpha, args.p, **kw)
    summary: dict[str, Any] = {"data": str(args.data), "attention": att.summary()}
    if ignored_arrays(arr):
        summary["ignored_arrays"] = ignored_arrays(arr)
    if "y" in arr:
        p_dec = args.p if args.p is not None else 2.0
        summary["decoder"] = decoder_svm(X, arr["y"], alpha, p_dec, **kw).summary()
        if "v" in arr:
            summary["optimality"] = _optimality(arr, att, mask)
    outputs: list[tuple[str, Path, str, Callable[[Path], None]]] = []
    if args.save_w:
        saved = {"W": att.W, "duals": att.duals, "support": att.support, "alpha": att.alpha}
        outputs.append(("--save-w", Path(args.save_w), ".npz", lambda tmp: np.savez_compressed(tmp, **saved)))
        summary["saved_w"] = str(args.save_w)
    text = json.dumps(to_jsonable(summary), indent=2, allow_nan=False)
    if args.out:
        outputs.append(("--out", Path(args.out), "", lambda tmp: tmp.write_text(text + "\n", encoding="utf-8")))
    write_outputs(outputs)
    print(text)
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
    p.add_argument("--p", type=float, default=None,
                   help=f"exponent p of ||W||_p (e.g. 1.75), from {P_MIN:g} to {P_MAX:g}")
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


__all__ = ["ignored_arrays", "load_arrays", "register", "run", "write_outputs"]
