"""Token scores, optimal tokens, support tokens and selected tokens against plain loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mirrorattn.svm import attention_svm
from mirrorattn.tokens import (
    globally_optimal_tokens,
    is_globally_optimal,
    is_locally_optimal,
    locally_optimal_samples,
    selected_tokens,
    support_tokens,
    token_scores,
)
from svm_data import unit_rows, unit_tokens


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    n, T, d = 6, 8, 10
    X, z = unit_tokens(rng, n, T, d)
    v = unit_rows(rng.standard_normal(d))
    y = rng.choice([-1.0, 1.0], n)
    return X, z, y, v


def test_token_scores_loop_and_torch(data):
    X, z, y, v = data
    g = token_scores(X, y, v)
    ref = np.array([[y[i] * sum(X[i, t, k] * v[k] for k in range(X.shape[2])) for t in range(8)] for i in range(6)])
    np.testing.assert_allclose(g, ref, rtol=1e-12)
    gt = token_scores(torch.as_tensor(X), torch.as_tensor(y), torch.as_tensor(v))
    assert isinstance(gt, torch.Tensor)
    np.testing.assert_allclose(gt.numpy(), ref, rtol=1e-12)
    with pytest.raises(ValueError, match="token_scores needs"):
        token_scores(X, y, v[:3])


def test_globally_optimal_tokens_mask_and_ties():
    g = np.array([[0.1, 0.5, 0.2], [0.9, 0.3, 0.95], [0.4, 0.4, 0.1]])
    with pytest.raises(ValueError, match=r"not unique in samples \[2\]"):
        globally_optimal_tokens(g)
    np.testing.assert_array_equal(globally_optimal_tokens(g, ties="first"), [1, 2, 0])
    mask = np.array([[1, 1, 1], [1, 1, 0], [1, 0, 1]], dtype=bool)
    np.testing.assert_array_equal(globally_optimal_tokens(g, mask), [1, 0, 0])
    out = globally_optimal_tokens(torch.as_tensor(g), torch.as_tensor(mask))
    assert isinstance(out, torch.Tensor) and out.tolist() == [1, 0, 0]


def test_support_and_local_optimality_against_definitions(data):
    X, z, y, v = data
    gamma = token_scores(X, y, v)
    alpha = globally_optimal_tokens(gamma)
    res = attention_svm(X, z, alpha, 1.75)
    sup = support_tokens(res)
    # definition: tight constraints, checked by recomputing every margin with a loop
    for i in range(6):
        for t in range(8):
            m = (X[i, alpha[i]] - X[i, t]) @ res.W @ z[i]
            assert sup[i, t] == (t != alpha[i] and m <= 1 + 1e-6)
    # the globally optimal alpha is locally optimal (gamma_alpha beats every token)
    assert is_locally_optimal(alpha, res, gamma) and is_globally_optimal(alpha, gamma)
    # choose, in sample 0, a non-optimal alpha and make gamma favour one of its support tokens
    alpha2 = alpha.copy()
    alpha2[0] = int(np.argsort(gamma[0])[-2])  # second best score
    res2 = attention_svm(X, z, alpha2, 1.75)
    sup2 = support_tokens(res2)
    local = locally_optimal_samples(alpha2, res2, gamma)
    expect = np.array([all(gamma[i, alpha2[i]] > gamma[i, t] for t in np.flatnonzero(sup2[i])) for i in range(6)])
    np.testing.assert_array_equal(local, expect)
    assert not is_globally_optimal(alpha2, gamma)
    # if the best token is a support token of sample 0 then alpha2 is not locally optimal there
    best = int(np.argmax(gamma[0]))
    assert local[0] == (not sup2[0, best])
    with pytest.raises(ValueError, match="differs"):
        locally_optimal_samples(alpha, res2, gamma)


def test_selected_tokens_numpy_torch_and_seed_axis(data):
    X, z, _, _ = data
    rng = np.random.default_rng(1)
    W = rng.standard_normal((3, 10, 10))
    sel = selected_tokens(X, z, W)
    assert sel.shape == (3, 6)
    for s in range(3):
        for i in range(6):
            logits = X[i] @ W[s] @ z[i]
            probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
            assert sel[s, i] == np.argmax(probs)
    np.testing.assert_array_equal(selected_tokens(X, z, W[1]), sel[1])
    selt = selected_tokens(torch.as_tensor(X), torch.as_tensor(z), torch.as_tensor(W))
    np.testing.assert_array_equal(selt.numpy(), sel)
    mask = np.ones((6, 8), dtype=bool)
    mask[np.arange(6), sel[0]] = False
    sel_m = selected_tokens(X, z, W[0], mask=mask)
    assert not np.any(sel_m == sel[0])
    np.testing.assert_array_equal(
        selected_tokens(
            torch.as_tensor(X), torch.as_tensor(z), torch.as_tensor(W[0]), mask=torch.as_tensor(mask)
        ).numpy(),
        sel_m,
    )


# ------------------------------------------------------------------ issue 12: NaN / complex input


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_token_scores_rejects_nan_and_complex_naming_array_and_index(data, kind):
    X, z, y, v = data
    conv = torch.as_tensor if kind == "torch" else np.asarray
    v_nan = v.copy()
    v_nan[4] = np.nan
    with pytest.raises(ValueError, match=r"^v holds NaN or inf \(first at v\[4\]\)"):
        token_scores(conv(X), conv(y), conv(v_nan))
    X_inf = X.copy()
    X_inf[2, 5, 1] = -np.inf
    with pytest.raises(ValueError, match=r"^X holds NaN or inf \(first at X\[2, 5, 1\]\)"):
        token_scores(conv(X_inf), conv(y), conv(v))
    with pytest.raises(ValueError, match=r"^y is complex"):
        token_scores(conv(X), conv(y + 0j), conv(v))
    # integer and bool arrays are fine
    np.testing.assert_allclose(token_scores(X, y.astype(int), v), token_scores(X, y, v))


def test_token_scores_rejects_object_arrays(data):
    X, z, y, v = data
    with pytest.raises(ValueError, match=r"^v must be a real numeric array .* got dtype object"):
        token_scores(X, y, v.astype(object))


def test_optimal_tokens_reject_nan_scores_on_real_tokens_only(data):
    X, z, y, v = data
    gamma = token_scores(X, y, v)
    g = gamma.copy()
    g[1, 3] = np.nan
    with pytest.raises(ValueError, match=r"gamma holds NaN or inf \(first at gamma\[1, 3\]\)"):
        globally_optimal_tokens(g)
    with pytest.raises(ValueError, match=r"gamma holds NaN"):  # NaN is not "not globally optimal"
        is_globally_optimal(np.argmax(gamma, axis=1), g)
    mask = np.ones(g.shape, dtype=bool)
    mask[1, 3] = False  # NaN on a padding token is ignored
    np.testing.assert_array_equal(globally_optimal_tokens(g, mask), globally_optimal_tokens(gamma, mask))


def test_locally_optimal_rejects_nan_where_it_decides(data):
    X, z, y, v = data
    gamma = token_scores(X, y, v)
    alpha = np.argmax(gamma, axis=1)
    res = attention_svm(X, z, alpha, 2.0)
    g = gamma.copy()
    g[0, alpha[0]] = np.nan  # the old code compared NaN > gamma: False, silently "not locally optimal"
    with pytest.raises(ValueError, match=rf"gamma holds NaN or inf \(first at gamma\[0, {alpha[0]}\]\)"):
        locally_optimal_samples(alpha, res, g)
    off = np.flatnonzero(~(res.support[0]) & (np.arange(8) != alpha[0]))
    g = gamma.copy()
    g[0, off[0]] = np.nan  # neither selected nor a support token: it decides nothing
    np.testing.assert_array_equal(locally_optimal_samples(alpha, res, g), locally_optimal_samples(alpha, res, gamma))


def test_selected_tokens_rejects_nan_outside_padding(data):
    X, z, y, v = data
    W = np.eye(10)
    Xn = X.copy()
    Xn[3, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"^X holds NaN or inf \(first at X\[3, 2, 0\]\)"):
        selected_tokens(Xn, z, W)
    with pytest.raises(ValueError, match=r"^X holds NaN"):
        selected_tokens(torch.as_tensor(Xn), torch.as_tensor(z), torch.as_tensor(W))
    mask = np.ones((6, 8), dtype=bool)
    mask[3, 2] = False
    np.testing.assert_array_equal(selected_tokens(Xn, z, W, mask=mask), selected_tokens(X, z, W, mask=mask))
    with pytest.raises(ValueError, match=r"^W holds NaN"):
        selected_tokens(X, z, np.full((10, 10), np.nan))
    with pytest.raises(ValueError, match=r"^mask must have shape \(n, T\) = \(6, 8\)"):
        selected_tokens(X, z, W, mask=mask[:, :3])
