"""The dense interior-point working-set solver (mirrorattn.svm.ipm) and the duality gap of every result, against
Clarabel through cvxpy (the one-shot reference) and dense constraint matrices built independently."""

from __future__ import annotations

import numpy as np
import pytest

import mirrorattn.svm.dual as dual
import mirrorattn.svm.ipm as ipm
from mirrorattn.mirror import dual_exponent, lp_norm
from mirrorattn.svm import attention_svm, attention_svm_nuclear, decoder_svm
from mirrorattn.svm.constraints import AttentionConstraints, DecoderConstraints, SharedQueryConstraints
from mirrorattn.svm.options import duality_gap
from svm_data import unit_gaussian


def _cvxpy_one_shot(monkeypatch, *args, **kwargs):
    """The problem solved at once by Clarabel through cvxpy (neither the interior-point method nor the dual)."""
    with monkeypatch.context() as m:
        m.setattr(ipm, "IPM_MAX_VARS", 0)
        m.setattr(dual, "DUAL_MIN_VARS", 10**9)
        return attention_svm(*args, active_set="off", **kwargs)


def _spy(monkeypatch):
    """Count the working-set solves the interior-point method answered (not None)."""
    answered = []
    call = ipm.IPMSubsolver.__call__

    def spy(self, flat):
        out = call(self, flat)
        answered.append(out is not None)
        return out

    monkeypatch.setattr(ipm.IPMSubsolver, "__call__", spy)
    return answered


@pytest.mark.parametrize("p", [1.1, 1.75, 2.0, 3.0])
@pytest.mark.parametrize("active_set", ["off", "on"])
def test_ipm_equals_the_cvxpy_one_shot_solve(monkeypatch, p, active_set):
    X, z, alpha = unit_gaussian(80, 11, 8, seed=3)  # 800 constraints, 64 variables
    ref = _cvxpy_one_shot(monkeypatch, X, z, alpha, p)
    answered = _spy(monkeypatch)
    got = attention_svm(X, z, alpha, p, active_set=active_set)
    assert answered and all(answered)  # every working set solved by the interior-point method
    assert got.polished and got.min_margin >= 1.0
    assert got.objective == pytest.approx(ref.objective, rel=1e-9)
    np.testing.assert_allclose(got.W, ref.W, atol=1e-7 * np.abs(ref.W).max())
    np.testing.assert_array_equal(got.support, ref.support)


@pytest.mark.parametrize("p", [1.05, 1.5, 2.0, 4.0])
def test_solve_lp_ipm_meets_the_kkt_conditions(p):
    rng = np.random.default_rng(5)
    A = rng.standard_normal((120, 30)) + 0.5  # feasible: a common direction separates every row
    w, lam, merit = ipm.solve_lp_ipm(A, p)
    assert merit <= 1e-5 and lam.min() >= 0
    margins = A @ w
    assert margins.min() >= 1 - 1e-6
    grad = np.sign(w) * np.abs(w) ** (p - 1)  # stationarity of ||w||_p^p / p: grad = A^T lam
    assert np.abs(grad - A.T @ lam).max() <= 1e-5 * np.abs(grad).max()
    assert float(lam @ (margins - 1)) <= 1e-5 * float(lam.sum())  # complementarity


def test_a_failed_ipm_falls_back_to_the_conic_solver(monkeypatch):
    X, z, alpha = unit_gaussian(40, 6, 6, seed=2)
    ref = _cvxpy_one_shot(monkeypatch, X, z, alpha, 1.75)
    answered = _spy(monkeypatch)
    monkeypatch.setattr(ipm, "_MAX_ITER", 1)  # no iteration converges
    got = attention_svm(X, z, alpha, 1.75, active_set="on")
    assert answered and not any(answered)
    assert got.objective == pytest.approx(ref.objective, rel=1e-9)


def test_adjoint_equals_the_dense_constraint_matrix():
    X, z, alpha = unit_gaussian(30, 7, 5, seed=4)
    mask = np.random.default_rng(4).random((30, 7)) > 0.2
    mask[np.arange(30), alpha] = True
    lam = np.random.default_rng(1).random((30, 7))
    for cs in (AttentionConstraints(X, z, alpha, mask), SharedQueryConstraints(AttentionConstraints(X, z, alpha))):
        flat = np.flatnonzero(cs.valid.reshape(-1))
        dense = cs.rows(flat).T @ lam.reshape(-1)[flat]
        np.testing.assert_allclose(cs.adjoint(np.where(cs.valid, lam, 0.0)), dense, rtol=1e-12, atol=1e-12)
    dec = DecoderConstraints(X, np.where(np.arange(30) % 2, 1.0, -1.0), alpha)
    np.testing.assert_allclose(dec.adjoint(lam[:, 0]), dec.rows(np.arange(30)).T @ lam[:, 0], rtol=1e-12)


