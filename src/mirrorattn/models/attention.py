"""The one-layer softmax attention classifier of paper.md section 1, batched over seeds.

    f(X, z) = v^T X^T softmax(X W z)        W = K Q^T in the K/Q form
    L(W, v) = (1/n) sum_i log(1 + exp(-y_i f(X_i, z_i)))

Two interfaces share one definition:

* NumPy functions with analytic gradients (:func:`forward`, :func:`loss_and_grad`,
  :func:`kq_loss_and_grad`), used by the batched mirror-descent trainer of the synthetic
  experiments. Every array has a leading seed axis ``S``: ``X`` (S, n, T, d), ``z`` (S, n, d),
  ``y`` (S, n), ``W`` (S, d, d), ``v`` (S, d). Seeds never mix, so S seeds cost about one.
* :class:`OneLayerAttention`, a ``torch.nn.Module`` (float64 by default) with the same batched
  shapes, for autograd and for the torch optimizers.

No 1/sqrt(d) scaling; the value map is the identity (as in the paper).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = [
    "Forward",
    "OneLayerAttention",
    "attention_scores",
    "forward",
    "kq_loss_and_grad",
    "logistic_loss",
    "loss_and_grad",
    "loss_difference",
    "softmax",
    "token_values",
]


def _check_batch(X: np.ndarray, z: np.ndarray, y: np.ndarray | None, W: np.ndarray, v: np.ndarray) -> None:
    if X.ndim != 4:
        raise ValueError(f"X must have shape (S, n, T, d) (a leading seed axis), got {X.shape}")
    S, n, T, d = X.shape
    if z.shape != (S, n, d):
        raise ValueError(f"z must have shape (S, n, d) = {(S, n, d)}, got {z.shape}")
    if y is not None and y.shape != (S, n):
        raise ValueError(f"y must have shape (S, n) = {(S, n)}, got {y.shape}")
    if W.shape != (S, d, d):
        raise ValueError(f"W must have shape (S, d, d) = {(S, d, d)}, got {W.shape}")
    if v.shape != (S, d):
        raise ValueError(f"v must have shape (S, d) = {(S, d)}, got {v.shape}")


def softmax(s: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along ``axis`` (``s`` is not modified)."""
    e = s - s.max(axis=axis, keepdims=True)
    np.exp(e, out=e)
    e /= e.sum(axis=axis, keepdims=True)
    return e


