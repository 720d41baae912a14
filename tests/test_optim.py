"""LpMirrorDescent and the optimizer registry, against independent computations.

The reference update is a float64 NumPy re-implementation written from paper.md section 2 with
the raw exponents p - 1 and 1/(p - 1) (no snapping, no fast paths).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from mirrorattn.optim import (
    LpMirrorDescent,
    NonFiniteGradientError,
    available_optimizers,
    build_optimizer,
    parse_optimizer_spec,
    register_optimizer,
)
from mirrorattn.optim import registry as registry_mod

P_VALUES = (1.01, 1.1, 1.5, 1.75, 3.0, 5.0)
SHAPES = ((7, 5), (13,), (3, 4, 2))


def ref_steps(w0s, grads, p, lr, *, normalized=False, wd=0.0, maximize=False, eps=1e-12):
    """NumPy float64 l_p mirror descent: grads[k][i] is the gradient of tensor i at step k."""
    ws = [np.array(w, dtype=np.float64) for w in w0s]
    us = [np.sign(w) * np.abs(w) ** (p - 1.0) for w in ws]
    q = p / (p - 1.0)
    for gk in grads:
        for i, g in enumerate(gk):
            g = np.array(g, dtype=np.float64)
            g = -g if maximize else g
            g = g + wd * ws[i]
            if normalized:
                g = g / (np.sum(np.abs(g) ** q) ** (1.0 / q) + eps)
            us[i] = us[i] - lr * g
            ws[i] = np.sign(us[i]) * np.abs(us[i]) ** (1.0 / (p - 1.0))
    return ws, us


def make(shapes=SHAPES, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=torch.float64).to(dtype)) for s in shapes]


def grad_seq(shapes=SHAPES, steps=4, seed=1, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    return [[scale * torch.randn(s, generator=g, dtype=torch.float64) for s in shapes] for _ in range(steps)]


def run_opt(params, grads, **kw):
    opt = LpMirrorDescent(params, **kw)
    for gk in grads:
        for prm, g in zip(params, gk):
            prm.grad = g.to(prm.dtype)
        opt.step()
    return opt


def assert_close_rel(a, b, rtol):
    """max |a - b| / max |b| <= rtol, and elementwise within rtol * |b| + rtol * max|b| * 1e-3."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = max(float(np.max(np.abs(b))), 1e-300)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale * 1e-3)


# ---------------------------------------------------------------- the update against the reference


@pytest.mark.parametrize("p", P_VALUES)
@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("variant", ["plain", "wd", "maximize_wd"])
@pytest.mark.parametrize("foreach", [True, False])
def test_matches_float64_reference(p, normalized, variant, foreach):
    wd = 0.0 if variant == "plain" else 0.05
    maximize = variant == "maximize_wd"
    lr = 0.05 if normalized else 0.02
    params = make()
    w0 = [prm.detach().numpy().copy() for prm in params]
    grads = grad_seq()
    opt = run_opt(params, grads, lr=lr, p=p, normalized=normalized, weight_decay=wd, maximize=maximize,
                  foreach=foreach, compile=False)
    ws, us = ref_steps(w0, [[g.numpy() for g in gk] for gk in grads], p, lr, normalized=normalized, wd=wd,
                       maximize=maximize)
    for prm, w, u in zip(params, ws, us):
        assert_close_rel(prm.detach().numpy(), w, 1e-12)
        assert_close_rel(opt.state[prm]["dual"].numpy(), u, 1e-12)
        assert opt.state[prm]["dual"].dtype == torch.float64
    assert opt.last_step_paths == {("foreach" if foreach else "loop"): len(params)}
    # the test can fail: the weights moved by much more than the tolerance
    assert max(float(np.max(np.abs(w - a))) for w, a in zip(ws, w0)) > 1e-4


def test_p_1_1_takes_the_integer_path_and_p2_the_identity():
    from mirrorattn.mirror import exponent_kind, inverse_exponent

    assert 1.0 / (1.1 - 1.0) != 10.0
    assert exponent_kind(inverse_exponent(1.1)) == ("int", 10)
    assert exponent_kind(inverse_exponent(1.5)) == ("int", 2)
    assert exponent_kind(inverse_exponent(1.01)) == ("int", 100)
    assert exponent_kind(inverse_exponent(3.0)) == ("sqrt",)
    assert exponent_kind(inverse_exponent(2.0)) == ("identity",)
    assert exponent_kind(inverse_exponent(1.4)) == ("halfint", 2)
    assert exponent_kind(inverse_exponent(1.75)) == ("third", 1, 1)  # 4/3
    assert exponent_kind(inverse_exponent(1.6)) == ("third", 1, 2)  # 5/3
    assert exponent_kind(inverse_exponent(2.5))[0] == "pow"  # 2/3: n = 0 keeps pow
    assert exponent_kind(inverse_exponent(1.3)) == ("third", 3, 1)  # 1/(1.3 - 1) = 3.333333333333333
    assert exponent_kind(inverse_exponent(1.45))[0] == "pow"  # 20/9


