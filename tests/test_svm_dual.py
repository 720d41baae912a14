"""The l_p-AttSVM solved on its dual (mirrorattn.svm.dual) against the conic solver (Clarabel) on the same problem."""

from __future__ import annotations

import numpy as np
import pytest

import mirrorattn.svm.dual as dual
import mirrorattn.svm.ipm as ipm
from mirrorattn.svm import InfeasibleSVMError, attention_svm
from svm_data import unit_gaussian


def _conic(monkeypatch, *args, **kwargs):
    """The same problem with the dual switched off: Clarabel on every working set (the reference)."""
    with monkeypatch.context() as m:
        m.setattr(dual, "DUAL_MIN_VARS", 10**9)
        m.setattr(ipm, "IPM_MAX_VARS", 0)
        return attention_svm(*args, **kwargs)


def _kkt(res, X, z, p):
    """Stationarity of the returned W and duals: grad ||W||_p = sum_it duals_it (x_ia - x_it) z_i^T."""
    n = X.shape[0]
    xa = X[np.arange(n), res.alpha]
    G = np.einsum("nt,ntd,ne->de", res.duals, xa[:, None, :] - X, z)
    W = res.W
    norm = float(np.sum(np.abs(W) ** p) ** (1 / p))
    grad = np.sign(W) * (np.abs(W) / norm) ** (p - 1)
    return float(np.abs(G - grad).max() / np.abs(grad).max())


@pytest.mark.parametrize("p", [1.1, 2.0, 3.0])
@pytest.mark.parametrize("active_set", ["off", "on"])
def test_dual_equals_the_conic_solve(monkeypatch, p, active_set):
    X, z, alpha = unit_gaussian(60, 11, 10, seed=1)  # 600 constraints, 100 variables, a query per sample
    with monkeypatch.context() as m:
        m.setattr(dual, "DUAL_MIN_VARS", 100)
        got = attention_svm(X, z, alpha, p, active_set=active_set)
    ref = _conic(monkeypatch, X, z, alpha, p, active_set=active_set)
    assert got.method.endswith("(dual)") and not ref.method.endswith("(dual)")
    assert got.polished and got.min_margin >= 1.0
    assert got.objective == pytest.approx(ref.objective, rel=1e-9)
    np.testing.assert_allclose(got.W, ref.W, atol=1e-7 * np.abs(ref.W).max())
    np.testing.assert_array_equal(got.support, ref.support)
    assert _kkt(got, X, z, p) < 1e-7


def test_dual_equals_the_conic_solve_at_1024_variables(monkeypatch):
    X, z, alpha = unit_gaussian(40, 11, 32, seed=1)  # 400 constraints, d = 32: the dual by default
    got = attention_svm(X, z, alpha, 1.1, active_set="off")
    ref = _conic(monkeypatch, X, z, alpha, 1.1, active_set="off")
    assert got.method == "one-shot (dual)" and ref.method == "one-shot"
    assert got.objective == pytest.approx(ref.objective, rel=1e-9)
    np.testing.assert_allclose(got.W, ref.W, atol=1e-7 * np.abs(ref.W).max())


def test_dual_active_set_adds_rows_until_none_is_violated():
    X, z, alpha = unit_gaussian(120, 21, 32, seed=2)  # 2,400 constraints
    res = attention_svm(X, z, alpha, 1.5, active_set="on")
    assert res.method == "active-set (dual)" and res.iterations >= 2 and res.n_working < res.n_constraints
    assert res.history[-1]["violated"] == 0 and res.min_margin >= 1.0 and _kkt(res, X, z, 1.5) < 1e-7


def test_the_dual_is_used_only_where_it_applies():
    X, z, alpha = unit_gaussian(20, 6, 31, seed=3)  # 961 variables: under the threshold
    assert not attention_svm(X, z, alpha, 2.0).method.endswith("(dual)")
    X, z, alpha = unit_gaussian(20, 6, 32, seed=3)
    assert not attention_svm(X, z, alpha, 1.02).method.endswith("(dual)")  # q = 51: the conic solver
    assert attention_svm(X, z, alpha, 1.05).method.endswith("(dual)")


def test_infeasible_rows_are_named_through_the_unbounded_dual():
    X, z, alpha = unit_gaussian(6, 5, 32, seed=4)
    X[1], z[1] = X[0], z[0]
    alpha[1] = (alpha[0] + 1) % 5  # sample 1 selects another token of the same sequence and query as sample 0
    with pytest.raises(InfeasibleSVMError) as err:
        attention_svm(X, z, alpha, 2.0, shared_query=False)
    assert {0, 1} <= set(err.value.samples)


def test_newton_finishes_a_working_set_where_lbfgs_stops_short(monkeypatch):
    X, z, alpha = unit_gaussian(40, 6, 10, seed=6)
    ref = _conic(monkeypatch, X, z, alpha, 3.0, active_set="off")
    calls = []
    newton = dual.DualSubsolver._newton

    def spy(self, *args):
        calls.append(1)
        return newton(self, *args)

    with monkeypatch.context() as m:
        m.setattr(dual, "DUAL_MIN_VARS", 100)
        m.setattr(dual, "_LBFGS", {**dual._LBFGS, "maxiter": 40})  # stops well short of the optimum
        m.setattr(dual.DualSubsolver, "_newton", spy)
        got = attention_svm(X, z, alpha, 3.0, active_set="off")
    assert calls and got.method == "one-shot (dual)"
    assert got.objective == pytest.approx(ref.objective, rel=1e-9)


@pytest.mark.parametrize("p", [1.1, 2.0, 3.0])
def test_dual_on_the_full_problem_equals_the_shared_query_reduction(p):
    X, z, alpha = unit_gaussian(80, 11, 32, seed=7)
    z[:] = z[0]  # one query for every sample: the exact d-variable reduction is an independent answer
    alpha = np.argmax(X @ np.random.default_rng(7).standard_normal(32), axis=1)
    reduced = attention_svm(X, z, alpha, p)
    full = attention_svm(X, z, alpha, p, shared_query=False)
    assert reduced.method.endswith("(shared query)") and full.method.endswith("(dual)")
    assert full.objective == pytest.approx(reduced.objective, rel=1e-8)
    np.testing.assert_allclose(full.W, reduced.W, atol=1e-6 * np.abs(reduced.W).max())
