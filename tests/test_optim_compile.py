"""The compiled multi-tensor kernels of LpMirrorDescent: chunks, normalised coefficients, no recompilation.

References: the float64 NumPy update of ``test_optim.ref_steps`` (paper.md section 2, raw exponents) and the
eager foreach path; compile counts from dynamo's own counters.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from mirrorattn.optim import LpMirrorDescent, _kernels
from test_optim import assert_close_rel, grad_seq, make, ref_steps

#: 3 tensors: chunks of 2 and 1 (the shapes of test_optim, so that its compiled kernels are reused: each new
#: kernel costs seconds of compilation)
SHAPES3 = ((7, 5), (13,), (3, 4, 2))


def _unique_graphs() -> int:
    return int(counters["stats"]["unique_graphs"])


def _skip_without_compile(opt: LpMirrorDescent, n: int) -> None:
    if opt.last_step_paths != {"compiled": n}:
        pytest.skip(f"torch.compile unavailable here: {_kernels._FAILED}")


@pytest.mark.parametrize("normalized,wd,maximize", [(True, 0.0, True)])
def test_chunks_match_the_float64_reference(normalized, wd, maximize):
    """Chunks 2 + 1, normalised without weight decay (max|g| from the non-finite check) and maximising: each
    tensor follows the reference with its own dual norm (test_optim covers weight decay)."""
    p, lr = 1.75, 0.03
    params = make(shapes=SHAPES3)
    w0 = [prm.detach().numpy().copy() for prm in params]
    grads = grad_seq(shapes=SHAPES3, steps=3)
    opt = LpMirrorDescent(params, lr=lr, p=p, normalized=normalized, weight_decay=wd, maximize=maximize,
                          compile=True, compile_min_numel=2)
    for gk in grads:
        for prm, g in zip(params, gk):
            prm.grad = g.clone()
        opt.step()
    _skip_without_compile(opt, len(params))
    ws, us = ref_steps(w0, [[g.numpy() for g in gk] for gk in grads], p, lr, normalized=normalized, wd=wd,
                       maximize=maximize)
    for prm, w, u in zip(params, ws, us):
        assert_close_rel(prm.detach().numpy(), w, 1e-12)
        assert_close_rel(opt.state[prm]["dual"].numpy(), u, 1e-12)


def test_chunks_equal_the_eager_path_in_float32():
    """Same arithmetic as the eager foreach path to float32 rounding (normalised; test_optim covers plain)."""
    for normalized in (True,):
        outs = []
        for kw in ({"compile": False}, {"compile": True, "compile_min_numel": 2}):
            params = make(shapes=SHAPES3, dtype=torch.float32)
            opt = LpMirrorDescent(params, lr=0.02, p=1.1, normalized=normalized, weight_decay=0.01, **kw)
            for gk in grad_seq(shapes=SHAPES3, steps=3):
                for prm, g in zip(params, gk):
                    prm.grad = g.float()
                opt.step()
            outs.append([prm.detach().clone() for prm in params])
        _skip_without_compile(opt, len(SHAPES3))
        for x, y in zip(*outs):
            torch.testing.assert_close(x, y, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("normalized,tensor_lr", [(False, False), (True, True)])
def test_a_new_step_size_every_step_compiles_nothing_new(normalized, tensor_lr):
    """10 steps with 10 step sizes (a scheduler, or a tensor lr written in place): after the first step no graph
    is compiled and none breaks; the weights follow the reference step by step."""
    shapes, p = ((40, 30), (17,)), 1.1
    params = make(shapes=shapes)
    w = [prm.detach().numpy().copy() for prm in params]
    lr0 = torch.tensor(0.02, dtype=torch.float64) if tensor_lr else 0.02
    opt = LpMirrorDescent(params, lr=lr0, p=p, normalized=normalized, compile=True, compile_min_numel=2)
    sched = None if tensor_lr else torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 / (1.0 + 0.3 * k))
    lrs, before = [], None
    for k, gk in enumerate(grad_seq(shapes=shapes, steps=10)):
        for prm, g in zip(params, gk):
            prm.grad = g.clone()
        if tensor_lr:
            opt.param_groups[0]["lr"].fill_(0.02 / (1.0 + 0.3 * k))
        lrs.append(float(opt.param_groups[0]["lr"]))
        opt.step()
        if sched is not None:
            sched.step()
        if k == 0:
            _skip_without_compile(opt, len(params))
            before = (_unique_graphs(), sum(counters["graph_break"].values()))
        w, _ = ref_steps(w, [[g.numpy() for g in gk]], p, lrs[-1], normalized=normalized)
    assert (_unique_graphs(), sum(counters["graph_break"].values())) == before
    assert len(set(lrs)) == 10
    for prm, ref in zip(params, w):
        assert_close_rel(prm.detach().numpy(), ref, 1e-10)  # the reference restarts u from w each step


def test_another_size_pattern_is_not_a_recompilation():
    """A second model whose equal sizes fall elsewhere reuses the compiled chunk kernels (sizes are not
    duck-shaped; the parameters' ranks are part of the guards, so the models here share them)."""
    def run(shapes):
        params = make(shapes=shapes, dtype=torch.float32)
        opt = LpMirrorDescent(params, lr=0.01, p=1.1, compile=True, compile_min_numel=2)
        for prm in params:
            prm.grad = torch.ones_like(prm)
        opt.step()
        return opt

    opt = run(((6, 6), (6, 6)))
    _skip_without_compile(opt, 2)
    before = _unique_graphs()
    run(((5, 7), (9, 2)))
    run(((2, 9), (4, 4)))
    assert _unique_graphs() == before


def test_gradient_maxima_are_not_reused_across_steps():
    """The check's max|g| is valid for its own step only: a new gradient object gets its own maximum."""
    params = make(shapes=((50, 40),))
    opt = LpMirrorDescent(params, lr=0.1, p=1.75, normalized=True, compile=True, compile_min_numel=2)
    for scale in (1.0, 1e-3, 1e3):
        params[0].grad = scale * torch.ones(50, 40, dtype=torch.float64)
        w0 = params[0].detach().numpy().copy()
        opt.step()
        assert opt._gmax == {}
        ws, _ = ref_steps([w0], [[params[0].grad.numpy()]], 1.75, 0.1, normalized=True)
        assert_close_rel(params[0].detach().numpy(), ws[0], 1e-10)
    assert np.isfinite(params[0].detach().numpy()).all()


@pytest.mark.parametrize("p", [1.75, 3.0])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_compiled_gradient_maxima_are_exact_and_catch_non_finite_gradients(bad, p):
    """The normalised step's max|g| (compiled, one pass) equals the eager maximum bit for bit and is the non-finite
    check of its tensors: a NaN or inf in a large gradient raises naming it, or is skipped with nothing changed -
    for p = 1.75 (the check computes max|g|) and p = 3 (it computes sum |g|^(3/2), the dual norm's sum)."""
    from mirrorattn.optim.lpmd import NonFiniteGradientError

    gens = grad_seq(shapes=SHAPES3, steps=1)[0]
    gs = [gens[0].float(), gens[1].float(), gens[2].float()]
    got = _kernels.compiled_abs_max([gs[0], gs[1]])
    if got is None:
        pytest.skip(f"torch.compile unavailable here: {_kernels._FAILED}")
    assert torch.equal(got, torch.stack([gs[0].abs().max(), gs[1].abs().max()]))
    worse = gs[1].clone()
    worse[3] = bad
    assert torch.equal(_kernels.compiled_abs_max([gs[0], worse]).isnan(), torch.tensor([False, bad != bad]))
    assert _kernels.compiled_abs_max([worse])[0].isinf() == (bad == bad)
    for mode in ("raise", "skip"):
        params = make(shapes=SHAPES3)
        opt = LpMirrorDescent(params, lr=0.1, p=p, normalized=True, compile=True, compile_min_numel=2,
                              nonfinite=mode)
        for prm, g in zip(params, gens):
            prm.grad = g.clone()
        opt.step()
        _skip_without_compile(opt, len(params))
        before = [(prm.detach().clone(), opt.state[prm]["dual"].clone()) for prm in params]
        params[1].grad[5] = bad
        if mode == "raise":
            with pytest.raises(NonFiniteGradientError, match=r"\['params'\]\[1\]"):
                opt.step()
        else:
            opt.step()
            assert opt.skipped_steps == 1
        for prm, (w, u) in zip(params, before):
            assert torch.equal(prm.detach(), w) and torch.equal(opt.state[prm]["dual"], u)