def _pick_last(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """a[..., idx[...]] for a (..., T) and integer idx (...): the same as ``take_along_axis``
    with ``idx[..., None]`` (without its trailing axis), by flat indexing (much less overhead)."""
    T = a.shape[-1]
    flat = np.arange(0, idx.size * T, T).reshape(idx.shape) + idx
    return np.ascontiguousarray(a).reshape(-1)[flat]


def attention_scores(X: np.ndarray, z: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Scores s_it = x_it^T W z_i, shape (S, n, T), for X (S, n, T, d), z (S, n, d), W (S, d, d)."""
    Wz = z @ W.transpose(0, 2, 1)  # (S, n, d): rows W z_i
    return (X @ Wz[..., None])[..., 0]


@dataclass
class Forward:
    """Intermediate values of one forward pass (all float64 arrays with a leading seed axis)."""

    probs: np.ndarray  #: softmax attention, (S, n, T)
    xv: np.ndarray  #: token values X v, (S, n, T)
    out: np.ndarray  #: model output f, (S, n)
    ref: np.ndarray  #: (S, n) token of largest attention (the reference token)
    deficit: np.ndarray  #: (S, n) x_ref^T v - f = sum_t a_t (x_ref - x_t)^T v, accurate when tiny
    xref: np.ndarray | None = None  #: (S, n, 1) x_ref^T v (recomputed from ``xv`` and ``ref`` when None)

    def ref_values(self) -> np.ndarray:
        """x_ref^T v, shape (S, n, 1)."""
        return self.xref if self.xref is not None else _pick_last(self.xv, self.ref)[..., None]


def token_values(X: np.ndarray, v: np.ndarray) -> np.ndarray:
    """x_it^T v for every seed, sample and token: (S, n, T)."""
    return (X @ v[:, None, :, None])[..., 0]


def forward(X: np.ndarray, z: np.ndarray, W: np.ndarray, v: np.ndarray, xv: np.ndarray | None = None) -> Forward:
    """The model output f(X_i, z_i) = v^T X_i^T softmax(X_i W z_i) for every seed and sample.

    f is computed as x_ref^T v - deficit, with ref the most attended token, so that the small
    differences f - x_ref^T v of a saturated softmax keep their relative accuracy.
    ``xv`` may pass precomputed :func:`token_values` (a fixed v); it is not checked against v.
    """
    _check_batch(X, z, None, W, v)
    probs = softmax(attention_scores(X, z, W))
    if xv is None:
        xv = token_values(X, v)
    ref = probs.argmax(axis=-1)
    xref = _pick_last(xv, ref)[..., None]  # (S, n, 1)
    deficit = np.sum(probs * (xref - xv), axis=-1)
    return Forward(probs=probs, xv=xv, out=xref[..., 0] - deficit, ref=ref, deficit=deficit, xref=xref)


def logistic_loss(out: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean over samples of log(1 + exp(-y f)), per seed: (S, n) -> (S,). Overflow-safe."""
    return np.logaddexp(0.0, -y * out).mean(axis=-1)


def loss_and_grad(
    X: np.ndarray,
    z: np.ndarray,
    y: np.ndarray,
    W: np.ndarray,
    v: np.ndarray,
    need_v: bool = False,
    xv: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, Forward]:
    """Loss (S,), dL/dW (S, d, d), dL/dv (S, d) or None, and the forward values; analytic.

    With r_i = dL/df_i = -y_i sigma(-y_i f_i) / n and a = softmax(X W z):
    dL/ds_it = r_i a_it (x_it^T v - f_i),  dL/dW = sum_it dL/ds_it x_it z_i^T,  dL/dv = sum_i r_i X_i^T a_i.
    ``xv``: optional precomputed :func:`token_values` (v fixed during training).
    """
    if y.shape != X.shape[:2]:
        raise ValueError(f"y must have shape (S, n) = {X.shape[:2]}, got {y.shape}")
    fw = forward(X, z, W, v, xv)
    n = X.shape[1]
    loss = logistic_loss(fw.out, y)
    # sigma(-y f) computed stably as exp(-logaddexp(0, y f))
    r = -y * np.exp(-np.logaddexp(0.0, y * fw.out)) / n  # (S, n)
    G = fw.xv - fw.ref_values()
    G += fw.deficit[..., None]  # x_t^T v - f, accurately
    G *= r[..., None] * fw.probs  # (S, n, T)
    B = (G[:, :, None, :] @ X)[:, :, 0, :]  # (S, n, d): sum_t G_it x_it
    gW = B.transpose(0, 2, 1) @ z  # (S, d, d)
    gv = None
    if need_v:
        h = (fw.probs[:, :, None, :] @ X)[:, :, 0, :]  # (S, n, d): X_i^T a_i
        gv = (r[:, None, :] @ h)[:, 0, :]
    return loss, gW, gv, fw


def loss_difference(old: Forward, new: Forward, y: np.ndarray) -> np.ndarray:
    """L(new) - L(old) per seed (S,), accurate even when both losses agree to 1e-16 relative.

    Both forward passes must share X, v (so x^T v); the margins are written relative to the
    reference token of ``old``: m = y (x_ref^T v - deficit), and the per-sample difference is
    log1p(e^{-m_old} expm1(m_old - m_new) / (1 + e^{-m_old})), with m_old - m_new = y (deficit_new
    - deficit_old) computed from the small deficits.
    """
    xref = old.ref_values()
    deficit_new = np.sum(new.probs * (xref - new.xv), axis=-1)
    m_old = y * (xref[..., 0] - old.deficit)
    dm = y * (deficit_new - old.deficit)  # m_old - m_new
    e = np.exp(-np.logaddexp(0.0, m_old))  # e^{-m} / (1 + e^{-m})
    return np.log1p(e * np.expm1(dm)).mean(axis=-1)


def kq_loss_and_grad(
    X: np.ndarray,
    z: np.ndarray,
    y: np.ndarray,
    K: np.ndarray,
    Q: np.ndarray,
    v: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Forward]:
    """K/Q form W = K Q^T: loss (S,), dL/dK = dL/dW Q and dL/dQ = dL/dW^T K (both (S, d, d))."""
    W = K @ Q.transpose(0, 2, 1)
    loss, gW, _, fw = loss_and_grad(X, z, y, W, v)
    return loss, gW @ Q, gW.transpose(0, 2, 1) @ K, fw


class OneLayerAttention(nn.Module):
    """f(X, z) = v^T X^T softmax(X W z), batched over ``seeds`` independent copies.

    ``form="W"`` holds W (S, d, d); ``form="KQ"`` holds K and Q (S, d, d each) with W = K Q^T.
    ``v`` (S, d) is a trainable parameter when ``train_v`` else a buffer. Parameters start at zero
    unless given; float64 by default.
    """

    def __init__(
        self,
        d: int,
        seeds: int = 1,
        form: str = "W",
        train_v: bool = False,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        if form not in ("W", "KQ"):
            raise ValueError(f"form must be 'W' or 'KQ', got {form!r}")
        if d < 1 or seeds < 1:
            raise ValueError(f"d and seeds must be positive integers, got d={d}, seeds={seeds}")
        self.form = form
        shape = (seeds, d, d)
        if form == "W":
            self.W = nn.Parameter(torch.zeros(shape, dtype=dtype))
        else:
            self.K = nn.Parameter(torch.zeros(shape, dtype=dtype))
            self.Q = nn.Parameter(torch.zeros(shape, dtype=dtype))
        v = torch.zeros((seeds, d), dtype=dtype)
        if train_v:
            self.v = nn.Parameter(v)
        else:
            self.register_buffer("v", v)

    def weight(self) -> torch.Tensor:
        """The key-query matrix W (S, d, d) (K Q^T in the K/Q form)."""
        return self.W if self.form == "W" else self.K @ self.Q.transpose(-1, -2)

    def attention(self, X: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """softmax(X W z): (S, n, T) for X (S, n, T, d), z (S, n, d)."""
        Wz = torch.einsum("sde,sne->snd", self.weight(), z)
        return torch.softmax(torch.einsum("sntd,snd->snt", X, Wz), dim=-1)

    def forward(self, X: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Model output f (S, n)."""
        a = self.attention(X, z)
        return torch.einsum("snt,sntd,sd->sn", a, X, self.v)

    def loss(self, X: torch.Tensor, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-seed mean logistic loss (S,); sum it before ``backward`` (seeds do not interact)."""
        return torch.nn.functional.softplus(-y * self(X, z)).mean(dim=-1)
