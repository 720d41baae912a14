"""The one-layer attention model: forward against a plain loop, gradients against finite
differences and torch autograd (float64), the K/Q form, and input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mirrorattn.data.synthetic import make_synthetic_batch
from mirrorattn.models.attention import (
    OneLayerAttention,
    forward,
    kq_loss_and_grad,
    loss_and_grad,
)


def _batch(S: int = 3, n: int = 4, T: int = 5, d: int = 3, scale: float = 1.0):
    data = make_synthetic_batch(n, T, d, list(range(S)))
    rng = np.random.default_rng(99)
    W = scale * rng.standard_normal((S, d, d))
    v = data.v + 0.3 * rng.standard_normal((S, d))
    return data, W, v


def test_forward_matches_plain_loop():
    data, W, v = _batch()
    fw = forward(data.X, data.z, W, v)
    S, n, T, d = data.X.shape
    for s in range(S):
        for i in range(n):
            sc = np.array([data.X[s, i, t] @ W[s] @ data.z[s, i] for t in range(T)])
            a = np.exp(sc - sc.max())
            a /= a.sum()
            f = v[s] @ (data.X[s, i].T @ a)
            assert fw.out[s, i] == pytest.approx(f, rel=1e-12, abs=1e-14)
            np.testing.assert_allclose(fw.probs[s, i], a, rtol=1e-12)


def _central_diff(fun, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp = x.copy()
        xm = x.copy()
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (fun(xp) - fun(xm)) / (2 * h)
    return g


def test_gradients_match_finite_differences():
    data, W, v = _batch(S=2, n=3, T=4, d=3, scale=2.0)
    loss, gW, gv, _ = loss_and_grad(data.X, data.z, data.y, W, v, need_v=True)
    fdW = _central_diff(lambda w: loss_and_grad(data.X, data.z, data.y, w, v)[0].sum(), W)
    fdv = _central_diff(lambda vv: loss_and_grad(data.X, data.z, data.y, W, vv)[0].sum(), v)
    np.testing.assert_allclose(gW, fdW, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(gv, fdv, rtol=1e-6, atol=1e-9)
    assert np.abs(gW).max() > 1e-3  # the check is not vacuous


def test_kq_gradients_match_finite_differences():
    data, _, v = _batch(S=2, n=3, T=4, d=3)
    rng = np.random.default_rng(5)
    K = rng.standard_normal((2, 3, 3))
    Q = rng.standard_normal((2, 3, 3))
    _, gK, gQ, _ = kq_loss_and_grad(data.X, data.z, data.y, K, Q, v)
    fdK = _central_diff(lambda k: kq_loss_and_grad(data.X, data.z, data.y, k, Q, v)[0].sum(), K)
    fdQ = _central_diff(lambda q: kq_loss_and_grad(data.X, data.z, data.y, K, q, v)[0].sum(), Q)
    np.testing.assert_allclose(gK, fdK, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(gQ, fdQ, rtol=1e-6, atol=1e-9)


def test_torch_module_autograd_matches_analytic():
    data, W, v = _batch(S=3, n=4, T=5, d=3, scale=1.5)
    model = OneLayerAttention(3, seeds=3, form="W", train_v=True)
    assert model.W.dtype == torch.float64
    with torch.no_grad():
        model.W.copy_(torch.from_numpy(W))
        model.v.copy_(torch.from_numpy(v))
    X, z, y = (torch.from_numpy(a) for a in (data.X, data.z, data.y))
    loss = model.loss(X, z, y)
    loss.sum().backward()
    ref_loss, gW, gv, _ = loss_and_grad(data.X, data.z, data.y, W, v, need_v=True)
    np.testing.assert_allclose(loss.detach().numpy(), ref_loss, rtol=1e-13)
    np.testing.assert_allclose(model.W.grad.numpy(), gW, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(model.v.grad.numpy(), gv, rtol=1e-10, atol=1e-14)


def test_torch_kq_module_matches_w_form():
    data, _, v = _batch(S=2, n=3, T=4, d=3)
    rng = np.random.default_rng(1)
    K, Q = rng.standard_normal((2, 2, 3, 3))
    m = OneLayerAttention(3, seeds=2, form="KQ")
    assert "v" not in dict(m.named_parameters())  # v is fixed (a buffer)
    with torch.no_grad():
        m.K.copy_(torch.from_numpy(K))
        m.Q.copy_(torch.from_numpy(Q))
        m.v.copy_(torch.from_numpy(v))
    out = m(torch.from_numpy(data.X), torch.from_numpy(data.z)).detach().numpy()
    ref = forward(data.X, data.z, K @ Q.transpose(0, 2, 1), v).out
    np.testing.assert_allclose(out, ref, rtol=1e-12)


def test_loss_is_stable_for_huge_margins():
    data, W, v = _batch(scale=1.0)
    loss, gW, _, _ = loss_and_grad(data.X, data.z, data.y, 1e4 * W, 1e4 * v)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(gW))


def test_bad_shapes_raise_clear_errors():
    data, W, v = _batch()
    with pytest.raises(ValueError, match="W must have shape"):
        forward(data.X, data.z, W[:, :2], v)
    with pytest.raises(ValueError, match="leading seed axis"):
        forward(data.X[0], data.z, W, v)
    with pytest.raises(ValueError, match="form must be"):
        OneLayerAttention(3, form="QK")
