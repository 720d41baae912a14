"""Bad or infeasible input raises the dedicated errors, naming the samples, before any solve."""

from __future__ import annotations

import numpy as np
import pytest

from mirrorattn.svm import (
    InfeasibleSVMError,
    InvalidSamplesError,
    SVMError,
    SVMInputError,
    attention_svm,
    decoder_svm,
)
from svm_data import unit_gaussian


def data(n=5, T=4, d=3, seed=0):
    return unit_gaussian(n, T, d, seed)


def test_error_hierarchy():
    assert issubclass(InfeasibleSVMError, SVMError) and issubclass(SVMInputError, SVMError)
    assert issubclass(SVMError, ValueError)
    # unusable samples are both bad input and an infeasible instance (code that skips infeasible
    # seeds skips them too); shape errors are input errors only
    assert issubclass(InvalidSamplesError, InfeasibleSVMError) and issubclass(InvalidSamplesError, SVMInputError)


def test_nan_in_X_names_sample():
    X, z, alpha = data()
    X[3, 1, 0] = np.nan
    with pytest.raises(InvalidSamplesError, match=r"NaN or inf .*samples \[3\]") as info:
        attention_svm(X, z, alpha, 1.75)
    assert info.value.samples == [3]
    X, z, alpha = data()
    z[1, 2] = np.inf
    with pytest.raises(SVMInputError, match=r"z has NaN or inf .*\[1\]"):
        attention_svm(X, z, alpha, 1.75)


def test_alpha_out_of_range_or_on_padding():
    X, z, alpha = data()
    bad = alpha.copy()
    bad[2] = 4
    with pytest.raises(InfeasibleSVMError, match=r"alpha out of range \[0, 4\) in samples \[2\]"):
        attention_svm(X, z, bad, 2.0)
    bad[2] = -1
    with pytest.raises(SVMInputError, match=r"\[2\]"):
        attention_svm(X, z, bad, 2.0)
    mask = np.ones((5, 4), dtype=bool)
    mask[4, alpha[4]] = False
    with pytest.raises(SVMInputError, match=r"padding token in samples \[4\]"):
        attention_svm(X, z, alpha, 2.0, mask=mask)
    with pytest.raises(SVMInputError, match="integer"):
        attention_svm(X, z, alpha + 0.5, 2.0)


def test_shape_mismatch_and_bad_arguments():
    X, z, alpha = data()
    with pytest.raises(SVMInputError, match=r"z must have shape \(n, d\)") as info:
        attention_svm(X, z[:, :2], alpha, 2.0)
    assert not isinstance(info.value, InfeasibleSVMError)
    with pytest.raises(SVMInputError, match=r"X must have shape \(n, T, d\)"):
        attention_svm(X[0], z, alpha, 2.0)
    with pytest.raises(SVMInputError, match=r"alpha must have shape"):
        attention_svm(X, z, alpha[:3], 2.0)
    with pytest.raises(SVMInputError, match="mask must have shape"):
        attention_svm(X, z, alpha, 2.0, mask=np.ones((5, 3), dtype=bool))
    with pytest.raises(ValueError, match="p must be"):
        attention_svm(X, z, alpha, 1.0)
    with pytest.raises(SVMInputError, match="active_set"):
        attention_svm(X, z, alpha, 2.0, active_set="maybe")
    with pytest.raises(SVMInputError, match="not installed"):
        attention_svm(X, z, alpha, 2.0, solver="nosuchsolver")


def test_duplicate_selected_token_is_infeasible():
    X, z, alpha = data()
    other = (alpha[2] + 1) % 4
    X[2, other] = X[2, alpha[2]]
    with pytest.raises(InfeasibleSVMError, match=r"equal to the selected token in samples \[2\]") as info:
        attention_svm(X, z, alpha, 1.75)
    assert info.value.samples == [2]


def test_zero_query_is_infeasible():
    X, z, alpha = data()
    z[0] = 0.0
    with pytest.raises(InfeasibleSVMError, match=r"zero query z_i in samples \[0\]"):
        attention_svm(X, z, alpha, 1.75)


def test_contradicting_samples_are_named_by_a_certificate():
    # sample 3 is sample 1 with the roles of two tokens swapped: (x_a - x_t)^T W z >= 1 and
    # (x_t - x_a)^T W z >= 1 cannot both hold; the solver says infeasible and the LP certificate
    # names exactly those two samples
    X, z, alpha = data(seed=2)
    X[3], z[3] = X[1], z[1]
    t = (alpha[1] + 1) % 4
    alpha[3] = t
    with pytest.raises(InfeasibleSVMError, match=r"samples \[1, 3\] contradict") as info:
        attention_svm(X, z, alpha, 1.75)
    assert info.value.samples == [1, 3]


def test_random_alpha_on_many_samples_is_infeasible_not_silent():
    rng = np.random.default_rng(0)
    X, z, _ = data(n=60, T=6, d=3, seed=5)
    alpha = rng.integers(0, 6, 60)
    with pytest.raises(InfeasibleSVMError, match="contradict each other"):
        attention_svm(X, z, alpha, 2.0)


def test_padding_may_hold_nan_and_single_token_samples_have_no_constraint():
    X, z, alpha = data()
    mask = np.ones((5, 4), dtype=bool)
    X[0, :] = np.nan
    X[0, 0] = 1.0 / np.sqrt(3)
    mask[0, 1:] = False
    alpha = alpha.copy()
    alpha[0] = 0
    res = attention_svm(X, z, alpha, 2.0, mask=mask)
    assert res.n_constraints == 4 * 3
    assert not res.support[0].any() and np.isfinite(res.objective)
    mask[:, :] = False
    mask[np.arange(5), alpha] = True
    X[:, :] = 1.0
    with pytest.raises(SVMInputError, match="no constraints"):
        attention_svm(X, z, alpha, 2.0, mask=mask)


def test_decoder_errors():
    X, z, alpha = data()
    y = np.array([1, -1, 1, 1, -1])
    with pytest.raises(SVMInputError, match=r"labels -1 or \+1; samples \[2\]"):
        decoder_svm(X, np.array([1, -1, 0, 1, -1]), alpha, 2.0)
    X0 = X.copy()
    X0[4, alpha[4]] = 0.0
    with pytest.raises(InfeasibleSVMError, match=r"zero in samples \[4\]"):
        decoder_svm(X0, y, alpha, 2.0)
    X1 = X.copy()
    X1[1, alpha[1]] = X[0, alpha[0]]
    y1 = y.copy()
    y1[1] = -y1[0]
    with pytest.raises(InfeasibleSVMError, match=r"samples \[0, 1\]"):
        decoder_svm(X1, y1, alpha, 1.75)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_solver_retries_then_reports_status(monkeypatch):
    import mirrorattn.svm.core as core

    X, z, alpha = data()
    good = core._solver_attempts("CLARABEL", 1e-8)[0]
    stopped = dict(good, max_iter=1)  # stops after one iteration: status 'user_limit'
    monkeypatch.setattr(core, "_solver_attempts", lambda name, tol: [stopped, good])
    ref = attention_svm(X, z, alpha, 1.75, active_set="off")
    assert ref.status == "optimal"
    monkeypatch.setattr(core, "_solver_attempts", lambda name, tol: [stopped])
    with pytest.raises(SVMError, match=r"did not reach 'optimal' \(status 'user_limit'"):
        attention_svm(X, z, alpha, 1.75, active_set="off")