def _dense_gap(res, X, z, alpha, p):
    """The relative duality gap from the dense constraint matrix and the result's duals (weak duality bound)."""
    cs = AttentionConstraints(X, z, alpha)
    flat = np.flatnonzero(cs.valid.reshape(-1))
    lam = res.duals.reshape(-1)[flat]
    lower = lam.sum() / float(lp_norm(cs.rows(flat).T @ lam, dual_exponent(p)))
    return (res.objective - lower) / res.objective


@pytest.mark.parametrize("p", [1.1, 1.75, 2.0, 3.0])
def test_duality_gap_is_small_and_matches_a_dense_computation(p):
    X, z, alpha = unit_gaussian(50, 9, 6, seed=6)
    for kw in ({"active_set": "off"}, {"active_set": "on"}):
        res = attention_svm(X, z, alpha, p, **kw)
        assert -1e-12 <= res.duality_gap <= 1e-8
        assert res.duality_gap == pytest.approx(_dense_gap(res, X, z, alpha, p), abs=1e-13)
        assert res.summary()["duality_gap"] == res.duality_gap


def test_duality_gap_is_computed_from_the_duals_not_from_w():
    X, z, alpha = unit_gaussian(50, 9, 6, seed=6)
    res = attention_svm(X, z, alpha, 1.75)
    cs = AttentionConstraints(X, z, alpha)
    assert duality_gap(cs, res.duals, res.objective, 1.75) == pytest.approx(res.duality_gap, abs=1e-15)
    spoiled = res.duals.copy()
    spoiled[res.support.nonzero()[0][0]] = 0.0  # one sample's multipliers gone: W and the objective unchanged
    assert duality_gap(cs, spoiled, res.objective, 1.75) > 1e-4
    assert duality_gap(cs, 3.0 * res.duals, res.objective, 1.75) == pytest.approx(res.duality_gap, abs=1e-12)


def test_duality_gap_of_the_decoder_nuclear_and_shared_query_results():
    X, z, alpha = unit_gaussian(40, 6, 5, seed=8)
    y = np.sign(X[np.arange(40), alpha] @ np.random.default_rng(8).standard_normal(5))  # separable labels
    dec = decoder_svm(X, y, alpha, 1.5)
    lam = dec.duals
    lower = lam.sum() / float(lp_norm((y[:, None] * X[np.arange(40), alpha]).T @ lam, 3.0))
    assert abs(dec.duality_gap) <= 1e-8 and dec.duality_gap == pytest.approx(1 - lower / dec.objective, abs=1e-12)
    nuc = attention_svm_nuclear(X, z, alpha)
    assert -1e-9 <= nuc.duality_gap <= 1e-6  # an interior-point answer (no polish): Clarabel's tolerance
    z[:] = z[0]
    alpha = np.argmax(X @ np.random.default_rng(9).standard_normal(5), axis=1)  # separable with one query
    shared = attention_svm(X, z, alpha, 3.0)
    assert shared.method.endswith("(shared query)")
    assert abs(shared.duality_gap) <= 1e-8 and shared.duality_gap == pytest.approx(
        _dense_gap(shared, X, z, alpha, 3.0), abs=1e-12)


@pytest.mark.parametrize("p", [1.5, 2.0, 3.0])
def test_an_infeasible_working_set_is_not_answered(p):
    a = np.random.default_rng(0).standard_normal((5, 8))
    assert ipm.solve_lp_ipm(np.vstack([a, -a[:1]]), p) is None  # rows a and -a: no w has both margins >= 1


@pytest.mark.parametrize("p", [1.1, 2.0, 3.0])
def test_a_warm_start_reaches_the_cold_start_answer(p):
    rng = np.random.default_rng(7)
    A = rng.standard_normal((150, 25)) + 0.5
    w, lam, _ = ipm.solve_lp_ipm(A[:100], p)  # a smaller working set first, as the active set does
    lam0 = np.concatenate([lam, np.zeros(50)])
    form = (ipm._Dual if p < 2 else ipm._Primal)(A, p)
    assert ipm._iterate(form, ipm._warm_start(A, p, lam0)) is not None  # the warm start itself converges
    warm = ipm.solve_lp_ipm(A, p, lam0)
    cold = ipm.solve_lp_ipm(A, p)
    assert lp_norm(warm[0], p) == pytest.approx(lp_norm(cold[0], p), rel=1e-8)
    assert (A @ warm[0]).min() >= 1 - 1e-6
