"""Metrics against closed forms and hand computations, on NumPy and torch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mirrorattn import mirror
from mirrorattn.metrics import (
    attention_entropy,
    cosine_correlation,
    directional_bregman,
    hoyer_sparsity,
    lp_distance,
    max_probability,
    selected_mass,
    topk_mass,
    weight_sparsity,
)


def test_directional_bregman_is_the_mirror_module_function():
    assert directional_bregman is mirror.directional_bregman


def test_cosine_correlation():
    A = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert cosine_correlation(A, 3 * A) == pytest.approx(1.0)
    assert cosine_correlation(A, -A) == pytest.approx(-1.0)
    assert cosine_correlation(A, np.array([[0.0, 1.0], [1.0, 0.0]])) == pytest.approx(0.0)
    B = np.array([[1.0, 1.0], [0.0, 0.0]])
    assert cosine_correlation(torch.as_tensor(A), B) == pytest.approx(1 / 2)  # 1 / (sqrt2 sqrt2)
    with pytest.raises(ValueError, match="zero"):
        cosine_correlation(A, 0 * A)


def test_lp_distance_hand_computed():
    A = np.array([3.0, 4.0])
    assert lp_distance(A, 2 * A, 2.0) == pytest.approx(0.0, abs=1e-15)
    # p = 2: A/5 - (1,0) = (-0.4, 0.8): norm sqrt(0.8)
    assert lp_distance(A, np.array([1.0, 0.0]), 2.0) == pytest.approx(math.sqrt(0.8))
    # p = 3: ||A||_3 = (27 + 64)^(1/3)
    n3 = 91 ** (1 / 3)
    ref = (abs(3 / n3 - 1) ** 3 + (4 / n3) ** 3) ** (1 / 3)
    assert lp_distance(torch.tensor(A), np.array([1.0, 0.0]), 3.0) == pytest.approx(ref)


def test_attention_sparsity_measures():
    probs = np.array([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0]])
    np.testing.assert_allclose(attention_entropy(probs), [0.0, math.log(4), math.log(2)])
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [1, 0, 1, 1]], dtype=bool)
    np.testing.assert_allclose(attention_entropy(probs, mask), [0.0, math.log(4), 0.5 * math.log(2)])
    np.testing.assert_allclose(max_probability(probs), [1.0, 0.25, 0.5])
    np.testing.assert_allclose(selected_mass(probs, np.array([0, 3, 2])), [1.0, 0.25, 0.0])
    np.testing.assert_allclose(topk_mass(probs, 2), [1.0, 0.5, 1.0])
    t = torch.as_tensor(probs, dtype=torch.float32)
    out = attention_entropy(t)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), [0.0, math.log(4), math.log(2)], rtol=1e-6)
    assert isinstance(max_probability(t), torch.Tensor)
    # batch axes: (seeds, n, T)
    assert attention_entropy(np.stack([probs, probs])).shape == (2, 3)
    with pytest.raises(ValueError, match="k must be"):
        topk_mass(probs, 5)
    with pytest.raises(ValueError, match="non-negative"):
        max_probability(-probs)
    with pytest.raises(ValueError, match="index"):
        selected_mass(probs, np.array([0, 4, 1]))


def test_weight_sparsity_and_hoyer():
    w = np.array([0.1, -0.05, 0.07, 0.0, -0.2])
    assert weight_sparsity(w, 0.06) == {"fraction": 3 / 5, "count": 3, "total": 5}
    assert weight_sparsity(torch.as_tensor(w), 0.06)["count"] == 3
    assert hoyer_sparsity(np.array([0.0, 0.0, 5.0, 0.0])) == pytest.approx(1.0)
    assert hoyer_sparsity(np.array([-1.0, 1.0, 1.0, -1.0])) == pytest.approx(0.0)
    x = np.array([1.0, 2.0, 0.0, 0.0])
    ref = (2 - 3 / math.sqrt(5)) / (2 - 1)
    assert hoyer_sparsity(torch.as_tensor(x)) == pytest.approx(ref)
    with pytest.raises(ValueError):
        hoyer_sparsity(np.zeros(3))
