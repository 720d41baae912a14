"""An interrupted run resumes bit for bit: LpMirrorDescent restored from its state dict continues with the very
weights of the uninterrupted run - whichever path (general, lean NumPy step) each of the two takes at each step.

The first step after a restore is a general step (the lean step's plan is built by it), where the uninterrupted
run takes a lean step: the two paths must round alike.
"""

from __future__ import annotations

import copy

import pytest
import torch

from mirrorattn.optim import LpMirrorDescent

STEPS, CUT = 6, 3


#: tensors for the lean step (small), below the compile threshold but vectorised by torch (medium), compiled (big)
SHAPES = {"small": [(16, 16), (16,), (3, 5)], "medium": [(100, 120), (37, 11)], "big": [(300, 400), (400,)]}


def _params(dtype: torch.dtype, size: str) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(0)
    shapes = SHAPES[size]
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype)) for s in shapes]


def _grads(params: list[torch.nn.Parameter]) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [[torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params] for _ in range(STEPS)]


def _run(params, opt, grads, steps) -> None:
    for k in steps:
        for p, g in zip(params, grads[k]):
            p.grad = g.clone()
        opt.step()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("p", [1.1, 1.75, 3.0])
@pytest.mark.parametrize("size", sorted(SHAPES))
def test_resume_from_state_dict_is_bit_exact(p: float, normalized: bool, dtype: torch.dtype, size: str) -> None:
    kw = dict(lr=0.05, p=p, normalized=normalized)
    full = _params(dtype, size)
    grads = _grads(full)
    opt = LpMirrorDescent(full, **kw)
    _run(full, opt, grads, range(STEPS))

    first = _params(dtype, size)
    opt1 = LpMirrorDescent(first, **kw)
    _run(first, opt1, grads, range(CUT))
    saved = copy.deepcopy(opt1.state_dict())
    resumed = [torch.nn.Parameter(w.detach().clone()) for w in first]
    opt2 = LpMirrorDescent(resumed, **kw)
    opt2.load_state_dict(saved)
    _run(resumed, opt2, grads, range(CUT, STEPS))
    for a, b in zip(full, resumed):
        assert torch.equal(a, b), float((a - b).abs().max())
