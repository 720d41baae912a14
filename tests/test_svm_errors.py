"""Bad or infeasible input raises the dedicated errors, naming the samples, before any solve."""

from __future__ import annotations

import warnings

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
    import mirrorattn.svm.ipm as ipm

    monkeypatch.setattr(ipm, "IPM_MAX_VARS", 0)  # the conic solver on every working set
    X, z, alpha = data()
    good = core._solver_attempts("CLARABEL", 1e-8)[0]
    stopped = dict(good, max_iter=1)  # stops after one iteration: status 'user_limit'
    monkeypatch.setattr(core, "_solver_attempts", lambda name, tol: [stopped, good])
    ref = attention_svm(X, z, alpha, 1.75, active_set="off")
    assert ref.status == "optimal"
    monkeypatch.setattr(core, "_solver_attempts", lambda name, tol: [stopped])
    with pytest.raises(SVMError, match=r"did not reach 'optimal' \(status 'user_limit'"):
        attention_svm(X, z, alpha, 1.75, active_set="off")


# ------------------------------------------------------- issue 12: dtypes, NaN, the range of p


@pytest.mark.parametrize("solve", ["attention", "decoder", "joint", "nuclear"])
def test_complex_and_non_numeric_input_rejected_by_every_solver(solve):
    from mirrorattn.svm import attention_svm_nuclear, joint_svm

    X, z, alpha = data()
    y = np.array([1.0, -1.0, 1.0, 1.0, -1.0])
    calls = {
        "attention": lambda X, z: attention_svm(X, z, alpha, 1.75),
        "decoder": lambda X, z: decoder_svm(X, y, alpha, 1.75),
        "joint": lambda X, z: joint_svm(X, z, y, alpha, 1.75),
        "nuclear": lambda X, z: attention_svm_nuclear(X, z, alpha),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the old code cast complex X to real with a ComplexWarning
        with pytest.raises(SVMInputError, match=r"^X is complex \(dtype complex128\)"):
            calls[solve](X + 0j, z)
    with pytest.raises(SVMInputError, match=r"^X must be a real numeric array .* got dtype <U"):
        calls[solve](X.astype(str), z)
    with pytest.raises(SVMInputError, match=r"^X must be a real numeric array .* got dtype object"):
        calls[solve](X.astype(object), z)
    if solve != "decoder":
        with pytest.raises(SVMInputError, match=r"^z is complex"):
            calls[solve](X, z * (1 + 1j))


def test_complex_y_and_mask_rejected():
    X, z, alpha = data()
    with pytest.raises(SVMInputError, match=r"^y is complex"):
        decoder_svm(X, np.array([1, -1, 1, 1, -1]) + 0j, alpha, 2.0)
    with pytest.raises(SVMInputError, match=r"^mask is complex"):
        attention_svm(X, z, alpha, 2.0, mask=np.ones((5, 4)) + 0j)
    with pytest.raises(SVMInputError, match=r"^mask must be a real numeric array"):
        attention_svm(X, z, alpha, 2.0, mask=np.full((5, 4), "x"))


def test_integer_and_bool_arrays_are_cast_to_float64():
    rng = np.random.default_rng(1)
    Xi = rng.integers(-3, 4, size=(5, 4, 3))
    zi = rng.integers(-3, 4, size=(5, 3))
    zi[(zi == 0).all(axis=1)] = 1
    W0 = rng.standard_normal((3, 3))
    alpha = np.argmax(np.einsum("ntd,de,ne->nt", Xi, W0, zi), axis=1)
    ref = attention_svm(Xi.astype(np.float64), zi.astype(np.float64), alpha, 1.75)
    res = attention_svm(Xi, zi, alpha, 1.75)
    assert res.objective == pytest.approx(ref.objective, rel=1e-12)
    Xb = np.zeros((2, 3, 2), dtype=bool)
    Xb[:, 0, 0] = Xb[:, 1, 1] = True  # tokens e1, e2, 0
    res_b = attention_svm(Xb, np.array([[True, False], [True, False]]), np.array([0, 0]), 2.0)
    assert res_b.status == "optimal" and res_b.min_margin >= 1.0 - 1e-9


def test_nan_error_names_first_index():
    X, z, alpha = data()
    X[3, 2, 1] = np.inf
    X[4, 0, 0] = np.nan
    with pytest.raises(InvalidSamplesError, match=r"samples \[3, 4\] \(first at index \(3, 2, 1\)\)"):
        attention_svm(X, z, alpha, 2.0)


@pytest.mark.parametrize("p", [2049.0, 1e6, 1000.0, 1.0001, 100.5])
def test_p_outside_supported_range_is_one_clear_error(p):
    from mirrorattn.svm import joint_svm

    X, z, alpha = data()
    y = np.array([1.0, -1.0, 1.0, 1.0, -1.0])
    for call in (lambda: attention_svm(X, z, alpha, p), lambda: decoder_svm(X, y, alpha, p),
                 lambda: joint_svm(X, z, y, alpha, 2.0, p_decoder=p)):
        with pytest.raises(SVMInputError, match=r"outside \[1.001, 100\], the range of p that the l_p-SVM solvers"):
            call()


@pytest.mark.parametrize("p", [1.001, 100.0])
def test_p_at_the_bounds_is_solved_exactly(p):
    # the certified duality gap: sum(lam) / ||A^T lam||_q is a lower bound on ||W||_p for any lam >= 0
    from mirrorattn.mirror import dual_exponent, lp_norm
    from mirrorattn.svm.constraints import AttentionConstraints

    X, z, alpha = unit_gaussian(6, 8, 10, 0)
    res = attention_svm(X, z, alpha, p)
    cs = AttentionConstraints(X, z, alpha)
    flat = np.flatnonzero(cs.valid.reshape(-1))
    lam = res.duals.reshape(-1)[flat]
    lower = lam.sum() / float(lp_norm(cs.rows(flat).T @ lam, dual_exponent(p)))
    assert res.min_margin >= 1.0 - 1e-9
    assert (res.objective - lower) / res.objective < 1e-6


def test_soc_tower_is_first_only_where_cvxpy_keeps_p_exact():
    from mirrorattn.svm.attention import _lp_forms, soc_tower_exponent

    assert soc_tower_exponent(1.75) == 1.75 and soc_tower_exponent(1.1) == 1.1 and soc_tower_exponent(3.0) == 3.0
    # p = 2049/1024 is a fraction with a small denominator, but 1/p = 1024/2049 is not: cvxpy's tower
    # rounds 1/p to 1/2 and would solve the p = 2 problem (the old check put the tower first here)
    p = 2049 / 1024
    assert soc_tower_exponent(p) != p
    assert [f.__name__ for f in _lp_forms(p)] == ["powcone", "soc"]
    assert [f.__name__ for f in _lp_forms(1.75)] == ["soc", "powcone"]
    # where the tower rounds p to 1 (not convex: a DCPError) or 1/p to 0 (ZeroDivisionError), it is never used
    assert [f.__name__ for f in _lp_forms(1.0002)] == ["powcone"]
    assert [f.__name__ for f in _lp_forms(2049.0)] == ["powcone"]


def test_polish_skips_instead_of_overflowing_at_large_p():
    from mirrorattn.svm.constraints import AttentionConstraints
    from mirrorattn.svm.polish import polish_lp

    X, z, alpha = data()
    cs = AttentionConstraints(X, z, alpha)
    flat = np.flatnonzero(cs.valid.reshape(-1))
    w = np.full(9, 3.0)  # ||w||_p^(p-1) = 3^999... overflows a float: the old code raised OverflowError
    assert polish_lp(w, np.ones(len(flat)), cs.rows, flat, cs.margins, cs.valid, 1000.0, 1e-8) is None
