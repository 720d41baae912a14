"""Constraint sets of the max-margin problems, as a grid (groups x columns) of linear rows.

A constraint set never builds its full matrix unless asked: ``rows(flat)`` builds the rows of a
few constraints (for the conic solver) and ``margins(w)`` evaluates every margin cheaply in
chunks (for the active-set check). Input validation lives here too, so that every solver rejects
bad arrays with the same messages *before* any solve.

Attention constraints, sample i, token t != alpha_i (a real token):
    (x_{i,alpha_i} - x_it)^T W z_i >= 1,
    row = vec((x_{i,alpha_i} - x_it) z_i^T) (row-major vec, so that row @ W.ravel() is the margin),
    margin = s_{i,alpha_i} - s_it with s_i = X_i W z_i (O(T d) per sample given W z_i).
Decoder constraints, sample i: y_i x_{i,alpha_i}^T v >= 1 (one column per group).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mirrorattn.mirror import check_p_range
from mirrorattn.svm.errors import InfeasibleSVMError, InvalidSamplesError, SVMInputError, name_samples
from mirrorattn.tokens import check_real, real_array

#: samples per chunk when evaluating margins (keeps temporaries to a few MB)
_CHUNK = 4096
#: a constraint row whose norm is below this (relative to the data scale) is treated as zero
_ZERO_ROW_RTOL = 1e-12


def _from_torch(a: Any) -> Any:
    """A torch tensor as a NumPy array (detached, on the CPU); anything else as it is."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return a
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a


def solver_p(p: Any, name: str = "p") -> float:
    """``p`` as a float in the range the solvers support (:data:`mirrorattn.mirror.P_MIN` .. ``P_MAX``), or
    :class:`SVMInputError` saying so."""
    try:
        return check_p_range(p, name)
    except ValueError as exc:
        raise SVMInputError(str(exc)) from None


def _array(a: Any, name: str) -> np.ndarray:
    """``a`` (NumPy, torch or nested lists) as a NumPy array; ragged lists raise :class:`SVMInputError`."""
    try:
        return np.asarray(_from_torch(a))
    except (TypeError, ValueError) as exc:
        raise SVMInputError(f"{name} must be an array: {' '.join(str(exc).split())}") from None


def _as_float_array(a: Any, name: str) -> np.ndarray:
    """``a`` as float64 (bool and int are cast); complex, object and string data raise :class:`SVMInputError`.
    NaN/inf are checked later, per sample (padding may hold anything)."""
    return real_array(a, name, finite=False, error=SVMInputError)


