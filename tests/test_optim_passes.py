"""The optimizer's CPU kernels that trade a fused pass for vectorised ones: the two-pass cube-root step (p = 1.75)
and the dual norm from unscaled sums |g|^q (normalised mode).

References: the one-pass fused kernel (bit for bit), float64 norms computed directly, and the eager optimizer.
"""

from __future__ import annotations

import pytest
import torch

from mirrorattn.mirror import exponent_kind
from mirrorattn.optim import LpMirrorDescent, _kernels
from mirrorattn.optim._compile import _fx_config


def _compiled(fn):
    return torch.compile(fn, dynamic=True, fullgraph=True)


def _awkward(n: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Random values over many magnitudes, with zeros of both signs, subnormals, huge and tiny entries."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g, dtype=torch.float64)
    x = x * torch.exp(6 * torch.randn(n, generator=g, dtype=torch.float64))
    fi = torch.finfo(dtype)
    x[:8] = torch.tensor([0.0, -0.0, fi.tiny / 8, -fi.tiny, 1e30, -1e-30, 1.0, -3.0], dtype=torch.float64)
    return x.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("has_beta", [False, True])
@pytest.mark.parametrize("kind", [("third", 1, 1), ("third", 1, 2)])  # p = 1.75 (e = 4/3), p = 1.6 (e = 5/3)
def test_split_cube_root_step_equals_the_fused_kernel_bit_for_bit(dtype, has_beta, kind):
    """Chunks of 2 and 1 tensors through the split CPU step give the weights and duals of the one-pass kernel
    exactly (same arithmetic, the guess carried through the weight's memory instead of a bit cast)."""
    shapes = (1000, 37, 513)
    us = [_awkward(n, dtype, i) for i, n in enumerate(shapes)]
    gs = [_awkward(n, dtype, 10 + i) for i, n in enumerate(shapes)]
    ws = [_awkward(n, dtype, 20 + i) for i, n in enumerate(shapes)]
    alphas = torch.tensor([0.3, 1e-3, 2.0], dtype=torch.float64)
    betas = torch.tensor([0.01, 0.1, 0.0], dtype=torch.float64) if has_beta else torch.zeros(3, dtype=torch.float64)
    assert _kernels.split_applies(kind, us[0], ws[0])
    u_split, w_split = [u.clone() for u in us], [w.clone() for w in ws]
    if _kernels.compiled_multi_step(kind, has_beta, u_split, w_split, gs, alphas, betas) != 3:
        pytest.skip(f"torch.compile unavailable here: {_kernels._FAILED}")
    fused = _compiled(_kernels._compiled_multi_body(kind, has_beta, 1))
    duck = _fx_config.use_duck_shape
    _fx_config.use_duck_shape = False
    try:
        for i in range(3):
            u, w = us[i].clone(), ws[i].clone()
            fused([u], [w], [gs[i]], alphas[i:i + 1].clone(), betas[i:i + 1].clone())
            torch.testing.assert_close(u_split[i], u, rtol=0, atol=0, equal_nan=True)
            torch.testing.assert_close(w_split[i], w, rtol=0, atol=0, equal_nan=True)
    finally:
        _fx_config.use_duck_shape = duck
    # and the cube root itself is within 3 ulp of float64's (the 3-ulp claim of cbrt_halley)
    a = us[0].abs()[8:]
    ref = a.double() ** (1.0 / 3.0)
    got = _kernels.cbrt_halley(a).double()
    assert ((got - ref).abs() <= 3 * torch.finfo(dtype).eps * ref).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("q", [1.5, 2.0, 7.0 / 3.0, 5.0 / 3.0])
def test_unscaled_power_sums_give_the_dual_norm(dtype, q):
    """sum |g|^q from the one-pass kernel (q = 3/2, 2) and from the scratch-memory passes (q = 7/3, 5/3: the
    weights' memory is overwritten) give ||g||_q to the dtype's precision, against float64 computed directly."""
    gs = [torch.randn(n, generator=torch.Generator().manual_seed(n), dtype=torch.float64).to(dtype) * 1e-2
          for n in (4096, 300, 77)]
    qkind = exponent_kind(q)
    if qkind[0] == "third":
        ws = [torch.ones_like(g) for g in gs]
        assert _kernels.scratch_applies(qkind, gs[0], ws[0])
        sums = _kernels.scratch_pow_sums(qkind, gs, ws)
        assert not any(torch.equal(w, torch.ones_like(w)) for w in ws)  # the scratch is the weights' memory
    else:
        assert _kernels.pow_sum_wins(q)
        sums = _kernels.compiled_pow_sums(q, gs)
    if sums is None:
        pytest.skip(f"torch.compile unavailable here: {_kernels._FAILED}")
    tol = 1e-5 if dtype == torch.float32 else 1e-13
    for s, g in zip(sums, gs):
        ref = (g.double().abs() ** q).sum() ** (1.0 / q)
        assert s.dtype == torch.float64
        assert abs(float(s) ** (1.0 / q) / float(ref) - 1.0) < tol
        assert float(s) >= _kernels.pow_sum_floor(g)


@pytest.mark.parametrize("min_numel", [2, 1000])
@pytest.mark.parametrize("p", [3.0, 1.75, 2.0])
@pytest.mark.parametrize("size", ["zero", "subnormal", "ordinary", "huge"])
def test_normalised_step_takes_the_scaled_norm_where_the_unscaled_sum_leaves_the_range(p, size, min_numel):
    """Gradients whose terms |g|^q are subnormal in float32 (about 1e-43: rounded to a few bits, or to 0), overflow
    (|g| = 1e25) or are 0 give the step of the eager optimizer (scaled norms; eps far below the norms): the sum as
    it is would move the weights by a wrong amount, lr / eps or nothing. With ``min_numel`` 1000 the second tensor
    is below the compiled kernels' size: one group with a sum for one tensor and none for the other."""
    q = p / (p - 1.0)
    scale = {"zero": 0.0, "subnormal": 1e-43 ** (1.0 / q), "ordinary": 1e-3, "huge": 1e25}[size]
    shapes = ((64, 33), (500,))
    outs = []
    for kw in ({"compile": False}, {"compile": True, "compile_min_numel": min_numel}):
        gen = torch.Generator().manual_seed(3)
        params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
        opt = LpMirrorDescent(params, lr=0.05, p=p, normalized=True, eps=1e-36, **kw)
        for _ in range(2):
            for prm in params:
                prm.grad = torch.randn(prm.shape, generator=gen) * scale
            opt.step()
        outs.append([prm.detach().clone() for prm in params])
    if _kernels._FAILED or not opt.use_compile:
        pytest.skip(f"torch.compile unavailable here: {_kernels._FAILED}")
    for x, y in zip(*outs):
        assert x.isfinite().all()
        torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-6)
