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
    for prm, g in zip(params, grad_seq(steps=1, seed=3)[0]):
        prm.grad = g
    opt.step()
    assert opt.last_step_paths == {"foreach": 3}
    opt.step()
    assert opt.last_step_paths == {"numpy": 3}
    big = [torch.nn.Parameter(torch.randn(300, 300))]
    ob = run_opt(big, [[torch.randn(300, 300)]] * 3, lr=0.1, p=1.1, compile=False, compile_min_numel=1 << 16)
    assert ob.last_step_paths == {"foreach": 1}
    assert np.isfinite(big[0].detach().numpy()).all()