def _nonfinite_samples(arr: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
    if bad.any():
        first = np.unravel_index(int(np.argmax(~np.isfinite(arr))), arr.shape)
        raise InvalidSamplesError(
            f"{name} has NaN or inf values in samples {name_samples(np.flatnonzero(bad))} "
            f"(first at index {tuple(int(i) for i in first)}); "
            "fix or drop those samples (a diverged training run produces them)",
            samples=np.flatnonzero(bad),
        )


def check_mask(mask: Any, n: int, T: int) -> np.ndarray:
    """The padding mask as a (n, T) bool array (True = real token); all True when ``None``."""
    if mask is None:
        return np.ones((n, T), dtype=bool)
    m = _array(mask, "mask")
    check_real(m, "mask", finite=False, error=SVMInputError)
    if m.shape != (n, T):
        raise SVMInputError(f"mask must have shape (n, T) = {(n, T)}, got {m.shape}")
    if m.dtype != bool:
        if not np.isin(m, (0, 1)).all():
            raise SVMInputError("mask must be boolean (True = real token, False = padding)")
        m = m.astype(bool)
    return m


def check_alpha(alpha: Any, n: int, T: int, mask: np.ndarray) -> np.ndarray:
    """``alpha`` as (n,) int64, checked to lie in [0, T) and on a real token."""
    a = _array(alpha, "alpha")
    if a.shape != (n,):
        raise SVMInputError(f"alpha must have shape (n,) = ({n},), one selected token per sample, got {a.shape}")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise SVMInputError("alpha must hold integer token indices")
    elif a.dtype.kind not in "iu":
        raise SVMInputError(f"alpha must hold integer token indices, got dtype {a.dtype}")
    a = a.astype(np.int64)
    out = (a < 0) | (a >= T)
    if out.any():
        raise InvalidSamplesError(
            f"alpha out of range [0, {T}) in samples {name_samples(np.flatnonzero(out))}; "
            "alpha_i must index a token of sample i",
            samples=np.flatnonzero(out),
        )
    pad = ~mask[np.arange(n), a]
    if pad.any():
        raise InvalidSamplesError(
            f"alpha points at a padding token in samples {name_samples(np.flatnonzero(pad))}; "
            "select a real token (mask True) or fix the mask",
            samples=np.flatnonzero(pad),
        )
    return a


class AttentionConstraints:
    """The l_p-AttSVM constraints for X (n, T, d), z (n, d), alpha (n,), mask (n, T).

    Validates the input on construction; raises :class:`SVMInputError` for malformed arrays
    and :class:`InfeasibleSVMError` for samples with a zero constraint row.
    """

    def __init__(self, X: Any, z: Any, alpha: Any, mask: Any = None) -> None:
        X = _as_float_array(X, "X")
        z = _as_float_array(z, "z")
        if X.ndim != 3:
            raise SVMInputError(f"X must have shape (n, T, d) (samples, tokens, features), got {X.shape}")
        n, T, d = X.shape
        if n == 0 or T == 0 or d == 0:
            raise SVMInputError(f"X must be non-empty, got shape {X.shape}")
        if z.shape != (n, d):
            raise SVMInputError(f"z must have shape (n, d) = {(n, d)} to match X {X.shape}, got {z.shape}")
        self.mask = check_mask(mask, n, T)
        # padding may hold anything (even NaN): zero it so that it never reaches a computation
        if not self.mask.all():
            X = np.where(self.mask[..., None], X, 0.0)
        _nonfinite_samples(X, "X")
        _nonfinite_samples(z, "z")
        if not np.isfinite(2.0 * float(np.abs(X).max()) * float(np.abs(z).max())):
            raise SVMInputError("X and z are too large: the constraint rows (x_ia - x_it) z_i^T overflow float64; "
                                "rescale them (unit-norm tokens and queries work best)")
        self.alpha = check_alpha(alpha, n, T, self.mask)
        self.X = np.ascontiguousarray(X)
        self.z = np.ascontiguousarray(z)
        self.n, self.T, self.d = n, T, d
        valid = self.mask.copy()
        valid[np.arange(n), self.alpha] = False
        self.valid = valid
        self.n_constraints = int(valid.sum())
        self.n_vars = d * d
        self.shape = (n, T)
        if self.n_constraints == 0:
            raise SVMInputError("no constraints: every sample has a single real token, so any W (even 0) works")
        self._check_degenerate()

    def _check_degenerate(self) -> None:
        diff_norm = np.empty((self.n, self.T))
        idx = np.arange(self.n)
        for s in range(0, self.n, _CHUNK):
            sl = slice(s, s + _CHUNK)
            xa = self.X[idx[sl], self.alpha[sl]]
            diff_norm[sl] = np.linalg.norm(xa[:, None, :] - self.X[sl], axis=2)
        scale = max(float(np.abs(self.X).max()), 1e-300)
        dup = self.valid & (diff_norm <= _ZERO_ROW_RTOL * scale)
        znorm = np.linalg.norm(self.z, axis=1)
        zero_z = (znorm <= _ZERO_ROW_RTOL * max(float(np.abs(self.z).max()), 1e-300)) & self.valid.any(axis=1)
        msgs = []
        bad: set[int] = set()
        if dup.any():
            rows = np.flatnonzero(dup.any(axis=1))
            bad.update(rows.tolist())
            msgs.append(
                f"a token equal to the selected token in samples {name_samples(rows)} (no W can separate equal tokens)"
            )
        if zero_z.any():
            rows = np.flatnonzero(zero_z)
            bad.update(rows.tolist())
            msgs.append(f"a zero query z_i in samples {name_samples(rows)} (every margin is 0)")
        if msgs:
            raise InfeasibleSVMError(
                "l_p-AttSVM is infeasible: " + "; ".join(msgs) + ". Drop or mask those tokens/samples, "
                "or pick another selected token alpha_i.",
                samples=bad,
            )

    def factors(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(a, z) with a_k = x_ia - x_it and z_k = z_i, (k, d) each: the rank-one factors of the rows of the
        constraints with flat indices i * T + t (row k = vec(a_k z_k^T), margin a_k^T W z_k)."""
        i, t = np.divmod(np.asarray(flat, dtype=np.int64), self.T)
        return self.X[i, self.alpha[i]] - self.X[i, t], self.z[i]

    def rows(self, flat: np.ndarray) -> np.ndarray:
        """Rows vec((x_ia - x_it) z_i^T) of the constraints with flat indices i * T + t: (k, d*d)."""
        dx, z = self.factors(flat)
        return (dx[:, :, None] * z[:, None, :]).reshape(len(dx), self.n_vars)

    def adjoint(self, lam: np.ndarray) -> np.ndarray:
        """A^T lam for multipliers ``lam`` on the (n, T) grid (zero outside ``valid`` is assumed): vec of
        sum_i g_i z_i^T with g_i = sum_t lam_it (x_ia - x_it), O(n T d + n d^2), never the constraint matrix."""
        lam = np.where(self.valid, np.asarray(lam, dtype=np.float64).reshape(self.shape), 0.0)
        xa = self.X[np.arange(self.n), self.alpha]
        g = lam.sum(axis=1)[:, None] * xa - np.einsum("nt,ntd->nd", lam, self.X)
        return (g.T @ self.z).ravel()

    def scores(self, W: np.ndarray) -> np.ndarray:
        """s_it = x_it^T W z_i, (n, T), computed in chunks (never forms the constraint matrix)."""
        W = np.asarray(W, dtype=np.float64).reshape(self.d, self.d)
        s = np.empty((self.n, self.T))
        for a in range(0, self.n, _CHUNK):
            sl = slice(a, a + _CHUNK)
            s[sl] = np.einsum("ntd,nd->nt", self.X[sl], self.z[sl] @ W.T)
        return s

    def margins(self, w: np.ndarray) -> np.ndarray:
        """Margins (n, T) of every constraint for vec(W) = ``w``; +inf at alpha and padding."""
        s = self.scores(w)
        m = s[np.arange(self.n), self.alpha][:, None] - s
        m[~self.valid] = np.inf
        return m

    def initial(self, k: int) -> np.ndarray:
        """A first working set: per sample the token closest to the selected one, at most k of them.

        The closest token (smallest ||x_ia - x_it|| ||z_i||) is the hardest to separate, so it is
        the most likely to be a support token; among samples, the k smallest such products win.
        """
        idx = np.arange(self.n)
        dist = np.full((self.n, self.T), np.inf)
        for a in range(0, self.n, _CHUNK):
            sl = slice(a, a + _CHUNK)
            xa = self.X[idx[sl], self.alpha[sl]]
            dist[sl] = np.linalg.norm(xa[:, None, :] - self.X[sl], axis=2)
        dist[~self.valid] = np.inf
        dist *= np.linalg.norm(self.z, axis=1)[:, None]
        t = np.argmin(dist, axis=1)
        best = dist[idx, t]
        has = np.isfinite(best)
        cand = idx[has]
        if len(cand) > k:
            cand = cand[np.argsort(best[has], kind="stable")[:k]]
        return np.sort(cand * self.T + t[cand])

    def group_of(self, flat: np.ndarray) -> np.ndarray:
        """Sample index of each flat constraint index."""
        return np.asarray(flat, dtype=np.int64) // self.T


class SharedQueryConstraints(AttentionConstraints):
    """The constraints (x_{i,alpha_i} - x_it)^T v >= 1 on v = W z (d variables) of an :class:`AttentionConstraints`
    whose samples share one query z (:func:`mirrorattn.svm.attention.shared_query`)."""

    def __init__(self, cs: AttentionConstraints) -> None:  # noqa: D107 - the checks were made on ``cs``
        self.__dict__.update(cs.__dict__)
        self.z = np.ones((cs.n, 1))
        self.n_vars = cs.d

    def rows(self, flat: np.ndarray) -> np.ndarray:
        """Rows x_ia - x_it of the constraints with flat indices i * T + t: (k, d)."""
        i, t = np.divmod(np.asarray(flat, dtype=np.int64), self.T)
        return self.X[i, self.alpha[i]] - self.X[i, t]

    def scores(self, W: np.ndarray) -> np.ndarray:
        """s_it = x_it^T v, (n, T)."""
        return self.X @ np.asarray(W, dtype=np.float64).reshape(self.d)


class DecoderConstraints:
    """The l_p-SVM constraints y_i x_{i,alpha_i}^T v >= 1: a grid of n groups x 1 column."""

    def __init__(self, X: Any, y: Any, alpha: Any, mask: Any = None) -> None:
        X = _as_float_array(X, "X")
        if X.ndim != 3:
            raise SVMInputError(f"X must have shape (n, T, d) (samples, tokens, features), got {X.shape}")
        n, T, d = X.shape
        if n == 0 or d == 0:
            raise SVMInputError(f"X must be non-empty, got shape {X.shape}")
        y = _as_float_array(y, "y")
        if y.shape != (n,):
            raise SVMInputError(f"y must have shape (n,) = ({n},), one label per sample, got {y.shape}")
        bad_y = ~np.isin(y, (-1.0, 1.0))
        if bad_y.any():
            raise SVMInputError(f"y must hold labels -1 or +1; samples {name_samples(np.flatnonzero(bad_y))} do not")
        mask_arr = check_mask(mask, n, T)
        a = check_alpha(alpha, n, T, mask_arr)
        xa = X[np.arange(n), a]
        _nonfinite_samples(xa, "X[i, alpha_i]")
        self.rows_all = y[:, None] * xa
        self.n, self.d = n, d
        self.shape = (n, 1)
        self.valid = np.ones((n, 1), dtype=bool)
        self.n_constraints = n
        self.n_vars = d
        norms = np.linalg.norm(xa, axis=1)
        zero = norms <= _ZERO_ROW_RTOL * max(float(np.abs(xa).max()), 1e-300)
        if zero.any():
            raise InfeasibleSVMError(
                f"l_p-SVM is infeasible: the selected token x_(i,alpha_i) is zero in samples "
                f"{name_samples(np.flatnonzero(zero))}, so y_i x^T v = 0 < 1 for every v; drop those samples.",
                samples=np.flatnonzero(zero),
            )

    def rows(self, flat: np.ndarray) -> np.ndarray:
        """Rows y_i x_{i,alpha_i} of the given constraints: (k, d)."""
        return self.rows_all[np.asarray(flat, dtype=np.int64)]

    def adjoint(self, lam: np.ndarray) -> np.ndarray:
        """A^T lam = sum_i lam_i y_i x_{i,alpha_i} for multipliers ``lam`` (n values)."""
        return self.rows_all.T @ np.asarray(lam, dtype=np.float64).reshape(-1)

    def margins(self, w: np.ndarray) -> np.ndarray:
        """Margins (n, 1) for ``w`` = v."""
        return (self.rows_all @ np.asarray(w, dtype=np.float64))[:, None]

    def initial(self, k: int) -> np.ndarray:
        """A first working set: the k samples with the smallest ||x_{i,alpha_i}|| (hardest)."""
        norms = np.linalg.norm(self.rows_all, axis=1)
        return np.sort(np.argsort(norms, kind="stable")[:k])

    def group_of(self, flat: np.ndarray) -> np.ndarray:
        """Sample index of each constraint."""
        return np.asarray(flat, dtype=np.int64)


__all__ = ["AttentionConstraints", "DecoderConstraints", "check_alpha", "check_mask", "solver_p"]