@pytest.mark.parametrize("p", [1.4, 1.25])
def test_halfint_and_more_int_exponents_match_reference(p):
    params = make()
    w0 = [prm.detach().numpy().copy() for prm in params]
    grads = grad_seq()
    run_opt(params, grads, lr=0.02, p=p, compile=False)
    ws, _ = ref_steps(w0, [[g.numpy() for g in gk] for gk in grads], p, 0.02)
    for prm, w in zip(params, ws):
        assert_close_rel(prm.detach().numpy(), w, 1e-12)


def test_per_group_p_and_lr():
    a, b = make(shapes=((6, 3),), seed=2), make(shapes=((5,),), seed=3)
    grads = grad_seq(shapes=((6, 3), (5,)), steps=3)
    w0 = [a[0].detach().numpy().copy(), b[0].detach().numpy().copy()]
    opt = LpMirrorDescent([{"params": a, "p": 1.1}, {"params": b, "p": 3.0, "lr": 0.05}], lr=0.02, p=2.0,
                          compile=False)
    for gk in grads:
        a[0].grad, b[0].grad = gk[0].clone(), gk[1].clone()
        opt.step()
    wa, _ = ref_steps([w0[0]], [[gk[0].numpy()] for gk in grads], 1.1, 0.02)
    wb, _ = ref_steps([w0[1]], [[gk[1].numpy()] for gk in grads], 3.0, 0.05)
    assert_close_rel(a[0].detach().numpy(), wa[0], 1e-12)
    assert_close_rel(b[0].detach().numpy(), wb[0], 1e-12)


def test_changing_group_p_recomputes_dual_from_weights():
    params = make(shapes=((4, 4),))
    grads = grad_seq(shapes=((4, 4),), steps=2)
    opt = run_opt(params, grads[:1], lr=0.02, p=1.5, compile=False)
    w_mid = params[0].detach().numpy().copy()
    opt.param_groups[0]["p"] = 3.0
    params[0].grad = grads[1][0].clone()
    opt.step()
    ws, _ = ref_steps([w_mid], [[grads[1][0].numpy()]], 3.0, 0.02)
    assert_close_rel(params[0].detach().numpy(), ws[0], 1e-12)


# ---------------------------------------------------------------- p = 2 is SGD


@pytest.mark.parametrize("wd", [0.0, 0.1])
@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_p2_equals_sgd(wd, maximize, foreach, dtype):
    a, b = make(dtype=dtype), make(dtype=dtype)
    oa = LpMirrorDescent(a, lr=0.1, p=2.0, weight_decay=wd, maximize=maximize, foreach=foreach)
    ob = torch.optim.SGD(b, lr=0.1, weight_decay=wd, maximize=maximize, foreach=foreach)
    for gk in grad_seq(steps=5):
        for x, y, g in zip(a, b, gk):
            x.grad = g.to(dtype)
            y.grad = g.to(dtype)
        oa.step()
        ob.step()
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert oa.last_step_paths == {"direct": len(a)}


def test_p2_large_tensor_float32_equals_sgd_with_dual_in_bf16():
    """p = 2 with bf16 weights keeps an fp32 dual: equal to SGD on fp32 master weights, rounded."""
    a = [torch.nn.Parameter(torch.randn(64, 8).bfloat16())]
    b = [torch.nn.Parameter(a[0].detach().float().clone())]
    oa = LpMirrorDescent(a, lr=0.01, p=2.0, compile=False)
    ob = torch.optim.SGD(b, lr=0.01)
    for gk in grad_seq(shapes=((64, 8),), steps=5):
        g = gk[0].bfloat16()
        a[0].grad, b[0].grad = g, g.float()
        oa.step()
        ob.step()
    assert oa.state[a[0]]["dual"].dtype == torch.float32
    assert torch.equal(oa.state[a[0]]["dual"], b[0].detach())
    assert torch.equal(a[0].detach(), b[0].detach().bfloat16())


# ---------------------------------------------------------------- state, lockstep, closure, None grads


def _loss(params, x):
    w1, w2 = params
    return ((torch.tanh(x @ w1) @ w2) ** 2).mean()


@pytest.mark.parametrize("p,dtype", [(1.1, torch.float32), (1.75, torch.float64), (3.0, torch.bfloat16),
                                     (2.0, torch.float32)])
