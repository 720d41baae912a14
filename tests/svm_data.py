"""Small random token sets for the max-margin tests (paper.md section 5: unit-l2 tokens and queries).

Each helper takes the generator, so that a test decides what else it draws and in what order
(the order fixes the arrays a seed gives).
"""

from __future__ import annotations

import numpy as np


def unit_rows(a: np.ndarray) -> np.ndarray:
    """``a`` with every vector along the last axis scaled to unit l2 norm (in place, returned)."""
    a /= np.linalg.norm(a, axis=-1, keepdims=True)
    return a


def unit_tokens(rng: np.random.Generator, n: int, T: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """X (n, T, d) tokens and z (n, d) queries, standard normal draws scaled to unit l2 norm."""
    X = unit_rows(rng.standard_normal((n, T, d)))
    return X, unit_rows(rng.standard_normal((n, d)))


def best_tokens(X: np.ndarray, W: np.ndarray, z: np.ndarray) -> np.ndarray:
    """alpha_i = argmax_t x_it^T W z_i, (n,): tokens that W separates, so l_p-AttSVM is feasible."""
    return np.argmax(np.einsum("ntd,de,ne->nt", X, W, z), axis=1)


def unit_gaussian(n: int, T: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """X (n, T, d), z (n, d) unit-l2 rows; feasible alpha = argmax x_it^T W0 z_i for a random W0."""
    rng = np.random.default_rng(seed)
    X, z = unit_tokens(rng, n, T, d)
    return X, z, best_tokens(X, rng.standard_normal((d, d)), z)
