"""Decoder l_p-SVM, joint and nuclear-norm solvers against independent computations."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
from scipy.optimize import minimize

from mirrorattn.svm import attention_svm, attention_svm_nuclear, decoder_svm, joint_svm
from svm_data import best_tokens, unit_tokens


def data(n=8, T=5, d=4, seed=0):
    """X, z unit-l2; alpha feasible for a random W0; labels y separable by a random v0 on x_(i,alpha_i)."""
    rng = np.random.default_rng(seed)
    X, z = unit_tokens(rng, n, T, d)
    v0 = rng.standard_normal(d)
    alpha = best_tokens(X, rng.standard_normal((d, d)), z)
    y = np.sign(X[np.arange(n), alpha] @ v0)  # separable labels
    return X, z, y, alpha


def test_decoder_p2_equals_slsqp():
    X, _, y, alpha = data()
    res = decoder_svm(X, y, alpha, 2.0)
    B = np.array([y[i] * X[i, alpha[i]] for i in range(len(y))])
    out = minimize(
        lambda v: 0.5 * v @ v,
        np.zeros(4),
        jac=lambda v: v,
        method="SLSQP",
        constraints=[{"type": "ineq", "fun": lambda v: B @ v - 1, "jac": lambda v: B}],
        options={"ftol": 1e-15, "maxiter": 500},
    )
    assert out.success
    assert res.objective == pytest.approx(np.linalg.norm(out.x), rel=1e-6)
    np.testing.assert_allclose(res.v, out.x, atol=1e-6)
    assert res.v.shape == (4,) and res.duals.shape == res.support.shape == (8,)


@pytest.mark.parametrize("p", [1.75, 3.0])
def test_decoder_kkt(p):
    X, _, y, alpha = data(seed=1)
    res = decoder_svm(X, y, alpha, p)
    B = y[:, None] * X[np.arange(len(y)), alpha]
    v = res.v
    grad = np.sign(v) * np.abs(v) ** (p - 1) / np.sum(np.abs(v) ** p) ** ((p - 1) / p)
    np.testing.assert_allclose(B.T @ res.duals, grad, atol=1e-6 * np.abs(grad).max())
    assert np.all(res.duals >= 0) and (B @ v).min() >= 1.0 - 1e-12
    assert np.max(np.abs(res.duals * (B @ v - 1))) <= 1e-6
    np.testing.assert_array_equal(res.support, B @ v <= 1 + 1e-6)


def test_joint_equals_separate_calls():
    X, z, y, alpha = data(seed=2)
    j = joint_svm(X, z, y, alpha, 1.75)
    a = attention_svm(X, z, alpha, 1.75)
    d = decoder_svm(X, y, alpha, 1.75)
    assert j.attention.objective == pytest.approx(a.objective, rel=1e-9)
    assert j.decoder.objective == pytest.approx(d.objective, rel=1e-9)
    j3 = joint_svm(X, z, y, alpha, 1.75, p_decoder=3.0)
    assert j3.decoder.p == 3.0 and j3.attention.p == 1.75


def test_nuclear_against_sdp_form_and_kkt():
    X, z, _, alpha = data(n=6, T=5, d=4, seed=3)
    res = attention_svm_nuclear(X, z, alpha)
    assert res.p == "nuclear"
    # independent: ||W||_* = min (tr P + tr Q) / 2 s.t. [[P, W], [W^T, Q]] PSD
    d = 4
    W = cp.Variable((d, d))
    M = cp.Variable((2 * d, 2 * d), PSD=True)
    cons = [M[:d, d:] == W]
    for i in range(6):
        for t in range(5):
            if t != alpha[i]:
                cons.append((X[i, alpha[i]] - X[i, t]) @ W @ z[i] >= 1)
    prob = cp.Problem(cp.Minimize(cp.trace(M) / 2), cons)
    prob.solve(solver="SCS", eps_abs=1e-9, eps_rel=1e-9, max_iters=100000)
    assert res.objective == pytest.approx(prob.value, rel=1e-5)
    # KKT: G = sum duals (x_a - x_t) z^T has spectral norm <= 1 and <G, W> = ||W||_*
    G = sum(res.duals[i, t] * np.outer(X[i, alpha[i]] - X[i, t], z[i]) for i in range(6) for t in range(5))
    assert np.linalg.norm(G, 2) <= 1 + 1e-6
    assert np.sum(G * res.W) == pytest.approx(res.objective, rel=1e-6)
    assert res.objective == pytest.approx(np.linalg.svd(res.W, compute_uv=False).sum(), rel=1e-12)
    assert res.min_margin >= 1.0


def test_nuclear_active_set_equals_one_shot():
    X, z, _, alpha = data(n=40, T=6, d=3, seed=4)
    one = attention_svm_nuclear(X, z, alpha, active_set="off")
    act = attention_svm_nuclear(X, z, alpha, active_set="on")
    assert act.method == "active-set"
    assert act.objective == pytest.approx(one.objective, rel=1e-6)