def test_lockstep_state_dict(p, dtype):
    torch.manual_seed(0)
    x = torch.randn(16, 6, dtype=dtype)
    a = [torch.nn.Parameter(torch.randn(6, 5, dtype=dtype)), torch.nn.Parameter(torch.randn(5, 2, dtype=dtype))]
    opt = LpMirrorDescent(a, lr=0.01, p=p, weight_decay=0.01, compile=False)

    def closure_for(params, o):
        def closure():
            o.zero_grad()
            loss = _loss(params, x)
            loss.backward()
            return loss
        return closure

    for _ in range(3):
        opt.step(closure_for(a, opt))
    b = [torch.nn.Parameter(t.detach().clone()) for t in a]
    opt_b = LpMirrorDescent(b, lr=0.01, p=p, weight_decay=0.01, compile=False)
    opt_b.load_state_dict(copy.deepcopy(opt.state_dict()))
    # deepcopy of the parameters together with their optimizer
    c, opt_c = copy.deepcopy((a, opt))
    for _ in range(4):
        opt.step(closure_for(a, opt))
        opt_b.step(closure_for(b, opt_b))
        opt_c.step(closure_for(c, opt_c))
    for x1, x2, x3 in zip(a, b, c):
        assert torch.equal(x1, x2)
        assert torch.equal(x1, x3)
        if p != 2.0 or dtype == torch.bfloat16:
            assert opt_b.state[x2]["dual"].dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
            assert torch.equal(opt.state[x1]["dual"], opt_b.state[x2]["dual"])
            assert opt.state[x1]["dual"].data_ptr() != opt_b.state[x2]["dual"].data_ptr()


