"""Synthetic data of paper.md section 5 (float64, seeded).

* :func:`make_synthetic`: tokens X (n, T, d), queries z (n, d) and decoder v (d,) drawn standard
  normal, each token, query and v scaled to unit l_2 norm; labels y in {-1, +1} uniformly at random.
  One seed gives one data set (the authors draw the data afresh for every seed).
* :func:`make_synthetic_batch`: the same for many seeds, stacked on a leading seed axis.
* :func:`joint_dataset`: the fixed (W, v) joint-training set of section 5.2.

The draw order for a seed is X, z, v, y from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mirrorattn.checks import check_int

__all__ = ["SyntheticData", "joint_dataset", "make_synthetic", "make_synthetic_batch", "unit_rows"]


@dataclass(frozen=True)
class SyntheticData:
    """One data set, or a stack of them (leading seed axis S when ``batched``).

    X: (n, T, d) tokens; z: (n, d) queries; y: (n,) labels in {-1, +1}; v: (d,) decoder.
    """

    X: np.ndarray
    z: np.ndarray
    y: np.ndarray
    v: np.ndarray

    @property
    def batched(self) -> bool:
        return self.X.ndim == 4


def unit_rows(a: np.ndarray) -> np.ndarray:
    """Scale every vector along the last axis to unit l_2 norm (a zero vector raises)."""
    nrm = np.linalg.norm(a, axis=-1, keepdims=True)
    if np.any(nrm == 0):
        raise ValueError("cannot scale a zero vector to unit norm")
    return a / nrm


def _check_dims(n: int, T: int, d: int) -> None:
    for name, val, low in (("n", n, 1), ("T", T, 2), ("d", d, 1)):
        check_int(val, name, low)


def make_synthetic(n: int, T: int, d: int, seed: int) -> SyntheticData:
    """Data of paper.md section 5 for one seed: unit-norm Gaussian X, z, v and random +-1 labels."""
    _check_dims(n, T, d)
    rng = np.random.default_rng(seed)
    X = unit_rows(rng.standard_normal((n, T, d)))
    z = unit_rows(rng.standard_normal((n, d)))
    v = unit_rows(rng.standard_normal(d))
    y = rng.choice(np.array([-1.0, 1.0]), size=n)
    return SyntheticData(X=X, z=z, y=y, v=v)


def make_synthetic_batch(n: int, T: int, d: int, seeds: Sequence[int]) -> SyntheticData:
    """:func:`make_synthetic` for every seed, stacked: X (S, n, T, d), z (S, n, d), y (S, n), v (S, d)."""
    if len(seeds) == 0:
        raise ValueError("need at least one seed")
    parts = [make_synthetic(n, T, d, int(s)) for s in seeds]
    return SyntheticData(
        X=np.stack([p.X for p in parts]),
        z=np.stack([p.z for p in parts]),
        y=np.stack([p.y for p in parts]),
        v=np.stack([p.v for p in parts]),
    )


def joint_dataset() -> SyntheticData:
    """The fixed joint-training set of paper.md 5.2: n = 2, T = 3, d = 2, z_i = first token of X_i.

    ``v`` is zero (v is trained from v_0 = 0 in that experiment).
    """
    X = np.array(
        [[[-2.7, 1.2], [1.4, 2.1], [1.3, -0.1]], [[0.4, -2.2], [-1.1, -0.4], [0.9, 0.1]]],
        dtype=np.float64,
    )
    y = np.array([1.0, -1.0])
    z = X[:, 0, :].copy()
    return SyntheticData(X=X, z=z, y=y, v=np.zeros(2))
