"""l_p-AttSVM against independent computations: scipy SLSQP (p = 2), a hand-written power-cone
epigraph (other p), the KKT conditions, invariances, padding, and the active set."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
from scipy.optimize import minimize

from mirrorattn.svm import attention_svm
from svm_data import unit_gaussian

P_VALUES = [1.75, 2.0, 3.0, 1.3]


def rows_loop(X, z, alpha, mask=None):
    """Constraint matrices (x_ia - x_it) z_i^T, flattened, one by one in plain Python."""
    rows, index = [], []
    n, T, _ = X.shape
    for i in range(n):
        for t in range(T):
            if t == alpha[i] or (mask is not None and not mask[i, t]):
                continue
            rows.append(np.outer(X[i, alpha[i]] - X[i, t], z[i]).ravel())
            index.append((i, t))
    return np.array(rows), index


def powcone_epigraph(A: np.ndarray, p: float) -> tuple[np.ndarray, float]:
    """min t s.t. sum r = t, |w_j| <= r_j^(1/p) t^(1-1/p) (3-D power cones), A w >= 1."""
    m = A.shape[1]
    w, r, t = cp.Variable(m), cp.Variable(m), cp.Variable()
    cons = [A @ w >= 1, cp.sum(r) == t, cp.PowCone3D(r, t * np.ones(m), w, 1.0 / p)]
    prob = cp.Problem(cp.Minimize(t), cons)
    prob.solve(solver="CLARABEL", tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    assert prob.status == "optimal"
    return np.asarray(w.value), float(t.value)


@pytest.fixture(scope="module")
def small():
    return unit_gaussian(6, 8, 10, seed=1)


def test_p2_equals_scipy_slsqp(small):
    X, z, alpha = small
    res = attention_svm(X, z, alpha, 2.0)
    A, _ = rows_loop(X, z, alpha)
    # independent: SLSQP on 0.5 ||w||^2 with linear inequality constraints, from the zero start
    out = minimize(
        lambda w: 0.5 * w @ w,
        np.zeros(A.shape[1]),
        jac=lambda w: w,
        constraints=[{"type": "ineq", "fun": lambda w: A @ w - 1.0, "jac": lambda w: A}],
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 1000},
    )
    assert out.success, out.message
    assert res.status == "optimal" and res.method == "one-shot" and res.iterations == 1
    assert res.objective == pytest.approx(np.linalg.norm(out.x), rel=1e-6)
    np.testing.assert_allclose(res.W.ravel(), out.x, atol=1e-5 * np.abs(out.x).max())


@pytest.mark.parametrize("p", P_VALUES)
def test_objective_equals_power_cone_epigraph(small, p):
    X, z, alpha = small
    res = attention_svm(X, z, alpha, p)
    A, _ = rows_loop(X, z, alpha)
    w_ref, t_ref = powcone_epigraph(A, p)
    assert res.objective == pytest.approx(t_ref, rel=1e-6)
    # exact objective: recomputed from W, not the solver's value
    assert res.objective == pytest.approx(np.sum(np.abs(res.W) ** p) ** (1 / p), rel=1e-12)
    np.testing.assert_allclose(res.W.ravel(), w_ref, atol=1e-5 * np.abs(w_ref).max())
    assert res.min_margin >= 1.0
    assert A @ res.W.ravel() == pytest.approx(res.margins[~np.isnan(res.margins)], rel=1e-10)


@pytest.mark.parametrize("p", P_VALUES)
def test_kkt_conditions(small, p):
    X, z, alpha = small
    res = attention_svm(X, z, alpha, p)
    assert res.polished  # Newton on the support set made W and the duals exact
    A, index = rows_loop(X, z, alpha)
    lam = np.array([res.duals[i, t] for i, t in index])
    w = res.W.ravel()
    norm = np.sum(np.abs(w) ** p) ** (1 / p)
    grad = np.sign(w) * np.abs(w) ** (p - 1) / norm ** (p - 1)  # gradient of ||w||_p
    margins = A @ w
    assert np.all(lam >= 0)
    np.testing.assert_allclose(A.T @ lam, grad, atol=1e-9 * np.abs(grad).max())  # stationarity
    assert np.max(np.abs(lam * (margins - 1.0))) <= 1e-9 * lam.max()  # complementary slackness
    assert margins.min() >= 1.0 - 1e-12  # primal feasibility (exactly, after the rescale)
    # duals are zero at the selected token
    assert np.all(res.duals[np.arange(len(alpha)), alpha] == 0)
    # by homogeneity: sum of duals = ||W||_p
    assert lam.sum() == pytest.approx(res.objective, rel=1e-6)


@pytest.mark.parametrize("p", [1.75, 3.0])
def test_support_tokens_are_tight_constraints(small, p):
    X, z, alpha = small
    res = attention_svm(X, z, alpha, p)
    A, index = rows_loop(X, z, alpha)
    margins = A @ res.W.ravel()
    tight = np.zeros_like(res.support)
    for (i, t), m in zip(index, margins):
        tight[i, t] = m <= 1 + 1e-6
    assert tight.any() and not tight.all()
    np.testing.assert_array_equal(res.support, tight)
    # strict complementarity on generic data: support <=> positive dual
    np.testing.assert_array_equal(res.support, res.duals > 1e-6 * res.duals.max())


@pytest.mark.parametrize("p", [1.75, 2.0])
def test_permutation_invariance(small, p):
    X, z, alpha = small
    rng = np.random.default_rng(7)
    base = attention_svm(X, z, alpha, p)
    ps = rng.permutation(X.shape[0])
    pt = rng.permutation(X.shape[1])
    inv = np.argsort(pt)
    Xp = X[ps][:, pt]
    alpha_p = inv[alpha[ps]]
    res = attention_svm(Xp, z[ps], alpha_p, p)
    assert res.objective == pytest.approx(base.objective, rel=1e-7)
    np.testing.assert_allclose(res.W, base.W, atol=1e-6 * np.abs(base.W).max())
    np.testing.assert_array_equal(res.support, base.support[ps][:, pt])


@pytest.mark.parametrize("c", [3.0, 0.25])
def test_scaling_z_scales_solution(small, c):
    X, z, alpha = small
    base = attention_svm(X, z, alpha, 1.75)
    res = attention_svm(X, c * z, alpha, 1.75)
    assert res.objective == pytest.approx(base.objective / c, rel=1e-7)
    np.testing.assert_allclose(res.W, base.W / c, atol=1e-6 * np.abs(base.W / c).max())


def test_padding_mask_equals_duplicated_tokens():
    # padding must be ignored: NaN there is fine, and the answer equals the problem where each
    # padding token is replaced by a copy of a real non-selected token (a duplicate constraint)
    X, z, alpha = unit_gaussian(8, 7, 5, seed=3)
    rng = np.random.default_rng(0)
    mask = np.ones(X.shape[:2], dtype=bool)
    X_dup = X.copy()
    X_pad = X.copy()
    for i in range(X.shape[0]):
        k = rng.integers(0, 4)
        pad = [t for t in range(X.shape[1]) if t != alpha[i]][-k:] if k else []
        mask[i, pad] = False
        X_pad[i, pad] = np.nan
        real = [t for t in range(X.shape[1]) if mask[i, t] and t != alpha[i]]
        X_dup[i, pad] = X[i, real[0]]
    assert not mask.all()
    res = attention_svm(X_pad, z, alpha, 1.75, mask=mask)
    ref = attention_svm(X_dup, z, alpha, 1.75)
    assert res.objective == pytest.approx(ref.objective, rel=1e-7)
    assert res.n_constraints == int(mask.sum()) - X.shape[0]
    assert np.all(res.duals[~mask] == 0) and not res.support[~mask].any()
    assert np.all(np.isnan(res.margins[~mask]))


@pytest.mark.parametrize("p", [1.75, 2.0, 3.0])
def test_active_set_equals_one_shot(p):
    X, z, alpha = unit_gaussian(80, 8, 5, seed=4)
    one = attention_svm(X, z, alpha, p, active_set="off")
    act = attention_svm(X, z, alpha, p, active_set="on")
    assert act.method == "active-set" and act.iterations >= 2
    assert act.n_working < act.n_constraints
    assert act.objective == pytest.approx(one.objective, rel=1e-7)
    np.testing.assert_allclose(act.W, one.W, atol=1e-5 * np.abs(one.W).max())
    np.testing.assert_array_equal(act.support, one.support)
    np.testing.assert_allclose(act.duals, one.duals, atol=1e-5 * one.duals.max())
    assert act.min_margin >= 1.0


def test_torch_input_and_result_types(small):
    import torch

    X, z, alpha = small
    res = attention_svm(torch.as_tensor(X), torch.as_tensor(z), torch.as_tensor(alpha), 1.75)
    ref = attention_svm(X, z, alpha, 1.75)
    assert res.objective == pytest.approx(ref.objective, rel=1e-9)
    assert res.W.dtype == np.float64 and res.W.shape == (10, 10)
    assert res.duals.shape == res.support.shape == (6, 8) and res.support.dtype == bool
    assert isinstance(res.solve_seconds, float) and res.solve_seconds > 0
    assert res.p == 1.75 and res.n_constraints == 6 * 7
    np.testing.assert_array_equal(res.alpha, alpha)


def test_auto_switches_to_active_set_above_threshold(monkeypatch):
    import mirrorattn.svm.core as core

    X, z, alpha = unit_gaussian(30, 6, 4, seed=5)  # 150 constraints
    assert attention_svm(X, z, alpha, 1.75).method == "one-shot"
    monkeypatch.setattr(core, "ACTIVE_SET_THRESHOLD", 100)
    res = attention_svm(X, z, alpha, 1.75)
    assert res.method == "active-set"
    assert res.history and res.history[-1]["violated"] == 0


def test_decoder_active_set_equals_one_shot():
    from mirrorattn.svm import decoder_svm

    X, _, alpha = unit_gaussian(300, 3, 6, seed=6)
    v0 = np.random.default_rng(0).standard_normal(6)
    y = np.sign(X[np.arange(300), alpha] @ v0)
    one = decoder_svm(X, y, alpha, 1.75, active_set="off")
    act = decoder_svm(X, y, alpha, 1.75, active_set="on")
    assert act.method == "active-set"
    assert act.objective == pytest.approx(one.objective, rel=1e-8)
    np.testing.assert_allclose(act.v, one.v, atol=1e-8 * np.abs(one.v).max())


@pytest.mark.slow
@pytest.mark.parametrize("p", [1.75, 3.0])
def test_active_set_equals_one_shot_at_6000_constraints(p):
    X, z, alpha = unit_gaussian(400, 16, 8, seed=8)
    one = attention_svm(X, z, alpha, p, active_set="off")
    act = attention_svm(X, z, alpha, p, active_set="on")
    assert act.n_constraints == 6000 and act.n_working < 6000
    assert act.objective == pytest.approx(one.objective, rel=1e-7)
    np.testing.assert_allclose(act.W, one.W, atol=1e-6 * np.abs(one.W).max())
    np.testing.assert_array_equal(act.support, one.support)


@pytest.mark.slow
def test_active_set_100k_constraints_satisfies_kkt():
    # 100,000 constraints: too many for the one-shot solve in a test, so the answer is checked by
    # the KKT conditions of the full problem, each computed here with plain NumPy
    p = 1.75
    X, z, alpha = unit_gaussian(5000, 21, 8, seed=9)
    res = attention_svm(X, z, alpha, p)
    assert res.method == "active-set" and res.n_constraints == 100_000
    n = X.shape[0]
    xa = X[np.arange(n), alpha]
    margins = np.einsum("ntd,de,ne->nt", xa[:, None, :] - X, res.W, z)
    valid = np.ones_like(res.support)
    valid[np.arange(n), alpha] = False
    assert margins[valid].min() >= 1.0 - 1e-12  # primal feasibility over all 100k constraints
    lam = res.duals
    assert np.all(lam >= 0) and np.all(lam[~valid] == 0)
    G = np.einsum("nt,ntd,ne->de", lam, xa[:, None, :] - X, z)
    w = res.W
    grad = np.sign(w) * np.abs(w) ** (p - 1) / np.sum(np.abs(w) ** p) ** ((p - 1) / p)
    np.testing.assert_allclose(G, grad, atol=1e-8 * np.abs(grad).max())  # stationarity
    assert np.max(np.abs(lam * np.where(valid, margins - 1.0, 0.0))) <= 1e-8 * lam.max()  # compl. slackness
    assert res.n_working < 5000


def test_active_set_with_variable_length_sequences():
    X, z, _ = unit_gaussian(60, 9, 5, seed=10)
    rng = np.random.default_rng(1)
    lengths = rng.integers(2, 10, 60)
    mask = np.arange(9)[None, :] < lengths[:, None]
    scores = np.einsum("ntd,de,ne->nt", X, rng.standard_normal((5, 5)), z)
    alpha = np.argmax(np.where(mask, scores, -np.inf), axis=1)  # feasible: selected by some W0
    X = np.where(mask[..., None], X, np.nan)
    one = attention_svm(X, z, alpha, 1.75, mask=mask, active_set="off")
    act = attention_svm(X, z, alpha, 1.75, mask=mask, active_set="on")
    assert act.n_constraints == one.n_constraints == int(lengths.sum()) - 60
    assert act.objective == pytest.approx(one.objective, rel=1e-8)
    np.testing.assert_array_equal(act.support, one.support)
    assert not act.support[~mask].any() and np.all(act.duals[~mask] == 0)


@pytest.mark.parametrize("p", [1.1, 1.75, 2.0, 3.0])
def test_a_shared_query_reduces_exactly_to_the_d_variable_svm(p):
    """Every sample with the same query z (a 1-block transformer's [CLS] state): the reduction W = v s^T gives the
    full d x d problem's optimum (an independent cvxpy solve), exactly feasible, with exact KKT duals."""
    X, z, _ = unit_gaussian(12, 5, 4, seed=3)
    z = np.broadcast_to(z[0], z.shape).copy()
    alpha = np.argmax(X @ np.array([1.0, -0.5, 0.3, 0.8]), axis=1)  # separable by some v = W z, as a model's are
    res = attention_svm(X, z, alpha, p)
    assert res.method.endswith("(shared query)") and res.min_margin >= 1.0
    A, index = rows_loop(X, z, alpha)
    W = cp.Variable(16)
    ref = cp.Problem(cp.Minimize(cp.pnorm(W, p)), [A @ W >= 1]).solve(solver="CLARABEL")
    assert res.objective == pytest.approx(ref, rel=1e-6)
    full = attention_svm(X, z, alpha, p, shared_query=False)  # the d x d problem as it is
    assert full.method == "one-shot" and full.objective == pytest.approx(res.objective, rel=1e-6)
    np.testing.assert_allclose(res.W.ravel(), W.value, atol=1e-4 * np.abs(W.value).max())
    assert np.linalg.matrix_rank(res.W, tol=1e-9 * np.abs(res.W).max()) == 1  # W = v s^T
    lam = np.array([res.duals[i, t] for i, t in index])
    w = res.W.ravel()
    grad = np.sign(w) * np.abs(w) ** (p - 1) / res.objective ** (p - 1)
    np.testing.assert_allclose(A.T @ lam, grad, atol=1e-8 * np.abs(grad).max())  # stationarity of the full problem
    assert lam.sum() == pytest.approx(res.objective, rel=1e-6)
    near = z + 1e-6 * np.random.default_rng(0).normal(size=z.shape)  # queries that differ: the full problem
    assert not attention_svm(X, near, alpha, p).method.endswith("(shared query)")
