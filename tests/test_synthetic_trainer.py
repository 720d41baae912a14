"""Synthetic data and the batched mirror-descent trainer (``run_md``: LpMirrorDescent with ``batch_dims=1`` on float64
tensors): seeded data as specified, the batched update equal to a per-seed one, to an independent loop and to the
torch optimizer on one seed."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from mirrorattn.data.synthetic import joint_dataset, make_synthetic, make_synthetic_batch
from mirrorattn.experiments.synthetic.trainer import DEFAULT_EPS, log_grid, run_md
from mirrorattn.models.attention import OneLayerAttention, loss_and_grad
from mirrorattn.optim import LpMirrorDescent


def test_synthetic_data_is_unit_norm_seeded_and_labelled():
    a = make_synthetic(6, 8, 10, seed=3)
    b = make_synthetic(6, 8, 10, seed=3)
    c = make_synthetic(6, 8, 10, seed=4)
    assert a.X.shape == (6, 8, 10) and a.z.shape == (6, 10) and a.v.shape == (10,) and a.y.shape == (6,)
    np.testing.assert_allclose(np.linalg.norm(a.X, axis=-1), 1.0, rtol=1e-14)
    np.testing.assert_allclose(np.linalg.norm(a.z, axis=-1), 1.0, rtol=1e-14)
    assert np.linalg.norm(a.v) == pytest.approx(1.0, rel=1e-14)
    assert set(np.unique(a.y)) <= {-1.0, 1.0}
    assert a.X.dtype == np.float64
    np.testing.assert_array_equal(a.X, b.X)
    assert not np.allclose(a.X, c.X)
    batch = make_synthetic_batch(6, 8, 10, [3, 4])
    np.testing.assert_array_equal(batch.X[1], c.X)
    np.testing.assert_array_equal(batch.y[0], a.y)
    # labels are balanced-ish over many draws (random +-1, not constant)
    ys = make_synthetic_batch(2, 2, 2, list(range(200))).y
    assert 0.4 < (ys > 0).mean() < 0.6
    with pytest.raises(ValueError, match="T must be an integer >= 2"):
        make_synthetic(6, 1, 10, seed=0)


def test_joint_dataset_is_the_paper_one():
    j = joint_dataset()
    assert j.X.shape == (2, 3, 2)
    np.testing.assert_array_equal(j.X[0, 0], [-2.7, 1.2])
    np.testing.assert_array_equal(j.X[1, 2], [0.9, 0.1])
    np.testing.assert_array_equal(j.z, j.X[:, 0])
    np.testing.assert_array_equal(j.y, [1.0, -1.0])


def test_log_grid():
    g = log_grid(2000, 50)
    assert g[0] == 0 and g[-1] == 2000 and np.all(np.diff(g) > 0)
    assert 30 < len(g) <= 52


def _problem(S: int, seeds_offset: int = 0):
    data = make_synthetic_batch(4, 5, 3, list(range(seeds_offset, seeds_offset + S)))
    W0 = np.random.default_rng(7).standard_normal((S, 3, 3))

    def grad_fn(params, record=False):
        loss, gW, _, _ = loss_and_grad(data.X, data.z, data.y, params["W"], data.v)
        return loss, {"W": gW}, {}

    return data, W0, grad_fn


@pytest.mark.parametrize("p", [1.75, 2.0, 3.0])
@pytest.mark.parametrize("normalized", [True, False])
def test_batched_equals_each_seed_alone(p, normalized):
    S = 4
    data, W0, grad_fn = _problem(S)
    grid = log_grid(60, 10)
    full = run_md(grad_fn, {"W": W0}, p, 0.1, 60, grid, normalized=normalized)
    for s in range(S):
        def one(params, record=False, s=s):
            loss, gW, _, _ = loss_and_grad(
                data.X[s : s + 1], data.z[s : s + 1], data.y[s : s + 1], params["W"], data.v[s : s + 1]
            )
            return loss, {"W": gW}, {}

        alone = run_md(one, {"W": W0[s : s + 1]}, p, 0.1, 60, grid, normalized=normalized)
        np.testing.assert_allclose(full.params["W"][:, s], alone.params["W"][:, 0], rtol=0, atol=1e-10)
    # iterates really move
    assert np.abs(full.final["W"] - W0).max() > 0.1


def _batched_optimizer(W0, p, eta):
    """The optimizer as run_md sets it up: float64 (S, ...) tensors, normalised per seed (batch_dims=1)."""
    W = torch.tensor(W0)
    return W, LpMirrorDescent([W], lr=eta, p=p, normalized=True, eps=DEFAULT_EPS, batch_dims=1)


def _step(opt, W, grads):
    W.grad = torch.from_numpy(grads["W"])
    opt.step()


def test_batched_update_matches_independent_loop():
    """An independent plain-numpy l_p-MD loop (with W recomputed via u) gives the same iterates."""
    p, eta, q = 1.75, 0.1, 1.75 / 0.75
    data, W0, grad_fn = _problem(2)
    Wt, opt = _batched_optimizer(W0, p, eta)
    W = W0.copy()
    u = np.sign(W) * np.abs(W) ** (p - 1)
    for _ in range(25):
        _, g, _ = grad_fn({"W": W}, False)
        g = g["W"]
        for s in range(2):
            u[s] -= eta * g[s] / (np.sum(np.abs(g[s]) ** q) ** (1 / q) + np.finfo(float).eps)
        W = np.sign(u) * np.abs(u) ** (1 / (p - 1))
        _step(opt, Wt, grad_fn({"W": Wt.numpy()}, False)[1])
    np.testing.assert_allclose(Wt.numpy(), W, rtol=1e-12, atol=1e-13)


def test_zero_init_and_zero_gradient_are_fine():
    """Normalised steps with a zero gradient (W at v = 0) leave the tensor at zero, no NaN."""
    Wt, opt = _batched_optimizer(np.zeros((2, 2, 2)), 3.0, 0.1)
    _step(opt, Wt, {"W": np.zeros((2, 2, 2))})
    assert np.all(Wt.numpy() == 0)


def test_bad_step_size_raises():
    with pytest.raises(ValueError, match="eta"):
        run_md(lambda params, record=False: (None, {}, {}), {"W": np.zeros((1, 2, 2))}, 2.0, 0.0, 1, [0])


@pytest.mark.skipif(importlib.util.find_spec("mirrorattn.optim") is None, reason="optimizer not yet in tree")
@pytest.mark.parametrize("p", [1.75, 3.0])
def test_one_seed_matches_torch_lp_mirror_descent(p):
    try:
        from mirrorattn.optim import LpMirrorDescent
    except ImportError:
        pytest.skip("mirrorattn.optim.LpMirrorDescent not available yet")
    data, W0, grad_fn = _problem(1)
    eps = 1e-12
    model = OneLayerAttention(3, seeds=1)
    with torch.no_grad():
        model.W.copy_(torch.from_numpy(W0))
        model.v.copy_(torch.from_numpy(data.v))
    X, z, y = (torch.from_numpy(a) for a in (data.X, data.z, data.y))
    opt = LpMirrorDescent(model.parameters(), lr=0.1, p=p, normalized=True, eps=eps)
    for _ in range(40):
        opt.zero_grad()
        model.loss(X, z, y).sum().backward()
        opt.step()
    ours = run_md(grad_fn, {"W": W0}, p, 0.1, 40, [40], normalized=True, eps=eps)
    np.testing.assert_allclose(model.W.detach().numpy(), ours.final["W"], rtol=0, atol=1e-10)


def test_batch_lp_norms_match_lp_norm():
    from mirrorattn.mirror import lp_norm, lp_norms

    g = np.random.default_rng(0).standard_normal((5, 3, 4)) * np.array([1e-200, 1, 1e5, 0, 3])[:, None, None]
    for q in (1.5, 2.0, 7.0 / 3.0):
        np.testing.assert_allclose(lp_norms(g, q).ravel(), lp_norm(g, q, batch_dims=1), rtol=1e-13)
        direct = np.array([np.sum(np.abs(x) ** q) ** (1 / q) for x in g[1:]])  # no underflow in these seeds
        np.testing.assert_allclose(lp_norms(g, q).ravel()[1:], direct, rtol=1e-13)


@pytest.mark.parametrize("p", [1.1, 1.5, 1.75, 2.0, 3.0, 5.0])
def test_signed_power_is_sign_times_power_and_the_torch_mirror_map(p):
    import torch

    from mirrorattn.mirror import inverse_exponent, inverse_mirror_map, signed_power

    u = np.random.default_rng(1).standard_normal((4, 3, 5)) * np.array([1e-9, 1.0, 1e3, 0.0])[:, None, None]
    e = inverse_exponent(p)
    out = signed_power(u, e)
    np.testing.assert_allclose(out, np.sign(u) * np.abs(u) ** e, rtol=4e-16, atol=0)
    np.testing.assert_array_equal(out, inverse_mirror_map(u, p))  # the NumPy mirror map is this function
    np.testing.assert_allclose(inverse_mirror_map(torch.as_tensor(u), p).numpy(), out, rtol=4e-16, atol=0)
    assert out is not u and not np.shares_memory(out, u)


def test_step_leaves_handed_out_iterates_alone():
    """The optimizer updates the weights in place; the iterates run_md recorded before a step must not change
    (nor the caller's initial arrays)."""
    _, W0, grad_fn = _problem(2)
    snapshot = W0.copy()
    tr = run_md(grad_fn, {"W": W0}, 1.75, 0.1, 3, [0, 3])
    before = tr.params["W"][0]
    np.testing.assert_array_equal(before, snapshot)
    np.testing.assert_array_equal(W0, snapshot)
    assert not np.allclose(tr.params["W"][1], snapshot)
    np.testing.assert_array_equal(tr.params["W"][1], tr.final["W"])