def test_closure_returns_loss_and_uses_its_gradients():
    params = make(shapes=((3,),))
    target = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    opt = LpMirrorDescent(params, lr=0.1, p=1.5, compile=False)
    w0 = params[0].detach().numpy().copy()

    def closure():
        opt.zero_grad()
        loss = ((params[0] - target) ** 2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert math.isclose(float(loss.detach()), float(((torch.tensor(w0) - target) ** 2).sum()), rel_tol=1e-14)
    ws, _ = ref_steps([w0], [[2 * (w0 - target.numpy())]], 1.5, 0.1)
    assert_close_rel(params[0].detach().numpy(), ws[0], 1e-12)


def test_none_grads_are_skipped():
    params = make()
    before = [prm.detach().clone() for prm in params]
    params[1].grad = torch.ones_like(params[1])
    opt = LpMirrorDescent(params, lr=0.1, p=1.5, compile=False)
    opt.step()
    assert torch.equal(params[0], before[0]) and torch.equal(params[2], before[2])
    assert not torch.equal(params[1], before[1])
    assert params[0] not in opt.state and params[2] not in opt.state
    opt.zero_grad()
    opt.step()  # every grad None: a no-op


def test_sparse_gradient_moves_only_its_rows():
    # sparse gradients are taken (issue 14; the full sparse-vs-dense equality is in test_fast_loop.py)
    emb = torch.nn.Embedding(10, 3, sparse=True)
    before = emb.weight.detach().clone()
    emb(torch.tensor([1, 2, 2])).sum().backward()
    opt = LpMirrorDescent(emb.parameters(), lr=0.1, p=1.5)
    opt.step()
    assert opt.last_step_paths == {"sparse": 1}
    moved = (emb.weight.detach() != before).any(dim=1)
    assert moved.tolist() == [i in (1, 2) for i in range(10)]


# ---------------------------------------------------------------- weights changed by the user


@pytest.mark.parametrize("how", ["no_grad_inplace", "nn_init", "data_assign", "load_state_dict"])
@pytest.mark.parametrize("p", [1.1, 1.75])
def test_user_changed_weight_is_honoured(how, p):
    lin = torch.nn.Linear(6, 4, bias=False).double()
    opt = LpMirrorDescent(lin.parameters(), lr=0.05, p=p, compile=False)
    gs = grad_seq(shapes=((4, 6),), steps=3)
    for g in gs[:2]:
        lin.weight.grad = g[0].clone()
        opt.step()
    new = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    if how == "no_grad_inplace":
        with torch.no_grad():
            lin.weight.copy_(new)
    elif how == "nn_init":
        torch.manual_seed(11)
        torch.nn.init.normal_(lin.weight)
        new = lin.weight.detach().clone()
    elif how == "data_assign":
        lin.weight.data = new.clone()
    else:
        lin.load_state_dict({"weight": new})
    lin.weight.grad = gs[2][0].clone()
    opt.step()
    ws, _ = ref_steps([new.numpy()], [[gs[2][0].numpy()]], p, 0.05)
    assert_close_rel(lin.weight.detach().numpy(), ws[0], 1e-12)


def test_unchanged_weight_keeps_dual_that_rounds_to_zero():
    """fp16 weight at p = 1.1: u^10 underflows to 0, but the progress in u is kept (and not reset)."""
    w = torch.nn.Parameter(torch.zeros(3, dtype=torch.float16))
    opt = LpMirrorDescent([w], lr=1.0, p=1.1, compile=False)
    for k in range(1, 5):
        w.grad = torch.full((3,), -0.1, dtype=torch.float16)
        opt.step()
        u = opt.state[w]["dual"]
        assert u.dtype == torch.float32
        expect_u = torch.full((3,), -0.1, dtype=torch.float16).float().neg() * k
        torch.testing.assert_close(u, expect_u, rtol=1e-6, atol=0)
        assert torch.equal(w.detach(), (u.double() ** 10).half())
        if k == 1:
            assert float(w[0]) == 0.0  # 1e-10 is below fp16's smallest subnormal
    assert float(w[0]) > 0


def test_resync_dual_after_data_inplace_write():
    w = torch.nn.Parameter(torch.ones(5, dtype=torch.float64))
    opt = LpMirrorDescent([w], lr=0.1, p=1.5, compile=False)
    w.grad = torch.ones(5, dtype=torch.float64)
    opt.step()
    w.data.fill_(2.0)  # bypasses the version counter
    opt.resync_dual()
    opt.step()
    ws, _ = ref_steps([np.full(5, 2.0)], [[np.ones(5)]], 1.5, 0.1)
    assert_close_rel(w.detach().numpy(), ws[0], 1e-12)


# ---------------------------------------------------------------- half precision


@pytest.mark.parametrize("p", [1.1, 1.75, 3.0])
def test_bf16_weights_follow_fp32_reference_rounded(p):
    shapes = ((9, 4), (6,))
    w32 = [t.bfloat16().float() for t in make(shapes=shapes, dtype=torch.float32)]
    a = [torch.nn.Parameter(t.clone()) for t in w32]
    b = [torch.nn.Parameter(t.bfloat16()) for t in w32]
    oa = LpMirrorDescent(a, lr=0.03, p=p, compile=False)
    ob = LpMirrorDescent(b, lr=0.03, p=p, compile=False)
    for gk in grad_seq(shapes=shapes, steps=4):
        for x, y, g in zip(a, b, gk):
            gb = g.bfloat16()
            x.grad, y.grad = gb.float(), gb
        oa.step()
        ob.step()
    for x, y in zip(a, b):
        assert y.dtype == torch.bfloat16
        assert ob.state[y]["dual"].dtype == torch.float32
        assert torch.equal(ob.state[y]["dual"], oa.state[x]["dual"])
        assert torch.equal(y.detach(), x.detach().bfloat16())


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("kw,match", [
    ({"p": 1.0}, "p must be"), ({"p": 0.5}, "p must be"), ({"p": math.inf}, "p must be"),
    ({"p": math.nan}, "p must be"), ({"p": "a"}, "p must be"), ({"lr": -0.1}, "lr must be"),
    ({"lr": math.nan}, "lr must be"), ({"eps": 0.0}, "eps must be"), ({"eps": -1.0}, "eps must be"),
    ({"weight_decay": -1.0}, "weight_decay must be"), ({"nonfinite": "ignore"}, "nonfinite must be"),
])
def test_invalid_arguments(kw, match):
    args = {"lr": 0.1, "p": 1.5} | kw
    with pytest.raises(ValueError, match=match):
        LpMirrorDescent(make(), **args)


def test_invalid_group_argument_and_message_names_range():
    opt = LpMirrorDescent(make(shapes=((2,),)), lr=0.1, p=1.5)
    with pytest.raises(ValueError, match=r"> 1"):
        opt.add_param_group({"params": make(shapes=((3,),), seed=5), "p": 0.9})


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nonfinite_gradient_raises_naming_parameter(bad):
    lin = torch.nn.Linear(3, 2)
    opt = LpMirrorDescent(lin.named_parameters(), lr=0.1, p=1.5)
    lin.weight.grad = torch.zeros(2, 3)
    lin.bias.grad = torch.tensor([0.0, bad])
    with pytest.raises(NonFiniteGradientError, match="'bias'"):
        opt.step()
    opt2 = LpMirrorDescent(lin.parameters(), lr=0.1, p=1.5)
    with pytest.raises(NonFiniteGradientError, match=r"param_groups\[0\]\['params'\]\[1\]"):
        opt2.step()


def test_huge_but_finite_gradient_is_not_flagged():
    w = torch.nn.Parameter(torch.ones(4))
    opt = LpMirrorDescent([w], lr=1e-30, p=3.0, compile=False)
    w.grad = torch.full((4,), 3e38)  # its l_2 norm overflows float32
    opt.step()
    assert torch.isfinite(w).all()


def test_nonfinite_skip_leaves_everything_unchanged():
    params = make(dtype=torch.float32)
    opt = LpMirrorDescent(params, lr=0.1, p=1.5, nonfinite="skip", compile=False)
    for prm in params:
        prm.grad = torch.ones_like(prm)
    opt.step()
    before = [prm.detach().clone() for prm in params]
    duals = [opt.state[prm]["dual"].clone() for prm in params]
    params[2].grad[0, 0, 0] = math.nan
    opt.step()
    assert opt.skipped_steps == 1
    for prm, b, d in zip(params, before, duals):
        assert torch.equal(prm, b)
        assert torch.equal(opt.state[prm]["dual"], d)


# ---------------------------------------------------------------- paths agree


@pytest.mark.parametrize("p", [1.1, 1.75])
def test_foreach_loop_and_compiled_agree(p):
    """Compiled kernel (threshold lowered so small tensors take it), eager foreach and eager loop."""
    shapes = ((40, 30), (17,))
    outs = []
    for kw in ({"foreach": True, "compile": False}, {"foreach": False, "compile": False},
               {"compile": True, "compile_min_numel": 2}):
        params = make(shapes=shapes, dtype=torch.float32)
        opt = run_opt(params, grad_seq(shapes=shapes, steps=3), lr=0.02, p=p, weight_decay=0.01, **kw)
        outs.append(([prm.detach().clone() for prm in params], opt.last_step_paths))
    assert outs[0][1] == {"foreach": 2} and outs[1][1] == {"loop": 2}
    if outs[2][1] != {"compiled": 2}:
        from mirrorattn.optim import _kernels

        pytest.skip(f"torch.compile unavailable here: {_kernels._FAILED}")
    for other, _ in outs[1:]:
        for x, y in zip(outs[0][0], other):
            torch.testing.assert_close(x, y, rtol=2e-6, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("p,normalized", [(p, False) for p in P_VALUES] + [(1.1, True), (1.75, True)])
def test_compiled_matches_float64_reference(p, normalized):
    params = make()
    w0 = [prm.detach().numpy().copy() for prm in params]
    grads = grad_seq()
    opt = run_opt(params, grads, lr=0.02, p=p, normalized=normalized, weight_decay=0.05, compile=True,
                  compile_min_numel=2)
    if opt.last_step_paths != {"compiled": len(params)}:
        pytest.skip("torch.compile unavailable here")
    ws, us = ref_steps(w0, [[g.numpy() for g in gk] for gk in grads], p, 0.02, normalized=normalized, wd=0.05)
    for prm, w, u in zip(params, ws, us):
        assert_close_rel(prm.detach().numpy(), w, 1e-12)
        assert_close_rel(opt.state[prm]["dual"].numpy(), u, 1e-12)


def test_env_var_forces_eager(monkeypatch):
    monkeypatch.setenv("MIRRORATTN_OPTIM_EAGER", "1")
    params = make(shapes=((300, 300),), dtype=torch.float32)
    opt = run_opt(params, grad_seq(shapes=((300, 300),), steps=1), lr=0.01, p=1.1)
    assert not opt.use_compile
    assert opt.last_step_paths == {"foreach": 1}


# ---------------------------------------------------------------- registry


def test_parse_optimizer_spec():
    assert parse_optimizer_spec("lp-md:1.1") == ("lp-md", {"p": 1.1})
    assert parse_optimizer_spec(" LP-MD:p=3,normalized=true ") == ("lp-md", {"p": 3, "normalized": True})
    assert parse_optimizer_spec("sgd:0.9") == ("sgd", {"momentum": 0.9})
    assert parse_optimizer_spec("adamw") == ("adamw", {})
    assert parse_optimizer_spec("adam:betas_note=x,amsgrad=false") == ("adam", {"betas_note": "x", "amsgrad": False})
    with pytest.raises(ValueError, match="known: adam, adamw, lp-md, rmsprop, sgd"):
        parse_optimizer_spec("adagrad")
    with pytest.raises(ValueError, match="no bare value"):
        parse_optimizer_spec("adam:0.1")
    with pytest.raises(ValueError, match="key=value"):
        parse_optimizer_spec("lp-md:p=1.5,normalized")
    with pytest.raises(ValueError, match="non-empty"):
        parse_optimizer_spec("")


def test_build_optimizer_and_errors():
    opt = build_optimizer("lp-md:1.1", make(), lr=0.1, normalized=True)
    assert isinstance(opt, LpMirrorDescent)
    assert opt.param_groups[0]["p"] == 1.1 and opt.param_groups[0]["normalized"] is True
    sgd = build_optimizer("sgd:momentum=0.9", make(), lr=0.1)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.9
    with pytest.raises(ValueError, match="needs p"):
        build_optimizer("lp-md", make(), lr=0.1)
    with pytest.raises(ValueError, match="both in the spec"):
        build_optimizer("lp-md:1.1", make(), lr=0.1, p=2.0)
    with pytest.raises(ValueError, match="bad arguments for optimizer 'adam'"):
        build_optimizer("adam", make(), lr=0.1, nonsense=1)
    with pytest.raises(ValueError, match="p must be"):
        build_optimizer("lp-md:0.5", make(), lr=0.1)


def test_register_optimizer_decorator():
    @register_optimizer("test-halfsgd")
    def _half(params, lr, **kw):
        return torch.optim.SGD(params, lr=lr / 2, **kw)

    try:
        assert "test-halfsgd" in available_optimizers()
        opt = build_optimizer("TEST-halfsgd", make(), lr=0.2)
        assert opt.param_groups[0]["lr"] == 0.1
        with pytest.raises(ValueError, match="already registered"):
            register_optimizer("test-halfsgd")(_half)
        with pytest.raises(ValueError, match="without"):
            register_optimizer("a:b")
    finally:
        registry_mod._REGISTRY.pop("test-halfsgd", None)
        registry_mod._PRIMARY.pop("test-halfsgd", None)


#: spec and lr per registered optimizer for the loss-lowering test; a new optimizer needs a recipe
RECIPES = {
    "sgd": ("sgd:0.9", 0.05),
    "adam": ("adam", 0.05),
    "adamw": ("adamw", 0.05),
    "rmsprop": ("rmsprop", 0.01),
    "lp-md": ("lp-md:1.5", 0.05),
}


@pytest.mark.parametrize("name", available_optimizers())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("foreach", [True, False])
def test_every_registered_optimizer_lowers_loss(name, dtype, foreach):
    assert name in RECIPES, f"add a recipe for the registered optimizer {name!r} to RECIPES"
    spec, lr = RECIPES[name]
    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, 8, generator=g)
    w_true = torch.randn(8, 1, generator=g)
    y = a @ w_true
    model = torch.nn.Linear(8, 1).to(dtype)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    opt = build_optimizer(spec, model.parameters(), lr=lr, foreach=foreach)
    losses = []
    for _ in range(150):
        opt.zero_grad()
        loss = ((model(a.to(dtype)).float() - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0] / 20, (name, losses[0], losses[-1])


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_compiled_half_precision_matches_eager(dtype):
    shapes = ((50, 20),)
    outs = []
    for kw in ({"compile": False}, {"compile": True, "compile_min_numel": 2}):
        params = make(shapes=shapes, dtype=dtype)
        opt = run_opt(params, grad_seq(shapes=shapes, steps=3, scale=0.05), lr=0.02, p=1.1, **kw)
        assert opt.state[params[0]]["dual"].dtype == torch.float32 and params[0].dtype == dtype
        outs.append((params[0].detach().clone(), opt.state[params[0]]["dual"].clone(), opt.last_step_paths))
    if outs[1][2] != {"compiled": 1}:
        pytest.skip("torch.compile unavailable here")
    torch.testing.assert_close(outs[1][1], outs[0][1], rtol=1e-6, atol=1e-7)
    # the weights are the duals' images rounded to `dtype`: equal up to one rounding step
    torch.testing.assert_close(outs[1][0].float(), outs[0][0].float(), rtol=torch.finfo(dtype).eps, atol=1e-6)


@pytest.mark.parametrize("dtype,ulps", [(torch.float32, 4), (torch.float64, 4)])
def test_cbrt_halley_against_float64_and_exact_cubes(dtype, ulps):
    """The multiply-only cube root of the compiled ``third`` kernels, eagerly, over 60 decades."""
    from mirrorattn.optim._kernels import cbrt_halley

    gen = torch.Generator().manual_seed(0)
    lo, hi = (-30, 30) if dtype == torch.float32 else (-300, 300)
    a = 10.0 ** (torch.rand(200_000, generator=gen, dtype=torch.float64) * (hi - lo) + lo)
    a = torch.cat([a.to(dtype), torch.tensor([1.0, 8.0, 27.0, 0.125, 1e-3], dtype=dtype)])
    ref = np.cbrt(a.double().numpy())
    got = cbrt_halley(a).double().numpy()
    rel = np.abs(got - ref) / ref
    assert rel.max() <= ulps * torch.finfo(dtype).eps, rel.max()
    # the test can fail: one Halley step fewer is far off
    assert np.allclose(got[-5:], [1.0, 2.0, 3.0, 0.5, 0.1], rtol=4 * torch.finfo(dtype).eps, atol=0)


@pytest.mark.parametrize("p", [1.75, 1.6])
def test_third_kind_compiled_kernel_zero_and_sign(p):
    """Zeros, signs and tiny duals through the compiled cube-root kernel match pow."""
    from mirrorattn.mirror import exponent_kind, inverse_exponent
    from mirrorattn.optim import _kernels as K

    kind = exponent_kind(inverse_exponent(p))
    assert kind[0] == "third"
    u = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 3.0, -2.5, 1e20, -7e-12], dtype=torch.float64)
    fast = K.kernel_signed_pow(u, kind)
    n, k = kind[1], kind[2]  # e = n + k/3 exactly; pow with the float 1/(p-1) is itself ~1e-14 off
    a = np.abs(u.numpy())
    slow = torch.from_numpy(np.copysign(a ** n * np.cbrt(a) ** k, u.numpy()))
    torch.testing.assert_close(fast, slow, rtol=1e-15, atol=0)
    assert torch.equal(torch.signbit(fast[:2]), torch.tensor([False, True]))


