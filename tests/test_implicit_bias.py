"""Implicit bias: l_p mirror descent on separable logistic regression tends to the l_p max-margin direction.

The max-margin classifiers min ||v||_p s.t. y_i x_i^T v >= 1 are solved independently with cvxpy
(Clarabel). The data (n = 20, d = 5, seeded) are chosen so that the l_p and l_2 solutions differ
in direction; the test checks that first, so that it can fail.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mirrorattn.mirror import directional_bregman
from mirrorattn.optim import LpMirrorDescent

cp = pytest.importorskip("cvxpy")


def _data() -> tuple[np.ndarray, np.ndarray]:
    r = np.random.default_rng(11)
    v_true = np.array([1.0, 0.5, 0.0, 0.0, 0.0])
    x = r.standard_normal((80, 5))
    x = x[np.abs(x @ v_true) > 0.4][:20]  # a gap around the true separator: few support vectors
    return x, np.sign(x @ v_true)


def max_margin(x: np.ndarray, y: np.ndarray, p: float) -> np.ndarray:
    v = cp.Variable(x.shape[1])
    prob = cp.Problem(cp.Minimize(cp.pnorm(v, p)), [cp.multiply(y, x @ v) >= 1])
    prob.solve(solver=cp.CLARABEL)
    if prob.status != cp.OPTIMAL:
        raise AssertionError(f"cvxpy l_{p} max-margin solve ended with status {prob.status}")
    return np.asarray(v.value)


def train(x: np.ndarray, y: np.ndarray, p: float, lr: float, steps: int, normalized: bool) -> np.ndarray:
    w = torch.nn.Parameter(torch.zeros(x.shape[1], dtype=torch.float64))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    # eps far below the gradient norms met here (down to ~1e-45), so that the normalised step stays
    # a full step once the loss is tiny (the default 1e-12 would stall it, as it should in practice)
    opt = LpMirrorDescent([w], lr=lr, p=p, normalized=normalized, eps=1e-300)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.softplus(-yt * (xt @ w)).mean().backward()
        opt.step()
    return w.detach().numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.slow
@pytest.mark.parametrize("p,lr,steps,normalized", [
    (1.25, 0.1, 600, True),
    (1.25, 1.0, 1000, False),
    (3.0, 20.0, 1500, True),
])
def test_lp_md_converges_toward_lp_max_margin(p, lr, steps, normalized):
    x, y = _data()
    assert len(y) == 20 and np.all(y * (x @ np.array([1.0, 0.5, 0, 0, 0])) > 0)
    v2, vp = max_margin(x, y, 2.0), max_margin(x, y, p)
    gap = directional_bregman(v2, vp, p)
    assert gap > 5e-3, "data too easy: the l_p and l_2 max-margin directions coincide"
    w = train(x, y, p, lr, steps, normalized)
    assert np.all(y * (x @ w) > 0), "mirror descent did not separate the data"
    d_p, d_2 = directional_bregman(vp, w, p), directional_bregman(v2, w, p)
    assert d_p < 0.25 * d_2, (d_p, d_2)
    assert d_p < 0.3 * gap, (d_p, gap)
    assert 1 - cosine(w, vp) < 1 - cosine(w, v2)
