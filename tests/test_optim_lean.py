"""The lean step of LpMirrorDescent (small CPU tensors in NumPy, ``optim._lean``) against the float64 reference,
the eager torch path, and every case where it must hand over to the general path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mirrorattn.optim import LpMirrorDescent, NonFiniteGradientError
from test_optim import assert_close_rel, grad_seq, make, ref_steps, run_opt


@pytest.mark.parametrize("p", [1.1, 1.75, 3.0, 1.4, 2.5])
@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("variant", ["plain", "maximize_wd"])
def test_lean_matches_float64_reference(p, normalized, variant):
    wd = 0.0 if variant == "plain" else 0.05
    maximize = variant == "maximize_wd"
    lr = 0.05 if normalized else 0.02
    params = make()
    w0 = [prm.detach().numpy().copy() for prm in params]
    grads = grad_seq(steps=6)
    opt = run_opt(params, grads, lr=lr, p=p, normalized=normalized, weight_decay=wd, maximize=maximize)
    assert opt.last_step_paths == {"numpy": len(params)}  # lean after the first step
    ws, us = ref_steps(w0, [[g.numpy() for g in gk] for gk in grads], p, lr, normalized=normalized, wd=wd,
                       maximize=maximize)
    for prm, w, u in zip(params, ws, us):
        assert_close_rel(prm.detach().numpy(), w, 1e-12)
        assert_close_rel(opt.state[prm]["dual"].numpy(), u, 1e-12)
        assert opt.state[prm]["step"] == len(grads)


@pytest.mark.parametrize("p,wd,maximize", [(1.1, 0.0, False), (1.5, 0.1, True), (1.25, 0.0, True)])
def test_lean_plain_float32_equals_the_eager_torch_path_bit_for_bit(p, wd, maximize):
    """Plain mode: u <- u - lr d is the eager path's torch op and the power its multiplications, in NumPy (whole
    exponents; not p = 3: torch's float32 sqrt is not correctly rounded on CPUs, NumPy's is)."""
    a, b = make(dtype=torch.float32), make(dtype=torch.float32)
    oa = run_opt(a, grad_seq(steps=5), lr=0.03, p=p, weight_decay=wd, maximize=maximize)
    ob = run_opt(b, grad_seq(steps=5), lr=0.03, p=p, weight_decay=wd, maximize=maximize, foreach=True)
    assert oa.last_step_paths == {"numpy": 3} and ob.last_step_paths == {"foreach": 3}
    for x, y in zip(a, b):
        assert torch.equal(x, y) and torch.equal(oa.state[x]["dual"], ob.state[y]["dual"])


def test_lean_hands_over_to_the_general_path():
    """A written weight (resynced), a new p, a tensor lr, a missing gradient, hooks: each step stays right."""
    (w,) = make(shapes=((6, 4),))
    opt = LpMirrorDescent([w], lr=0.1, p=1.75)
    for g in grad_seq(shapes=((6, 4),), steps=2):
        w.grad = g[0]
        opt.step()
    assert opt.last_step_paths == {"numpy": 1}
    with torch.no_grad():
        w.mul_(0.5)  # written: the general path compares it with its dual and resyncs
    w0 = w.detach().numpy().copy()
    gs = grad_seq(shapes=((6, 4),), steps=3, seed=5)
    w.grad = gs[0][0]
    opt.step()
    assert opt.last_step_paths == {"foreach": 1}
    opt.param_groups[0]["lr"] = torch.tensor(0.05, dtype=torch.float64)  # a scheduler's tensor lr: read every step
    for g in gs[1:]:
        w.grad = g[0]
        opt.step()
        assert opt.last_step_paths == {"numpy": 1}
    ws, _ = ref_steps([w0], [[gs[0][0].numpy()]], 1.75, 0.1)
    ws, _ = ref_steps(ws, [[g[0].numpy()] for g in gs[1:]], 1.75, 0.05)
    assert_close_rel(w.detach().numpy(), ws[0], 1e-12)
    calls = []
    handle = opt.register_step_pre_hook(lambda *args: calls.append(1))
    opt.step()
    assert calls == [1]  # hooks run (through torch.optim's wrapper)
    handle.remove()
    w.grad = None
    opt.step()
    assert opt.last_step_paths == {}
    opt.param_groups[0]["p"] = 3.0  # a new p: the general path rebuilds the dual
    w.grad = gs[0][0]
    opt.step()
    assert opt.last_step_paths == {"foreach": 1} and opt.state[w]["p"] == 3.0


@pytest.mark.parametrize("mode", ["raise", "skip"])
def test_lean_nonfinite_gradient_raises_or_skips_with_nothing_changed(mode):
    params = make(dtype=torch.float32)
    opt = run_opt(params, grad_seq(steps=2), lr=0.1, p=1.1, nonfinite=mode)
    assert opt.last_step_paths == {"numpy": 3}
    before = [prm.detach().clone() for prm in params]
    duals = [opt.state[prm]["dual"].clone() for prm in params]
    params[2].grad = params[2].grad.clone()
    params[2].grad[0, 0, 0] = math.inf
    if mode == "raise":
        with pytest.raises(NonFiniteGradientError, match="NaN or inf"):
            opt.step()
    else:
        opt.step()
        assert opt.skipped_steps == 1
    for prm, b, d in zip(params, before, duals):
        assert torch.equal(prm, b) and torch.equal(opt.state[prm]["dual"], d)


def test_lean_state_dict_round_trip_and_large_tensors_stay_general():
    params = make()
    opt = run_opt(params, grad_seq(steps=2), lr=0.1, p=1.1, normalized=True)
    assert opt.last_step_paths == {"numpy": 3}
    opt.load_state_dict(opt.state_dict())  # the duals are copied: the plan must not write the old ones
    assert opt._lean_plan is None
    for prm, g in zip(params, grad_seq(steps=1, seed=3)[0]):
        prm.grad = g
    opt.step()  # a general step (normalised small tensors: in NumPy, as the lean step; it plans again)
    assert opt.last_step_paths == {"numpy": 3} and opt._lean_plan is not None
    opt.step()
    assert opt.last_step_paths == {"numpy": 3}
    big = [torch.nn.Parameter(torch.randn(300, 300))]
    ob = run_opt(big, [[torch.randn(300, 300)]] * 3, lr=0.1, p=1.1, compile=False, compile_min_numel=1 << 16)
    assert ob.last_step_paths == {"foreach": 1}
    assert np.isfinite(big[0].detach().numpy()).all()


# ---------------------------------------------------------------- sparse rows and the flat bundle


def _embedding_run(sparse, *, steps=4, dtype=torch.float64, coalesce=True, **kw):
    """An embedding (40 rows; batches touch rows 0..19 only, with repeats) and a linear layer (weight and bias: a
    flat bundle in plain mode) trained together by one LpMirrorDescent; returns (tensors, optimizer, paths)."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(40, 6, sparse=sparse).to(dtype)
    lin = torch.nn.Linear(6, 3).to(dtype)
    with torch.no_grad():
        emb.weight.mul_(0.5)
    opt = LpMirrorDescent([emb.weight, lin.weight, lin.bias], **kw)
    gen, paths = torch.Generator().manual_seed(1), []
    for _ in range(steps):
        ids = torch.randint(0, 20, (8, 5), generator=gen)
        up = torch.randn(8, 5, 3, generator=gen, dtype=dtype)
        opt.zero_grad(set_to_none=True)
        (lin(emb(ids)) * up).sum().backward()
        if sparse and coalesce:
            from mirrorattn.optim.lpmd import coalesce_rows
            emb.weight.grad = coalesce_rows(emb.weight.grad)
        opt.step()
        paths.append(opt.last_step_paths)
    return [t.detach().clone() for t in (emb.weight, lin.weight, lin.bias)], opt, paths