# ------------------------------------------------------------ issue 12: zero-size params, state dicts


PATHS = [
    pytest.param({"compile": False, "foreach": True}, id="foreach"),
    pytest.param({"compile": False, "foreach": False}, id="loop"),
    pytest.param({"compile": True, "compile_min_numel": 1}, id="compiled"),
]


@pytest.mark.parametrize("p", [1.5, 2.0])  # 2.0 with float64 weights: the direct (SGD) path
@pytest.mark.parametrize("normalized", [True, False])
@pytest.mark.parametrize("kw", PATHS)
def test_zero_size_parameter_is_skipped_in_every_path(kw, normalized, p):
    empty = torch.nn.Parameter(torch.zeros(0, 4, dtype=torch.float64))
    w = make(shapes=((3, 2),))
    w0 = [t.detach().clone() for t in w]
    grads = grad_seq(shapes=((3, 2),), steps=2)
    opt = LpMirrorDescent([empty, *w], lr=0.1, p=p, normalized=normalized, weight_decay=0.01, **kw)
    for gk in grads:
        empty.grad = torch.zeros(0, 4, dtype=torch.float64)
        w[0].grad = gk[0]
        opt.step()  # the old code raised from amax() of the empty gradient in normalized mode
    ref, _ = ref_steps([t.numpy() for t in w0], [[g.numpy() for g in gk] for gk in grads], p, 0.1,
                       normalized=normalized, wd=0.01)
    assert_close_rel(w[0].detach().numpy(), ref[0], 1e-12)
    assert empty.shape == (0, 4)


