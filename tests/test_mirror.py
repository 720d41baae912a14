"""The pure l_p mirror-map functions against independent float64 NumPy/SciPy computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import approx_fprime

from mirrorattn.mirror import (
    bregman_divergence,
    check_p,
    directional_bregman,
    dual_exponent,
    forward_exponent,
    inverse_exponent,
    inverse_mirror_map,
    lp_norm,
    lp_potential,
    mirror_map,
    normalize_lp,
    snap_exponent,
)

P_VALUES = (1.01, 1.1, 1.25, 1.5, 1.75, 2.0, 3.0, 5.0)


def rng(seed=0):
    return np.random.default_rng(seed)


def test_exponents_and_snapping():
    assert 1.0 / (1.1 - 1.0) == pytest.approx(10.0) and 1.0 / (1.1 - 1.0) != 10.0
    assert inverse_exponent(1.1) == 10.0
    assert inverse_exponent(1.5) == 2.0
    assert inverse_exponent(3.0) == 0.5
    assert inverse_exponent(1.01) == 100.0
    assert dual_exponent(1.1) == 11.0 and dual_exponent(3.0) == 1.5 and dual_exponent(2.0) == 2.0
    assert forward_exponent(3.0) == 2.0 and forward_exponent(1.75) == 0.75
    # a non-special exponent is left alone; snapping only moves by <= 1e-9 relative
    assert inverse_exponent(1.75) == 1.0 / 0.75
    assert snap_exponent(2.0 + 1e-6) == 2.0 + 1e-6
    assert snap_exponent(2.5 + 1e-12) == 2.5
    for p in P_VALUES:
        assert abs(inverse_exponent(p) - 1.0 / (p - 1.0)) <= 1e-9 * max(1.0, 1.0 / (p - 1.0))
        assert 1.0 / p + 1.0 / dual_exponent(p) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("bad", [1.0, 0.5, -2.0, math.inf, math.nan, "x", None])
def test_check_p_rejects(bad):
    with pytest.raises(ValueError, match="> 1"):
        check_p(bad)


@pytest.mark.parametrize("p", P_VALUES)
def test_mirror_maps_closed_form_and_round_trip(p):
    w = rng(1).standard_normal((6, 7)) * 2.0
    u_ref = np.sign(w) * np.abs(w) ** (p - 1.0)
    u = mirror_map(w, p)
    assert isinstance(u, np.ndarray)
    np.testing.assert_allclose(u, u_ref, rtol=1e-14)
    np.testing.assert_allclose(inverse_mirror_map(u_ref, p), np.sign(u_ref) * np.abs(u_ref) ** (1.0 / (p - 1.0)),
                               rtol=1e-12)
    np.testing.assert_allclose(inverse_mirror_map(u, p), w, rtol=1e-12)
    np.testing.assert_allclose(mirror_map(inverse_mirror_map(w, p), p), w, rtol=1e-12)
    ut = mirror_map(torch.from_numpy(w), p)
    assert isinstance(ut, torch.Tensor) and ut.dtype == torch.float64
    np.testing.assert_allclose(ut.numpy(), u_ref, rtol=1e-14)
    np.testing.assert_allclose(inverse_mirror_map(ut, p).numpy(), w, rtol=1e-12)
    # zeros map to zeros, signs are kept
    z = np.array([0.0, -0.0, 1.0, -1.0])
    np.testing.assert_array_equal(mirror_map(z, p), [0.0, 0.0, 1.0, -1.0])


def test_mirror_map_is_gradient_of_potential():
    """grad psi by finite differences of lp_potential equals mirror_map (independent of its formula)."""
    for p in (1.25, 1.75, 3.0):
        w = rng(2).standard_normal(5) + 0.3 * np.sign(rng(2).standard_normal(5))
        fd = approx_fprime(w, lambda x, p=p: lp_potential(x, p), 1e-7)
        np.testing.assert_allclose(mirror_map(w, p), fd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("p", P_VALUES)
def test_potential_and_norm(p):
    w = rng(3).standard_normal((4, 5))
    assert lp_potential(w, p) == pytest.approx(np.sum(np.abs(w) ** p) / p, rel=1e-13)
    assert lp_norm(w, p) == pytest.approx(np.linalg.norm(w.ravel(), ord=p), rel=1e-13)
    assert float(lp_norm(torch.from_numpy(w), p)) == pytest.approx(np.linalg.norm(w.ravel(), ord=p), rel=1e-13)
    # no overflow for huge entries (|w|^p alone would overflow float64)
    big = w * 1e250
    assert lp_norm(big, p) == pytest.approx(1e250 * np.linalg.norm(w.ravel(), ord=p), rel=1e-12)
    assert lp_norm(np.zeros(3), p) == 0.0


@pytest.mark.parametrize("p", (1.1, 1.5, 1.75, 3.0))
def test_bregman_against_definition_and_finite_difference(p):
    r = rng(4)
    a, b = r.standard_normal(6), r.standard_normal(6)

    def psi(x):
        return np.sum(np.abs(x) ** p) / p

    grad_b = approx_fprime(b, psi, 1e-8)
    d_fd = psi(a) - psi(b) - grad_b @ (a - b)
    d = bregman_divergence(a, b, p)
    assert d == pytest.approx(d_fd, rel=1e-5, abs=1e-7)
    assert d >= 0.0
    assert abs(bregman_divergence(a, a, p)) <= 1e-13
    # positive away from the diagonal, and in torch too
    assert d > 1e-3
    dt = bregman_divergence(torch.from_numpy(a), torch.from_numpy(b), p)
    assert float(dt) == pytest.approx(d, rel=1e-13)


def test_bregman_is_nonnegative_on_random_pairs():
    r = rng(5)
    for p in P_VALUES:
        a, b = r.standard_normal((50, 8)), r.standard_normal((50, 8))
        d = bregman_divergence(a, b, p, batch_dims=1)
        assert d.shape == (50,) and np.all(d >= -1e-12)
        assert np.all(np.abs(bregman_divergence(a, a, p, batch_dims=1)) <= 1e-12)


def test_batch_dims_match_per_item_values():
    r = rng(6)
    a, b = r.standard_normal((3, 4, 5)), r.standard_normal((3, 4, 5))
    p = 1.75
    for fn in (lp_norm, lp_potential):
        out = fn(a, p, batch_dims=1)
        np.testing.assert_allclose(out, [fn(a[i], p) for i in range(3)], rtol=1e-13)
        out2 = fn(a, p, batch_dims=2)
        assert out2.shape == (3, 4)
        np.testing.assert_allclose(out2[1, 2], fn(a[1, 2], p), rtol=1e-13)
    bd = bregman_divergence(a, b, p, batch_dims=1)
    np.testing.assert_allclose(bd, [bregman_divergence(a[i], b[i], p) for i in range(3)], rtol=1e-12)
    dd = directional_bregman(torch.from_numpy(a), torch.from_numpy(b), p, batch_dims=1)
    np.testing.assert_allclose(dd.numpy(), [directional_bregman(a[i], b[i], p) for i in range(3)], rtol=1e-12)
    n = normalize_lp(a, p, batch_dims=1)
    np.testing.assert_allclose(lp_norm(n, p, batch_dims=1), np.ones(3), rtol=1e-13)
    with pytest.raises(ValueError, match="batch_dims"):
        lp_norm(a, p, batch_dims=4)


def test_directional_bregman_is_scale_invariant_and_zero_on_same_direction():
    r = rng(7)
    a, b = r.standard_normal(9), r.standard_normal(9)
    p = 1.25
    d = directional_bregman(a, b, p)
    na, nb = a / np.linalg.norm(a, ord=p), b / np.linalg.norm(b, ord=p)
    ref = np.sum(np.abs(na) ** p) / p + (p - 1) * np.sum(np.abs(nb) ** p) / p - np.sign(nb) * np.abs(nb) ** (p - 1) @ na
    assert d == pytest.approx(ref, rel=1e-12)
    assert directional_bregman(3.0 * a, 0.5 * b, p) == pytest.approx(d, rel=1e-12)
    assert abs(directional_bregman(a, 7.0 * a, p)) <= 1e-13
    with pytest.raises(ValueError, match="zero array"):
        directional_bregman(np.zeros(9), b, p)
    with pytest.raises(ValueError, match="equal shapes"):
        bregman_divergence(a, b[:4], p)


def test_check_p_range_bounds_and_message():
    from mirrorattn.mirror import P_MAX, P_MIN, check_p_range

    assert (P_MIN, P_MAX) == (1.001, 100.0)
    assert check_p_range(P_MIN) == P_MIN and check_p_range(P_MAX) == P_MAX and check_p_range("1.75") == 1.75
    for bad in (1.0005, 100.01, 2049, 1e6):
        with pytest.raises(ValueError, match=r"outside \[1.001, 100\]") as info:
            check_p_range(bad, "ps")
        assert str(info.value).startswith("ps = ") and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="finite real number > 1"):
        check_p_range(math.nan)


# ------------------------------------------ the optimizer's arithmetic (one home: issue 13 item 1)

EXPONENTS = (1.0, 0.5, 2.0, 10.0, 100.0, 2.5, 4.0 / 3.0, 5.0 / 3.0, 10.0 / 3.0, 0.75, 0.1, 20.0 / 9.0)


@pytest.mark.parametrize("e", EXPONENTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_signed_pow_every_kind_against_float64_power(e, dtype):
    """signed_pow (eager, every fast path) and signed_pow_list (foreach) against NumPy's float64 sign * |u|^e;
    kind_exponent inverts exponent_kind; out= writes the same values (rounded to out's dtype)."""
    from mirrorattn.mirror import exponent_kind, kind_exponent, signed_pow, signed_pow_list

    kind = exponent_kind(e)
    assert kind_exponent(kind) == pytest.approx(e, rel=1e-15)
    u64 = np.sign(rng(8).standard_normal(200)) * np.logspace(-0.3, 0.3, 200)  # |u|^100 stays normal in float32
    u64[:3] = [0.0, -0.0, 1.0]
    u = torch.from_numpy(u64).to(dtype)
    ref = np.sign(u.double().numpy()) * np.abs(u.double().numpy()) ** e
    n = kind[1] if kind[0] in ("int", "halfint", "third") else 1
    rtol = (n + 4) * torch.finfo(dtype).eps  # repeated squaring rounds up to n - 1 times
    got = signed_pow(u, kind)
    np.testing.assert_allclose(got.double().numpy(), ref, rtol=rtol, atol=0)
    for x, got_list in zip([u, u[:7]], signed_pow_list([u, u[:7]], kind)):
        assert torch.equal(got_list, signed_pow(x, kind))  # (pow's short tails round differently: same x)
    out = torch.empty_like(u)
    assert signed_pow(u, kind, out=out) is out and torch.equal(out, got)
    half = torch.empty(u.shape, dtype=torch.bfloat16)
    signed_pow(u, kind, out=half)
    assert torch.equal(half, got.bfloat16())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_signed_pow_numpy_whole_exponents_in_place_equal_the_torch_multiplications(dtype):
    """NumPy's whole exponents (computed in place, few temporaries) give the bits of torch's repeated squaring
    (the same multiplications in the same order), into a new array, into out (also out = u, another dtype, 0-d),
    and both lie within (n + 4) ulp of float64's power."""
    from mirrorattn.mirror import signed_pow

    u = (rng(9).standard_normal(300) * 1.2).astype(dtype)
    u[:3] = [0.0, -0.0, 1.0]
    with np.errstate(over="ignore", under="ignore"):  # |u|^100 leaves float32's range: inf and 0 compared too
        _check_numpy_whole_powers(u, dtype, signed_pow)


def _check_numpy_whole_powers(u, dtype, signed_pow):
    for n in list(range(2, 20)) + [32, 33, 100]:
        kind = ("int", n)
        want = signed_pow(torch.from_numpy(u), kind).numpy()
        ref = np.sign(u.astype(np.float64)) * np.abs(u.astype(np.float64)) ** n
        ok = np.isfinite(ref) & (np.abs(ref) < np.finfo(dtype).max / 2) & (np.abs(ref) > np.finfo(dtype).tiny * 1e8)
        np.testing.assert_allclose(want[ok], ref[ok], rtol=(n + 4) * np.finfo(dtype).eps, atol=0)
        assert np.array_equal(signed_pow(u, kind), want, equal_nan=True)
        out = np.empty_like(u)
        assert signed_pow(u, kind, out=out) is out and np.array_equal(out, want, equal_nan=True)
        same = u.copy()
        signed_pow(same, kind, out=same)
        assert np.array_equal(same, want, equal_nan=True)
        other = np.empty(u.shape, np.float64 if dtype == np.float32 else np.float32)
        signed_pow(u, kind, out=other)
        assert np.array_equal(other, want.astype(other.dtype), equal_nan=True)
        assert signed_pow(np.asarray(u[5]), kind) == want[5]


@pytest.mark.parametrize("q", (2.0, 1.5, 11.0, 4.0, 2.2857142857142856, 3.0))
@pytest.mark.parametrize("batch_dims", (0, 1, 2))
def test_lp_norms_torch_and_numpy_against_float64_norms(q, batch_dims):
    """lp_norms of every slice (NumPy and torch, float64) against np.linalg.norm of each slice, also where
    |g|^q alone would overflow float64; a zero slice has norm 0; the result broadcasts against g."""
    from mirrorattn.mirror import lp_norms

    g = rng(9).standard_normal((3, 4, 5))
    g[1] = 0.0
    lead = g.shape[:batch_dims]
    flat = g.reshape((int(np.prod(lead)), -1))
    ref = np.array([np.linalg.norm(x, ord=q) for x in flat]).reshape(lead + (1,) * (3 - batch_dims) if lead else ())
    for scale in (1.0, 1e250):
        got_np = lp_norms(g * scale, q, batch_dims)
        got_t = lp_norms(torch.from_numpy(g * scale), q, batch_dims)
        assert got_np.shape == ref.shape and tuple(got_t.shape) == ref.shape
        np.testing.assert_allclose(got_np, scale * ref, rtol=1e-13, atol=0)
        np.testing.assert_allclose(got_t.numpy(), scale * ref, rtol=1e-13, atol=0)
    assert float(lp_norms(torch.zeros(4), q, 0)) == 0.0 and float(lp_norms(np.zeros((1, 4)), q)[0, 0]) == 0.0