@pytest.mark.parametrize("p,maximize,dtype", [(1.1, False, torch.float64), (1.1, True, torch.float32),
                                              (1.25, True, torch.float64), (1.5, False, torch.float32)])
def test_lean_sparse_rows_equal_the_general_sparse_path_bit_for_bit(p, maximize, dtype):
    """The lean step's rows: the general path's sparse step (foreach=True: torch ops) bit for bit for whole
    exponents - the same u-update op, the power's multiplications in NumPy (torch's vectorised square root is not
    correctly rounded, NumPy's is: p = 3 is compared with the dense step below); duplicates coalesced by the lean step
    itself equal those coalesced beforehand; the dense tensors beside it: the eager torch path bit for bit."""
    kw = dict(lr=0.01, p=p, maximize=maximize, dtype=dtype)
    lean, opt, paths = _embedding_run(True, **kw)
    assert paths[1:] == [{"numpy": 2, "sparse": 1}] * 3
    general, _, gpaths = _embedding_run(True, foreach=True, **kw)
    assert gpaths[-1] == {"sparse": 1, "foreach": 2}
    raw, _, _ = _embedding_run(True, coalesce=False, **kw)
    for a, b, c in zip(lean, general, raw):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert opt.state[opt.param_groups[0]["params"][0]]["step"] == 4