def test_zero_size_bf16_parameter_is_skipped():
    empty = torch.nn.Parameter(torch.zeros(5, 0, dtype=torch.bfloat16))
    opt = LpMirrorDescent([empty], lr=0.1, p=1.75, normalized=True)
    empty.grad = torch.zeros(5, 0, dtype=torch.bfloat16)
    opt.step()
    assert empty.shape == (5, 0)


@pytest.mark.parametrize("other", ["sgd", "sgd_momentum", "adam", "adamw"])
def test_load_state_dict_of_another_optimizer_is_refused(other):
    w = torch.nn.Parameter(torch.ones(3))
    make_other = {"sgd": lambda: torch.optim.SGD([w], lr=0.1),
                  "sgd_momentum": lambda: torch.optim.SGD([w], lr=0.1, momentum=0.9),
                  "adam": lambda: torch.optim.Adam([w]), "adamw": lambda: torch.optim.AdamW([w])}[other]()
    w.grad = torch.ones(3)
    make_other.step()
    opt = LpMirrorDescent([w], lr=0.1, p=1.5)
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=r"^this state dict is not an LpMirrorDescent state \(it lacks 'p'\)"):
        opt.load_state_dict(make_other.state_dict())
    assert opt.state_dict() == before  # nothing was loaded
    w.grad = torch.ones(3)
    opt.step()  # and the optimizer still works (the old code raised KeyError 'p' here)