@pytest.mark.parametrize("p", [1.1, 1.75, 3.0])
def test_lean_sparse_rows_equal_the_dense_step_and_leave_other_rows_untouched(p):
    """Sparse rows against the dense gradient's step (float64, a few rounding steps apart) and the float64
    reference; rows outside every batch keep their initial weights bit for bit (the dense step rewrites them)."""
    torch.manual_seed(0)
    w0 = torch.nn.Embedding(40, 6).to(torch.float64).weight.detach() * 0.5
    sparse, _, paths = _embedding_run(True, lr=0.05, p=p)
    dense, _, dpaths = _embedding_run(False, lr=0.05, p=p)
    assert paths[-1] == {"numpy": 2, "sparse": 1} and dpaths[-1] == {"numpy": 3}
    for a, b in zip(sparse, dense):
        assert_close_rel(a.numpy(), b.numpy(), 1e-13)
    assert torch.equal(sparse[0][20:], w0[20:])


@pytest.mark.parametrize("kw", [{"weight_decay": 0.1}, {"normalized": True}])
def test_lean_leaves_a_sparse_gradient_with_weight_decay_or_normalisation_to_the_general_path(kw):
    """Weight decay and normalisation move every row: the general path makes the gradient dense, every step."""
    sparse, _, paths = _embedding_run(True, lr=0.05, p=1.5, **kw)
    dense, _, _ = _embedding_run(False, lr=0.05, p=1.5, **kw)
    # the general path: foreach, and with normalisation its NumPy route for the dense small tensors
    assert all("sparse" not in ps and set(ps) <= {"foreach", "numpy"} and sum(ps.values()) == 3 for ps in paths)
    assert all(ps.get("foreach") == (1 if kw.get("normalized") else 3) for ps in paths)
    for a, b in zip(sparse, dense):
        assert_close_rel(a.numpy(), b.numpy(), 1e-13)


def test_lean_flat_bundle_keeps_the_state_dict_and_lockstep():
    """Plain mode steps a group's dense tensors as one flat array (their duals views of one buffer): the state
    dict round-trips, a fresh optimizer loaded from it steps in lockstep, and a written dual is honoured."""
    a, b = make(), make()
    grads = grad_seq(steps=6)
    oa = run_opt(a, grads[:3], lr=0.05, p=1.1, maximize=True, weight_decay=0.02)
    assert oa.last_step_paths == {"numpy": 3}
    ob = run_opt(b, grads[:1], lr=0.05, p=1.1, maximize=True, weight_decay=0.02)
    with torch.no_grad():
        for x, y in zip(b, a):
            x.copy_(y)
    ob.load_state_dict(oa.state_dict())
    for gk in grads[3:]:
        for opt, params in ((oa, a), (ob, b)):
            for prm, g in zip(params, gk):
                prm.grad = g.clone()
            opt.step()
    assert ob.last_step_paths == {"numpy": 3}
    for x, y in zip(a, b):
        assert torch.equal(x, y) and torch.equal(oa.state[x]["dual"], ob.state[y]["dual"])
    ws, us = ref_steps([prm.detach().numpy().copy() for prm in make()], [[g.numpy() for g in gk] for gk in grads],
                       1.1, 0.05, wd=0.02, maximize=True)
    for prm, w in zip(a, ws):
        assert_close_rel(prm.detach().numpy(), w, 1e-12)
    oa.state[a[1]]["dual"] = oa.state[a[1]]["dual"].clone()  # replaced: the plan no longer holds
    for prm, g in zip(a, grads[0]):
        prm.grad = g.clone()
    oa.step()
    assert oa.last_step_paths == {"foreach": 3}


def test_lean_mixed_dtypes_in_one_plain_group():
    """float32 and float64 tensors in one plain group: each stepped on its own (no flat bundle), as the eager path."""
    a = [make(dtype=torch.float32)[0], make()[1], make(dtype=torch.float32)[2]]
    b = [t.detach().clone().requires_grad_() for t in a]
    oa = run_opt(a, grad_seq(steps=4), lr=0.03, p=1.1)
    run_opt(b, grad_seq(steps=4), lr=0.03, p=1.1, foreach=True)
    assert oa.last_step_paths == {"numpy": 3} and oa._lean_plan[0].flat is None
    for x, y in zip(a, b):
        assert torch.equal(x, y)