def test_load_state_dict_checks_groups_state_keys_and_dual_shapes():
    w = torch.nn.Parameter(torch.ones(3))
    opt = LpMirrorDescent([w], lr=0.1, p=1.5)
    w.grad = torch.ones(3)
    opt.step()
    good = opt.state_dict()

    def variant(edit):
        sd = copy.deepcopy(good)
        edit(sd)
        return sd

    other = LpMirrorDescent([torch.nn.Parameter(torch.ones(4))], lr=0.1, p=1.5)
    with pytest.raises(ValueError, match=r"dual variable of parameter 0 is shape \(3,\) .* parameter has shape \(4,\)"):
        other.load_state_dict(good)
    with pytest.raises(ValueError, match=r"it lacks 'normalized'"):
        opt.load_state_dict(variant(lambda sd: sd["param_groups"][0].pop("normalized")))
    with pytest.raises(ValueError, match=r"param_groups\[0\]: p must be"):
        opt.load_state_dict(variant(lambda sd: sd["param_groups"][0].update(p=0.5)))
    with pytest.raises(ValueError, match=r"holds 'exp_avg', which LpMirrorDescent does not keep"):
        opt.load_state_dict(variant(lambda sd: sd["state"][0].update(exp_avg=torch.zeros(3))))
    with pytest.raises(ValueError, match=r"groups hold \[2\] parameters, this optimizer's \[1\]"):
        opt.load_state_dict(variant(lambda sd: sd["param_groups"][0]["params"].append(1)))
    with pytest.raises(ValueError, match=r"needs 'state' and 'param_groups'"):
        opt.load_state_dict({"state": {}})
    opt.load_state_dict(good)  # a good one still loads


def test_dual_that_overflows_is_a_clear_error_not_inf_weights():
    w = torch.nn.Parameter(torch.full((3,), 3.0))
    opt = LpMirrorDescent([w], lr=0.1, p=200.0)
    w.grad = torch.ones(3)
    with pytest.raises(ValueError, match=r"\|w\| reaches 3, but \|w\|\^\(p-1\) overflows torch.float32 above "
                                         r"\|w\| = 1.56"):
        opt.step()
    assert torch.equal(w.detach(), torch.full((3,), 3.0))
    nan_w = torch.nn.Parameter(torch.tensor([1.0, math.nan]))
    opt = LpMirrorDescent([nan_w], lr=0.1, p=1.5)
    nan_w.grad = torch.zeros(2)
    with pytest.raises(ValueError, match="the weight holds NaN or inf"):
        opt.step()


@pytest.mark.parametrize("flag", ["normalized", "maximize"])
def test_flags_must_be_booleans(flag):
    with pytest.raises(ValueError, match=rf"{flag} must be True or False, got 'false'"):
        LpMirrorDescent(make(), lr=0.1, p=1.5, **{flag: "false"})  # bool("false") is True
    with pytest.raises(ValueError, match=rf"{flag} must be True or False"):
        LpMirrorDescent(make(), lr=0.1, p=1.5).add_param_group({"params": make(seed=3), flag: "yes"})
    assert LpMirrorDescent(make(), lr=0.1, p=1.5, **{flag: 1}).defaults[flag] is True


@pytest.mark.parametrize("p", [1.5, 2.0])
def test_eps_too_small_for_a_zero_gradient_is_refused(p):
    # the old code accepted eps = 1e-40 and turned float32 weights NaN on a zero gradient (0 * lr / 1e-40)
    with pytest.raises(ValueError, match=r"eps = 1e-40 is too small for normalized=True .* overflows torch.float32"):
        LpMirrorDescent(make(dtype=torch.float32), lr=0.1, p=p, normalized=True, eps=1e-40)
    with pytest.raises(ValueError, match=r"eps = 1e-40 is too small"):  # bf16 weights: float32 duals
        LpMirrorDescent(make(dtype=torch.bfloat16), lr=0.1, p=p, normalized=True, eps=1e-40)
    with pytest.raises(ValueError, match=r"eps = 1e-320 is too small .* overflows torch.float64"):
        LpMirrorDescent(make(), lr=0.1, p=p, normalized=True, eps=1e-320)
    opt = LpMirrorDescent(make(), lr=0.1, p=p, normalized=True, eps=1e-300)  # fine in float64
    with pytest.raises(ValueError, match=r"eps = 1e-40 is too small"):
        opt.add_param_group({"params": make(dtype=torch.float32, seed=4), "eps": 1e-40})
    assert len(opt.param_groups) == 1  # the refused group is not kept
    w = torch.nn.Parameter(torch.ones(3))
    LpMirrorDescent([w], lr=0.1, p=p, eps=1e-40)  # without normalisation eps is not used
    opt = LpMirrorDescent([w], lr=0.1, p=p, normalized=True, eps=1e-30, compile=False)
    w.grad = torch.zeros(3)
    opt.step()
    assert torch.equal(w.detach(), torch.ones(3))
