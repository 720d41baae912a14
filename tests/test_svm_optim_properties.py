"""Property-based tests (hypothesis) of two user-facing inputs (issue 12):

1. the ``svm`` command's NPZ file: any set of arrays (random keys, shapes, dtypes - NaN/inf, complex,
   object, strings, empty, mismatched shapes, alpha out of range) is either solved or refused with one
   of the project's own errors (an :class:`~mirrorattn.svm.SVMError`) in one line - never another
   exception. Problems are tiny (n, T <= 4, d <= 3), so every solve takes milliseconds;
2. the hyper-parameters of :class:`~mirrorattn.optim.LpMirrorDescent` (lr, p, weight_decay, eps,
   normalized, maximize, foreach, nonfinite; parameter shapes including zero-size ones; float16,
   bfloat16, float32, float64): construction either raises ``ValueError`` with a one-line message, or
   a step works and leaves finite weights for finite weights and gradients.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirrorattn.optim import LpMirrorDescent
from mirrorattn.svm import SVMError
from mirrorattn.svm.cli import run

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------------------ 1. the svm NPZ input

_SPECIAL = [math.nan, math.inf, -math.inf, 0.0, 1e200, -1e-300]
_DTYPES = ["float64", "float32", "int64", "int8", "uint8", "bool", "complex128", "object", "str"]


@st.composite
def _array(draw: st.DrawFn, shape: tuple[int, ...], index_max: int | None = None) -> np.ndarray:
    """An array of ``shape``: mostly float64 (int64 for token indices), else any dtype of :data:`_DTYPES`;
    floats mostly in [-3, 3], sometimes NaN/inf/huge."""
    usual = "int64" if index_max is not None else "float64"
    dtype = usual if draw(st.integers(0, 99)) < 75 else draw(st.sampled_from(_DTYPES))
    size = int(np.prod(shape, dtype=np.int64))
    if index_max is not None and dtype in ("int64", "int8", "uint8"):  # token indices, sometimes out of range
        low = -1 if draw(st.integers(0, 99)) >= 90 else 0
        vals = draw(st.lists(st.integers(low, max(index_max - 1, 0) if low == 0 else index_max),
                             min_size=size, max_size=size))
        return np.asarray(vals, dtype=np.int64).astype(dtype if dtype != "uint8" else "int64").reshape(shape)
    special = draw(st.integers(0, 99)) >= 75  # (hypothesis draws small integers often: 0 is the usual case)
    floats = st.one_of(st.floats(-3, 3), st.sampled_from(_SPECIAL)) if special else st.floats(-3, 3)
    vals = np.asarray(draw(st.lists(floats, min_size=size, max_size=size)), dtype=np.float64).reshape(shape)
    if dtype == "complex128":
        return vals + 1j * draw(st.sampled_from([0.0, 0.5]))
    if dtype == "object":
        return vals.astype(object)
    if dtype == "str":
        return vals.astype(str)
    if dtype == "bool":
        return vals > 0
    if dtype.startswith(("int", "uint")):
        return np.nan_to_num(vals, posinf=7, neginf=-7).clip(-100, 100).astype(dtype)
    with np.errstate(over="ignore"):  # 1e200 as float32 is inf: fine, one more non-finite value
        return vals.astype(dtype)


@st.composite
def _npz_arrays(draw: st.DrawFn) -> dict[str, np.ndarray]:
    """Arrays for an NPZ file: each key present or not, each of the right shape or of a random one."""
    n, T, d = draw(st.integers(0, 4)), draw(st.integers(0, 4)), draw(st.integers(0, 3))
    if draw(st.integers(0, 99)) < 80:  # mostly non-empty, so that many examples reach the solver
        n, T, d = max(n, 1), max(T, 2), max(d, 1)
    right = {"X": (n, T, d), "z": (n, d), "alpha": (n,), "mask": (n, T), "y": (n,), "v": (d,), "extra": (2,)}
    arrays = {}
    for key, shape in right.items():
        present = draw(st.integers(0, 99)) < (90 if key in ("X", "z", "alpha") else 35)
        if not present:
            continue
        if draw(st.integers(0, 99)) >= 90:  # a mismatched shape
            shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=3)))
        arrays[key] = draw(_array(shape, index_max=T if key == "alpha" else None))
    return arrays


@PROPERTY
@given(arrays=_npz_arrays(), p=st.sampled_from([1.75, 2.0, 3.0, None, 2049.0, 0.5]), nuclear=st.booleans())
def test_svm_npz_input_solves_or_raises_a_project_error(arrays, p, nuclear):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "arrays.npz"
        np.savez(path, **arrays)  # object arrays are pickled into the file: the command must refuse them
        args = argparse.Namespace(data=path, p=p, nuclear=nuclear, out=None, save_w=None, active_set="auto",
                                  tol=1e-8, solver="clarabel")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # solver accuracy and numpy overflow warnings are allowed
                assert run(args) == 0
        except SVMError as exc:
            message = str(exc)
            assert message and "\n" not in message, message


# ---------------------------------------------------------------- 2. the optimizer's hyper-parameters

def _mostly(valid: st.SearchStrategy, invalid: st.SearchStrategy) -> st.SearchStrategy:
    """``valid`` 85 % of the time (so that a good share of examples construct and step), else ``invalid``."""
    return st.integers(0, 99).flatmap(lambda k: valid if k < 85 else invalid)


_BAD_NUMBERS = st.sampled_from([-1.0, math.nan, math.inf, -math.inf, "0.1", None, True])
#: valid values are drawn from ranges in which a step cannot overflow (|w|, |g| <= 3, p <= 10, lr <= 0.1)
_LR = _mostly(st.floats(0.0, 0.1), _BAD_NUMBERS)
_P = _mostly(st.one_of(st.floats(1.1, 10.0), st.just(2.0)),
             st.sampled_from([1.0, 0.5, -2.0, math.nan, math.inf, "a", None]))
_WD = _mostly(st.floats(0.0, 1.0), _BAD_NUMBERS)
_EPS = _mostly(st.floats(1e-30, 1.0), st.one_of(st.sampled_from([0.0, 1e-40]), _BAD_NUMBERS))
_FLAG = _mostly(st.booleans(), st.sampled_from(["yes", "false", 2, None]))
_NONFINITE = _mostly(st.sampled_from(["raise", "skip"]), st.just("bogus"))
_SHAPES = st.lists(st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple), min_size=1, max_size=3)
_DTYPE = st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64])


@PROPERTY
@given(lr=_LR, p=_P, wd=_WD, eps=_EPS, normalized=_FLAG, maximize=_FLAG, foreach=st.sampled_from([None, True, False]),
       nonfinite=_NONFINITE, shapes=_SHAPES, dtype=_DTYPE,
       seed=st.integers(0, 2**16), zero_grad=st.booleans())
def test_optimizer_hyperparameters_raise_valueerror_or_step_to_finite_weights(
        lr, p, wd, eps, normalized, maximize, foreach, nonfinite, shapes, dtype, seed, zero_grad):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter((3 * torch.rand(s, generator=gen, dtype=torch.float64) * 2 - 3).to(dtype))
              for s in shapes]
    try:
        opt = LpMirrorDescent(params, lr=lr, p=p, weight_decay=wd, eps=eps, normalized=normalized,
                              maximize=maximize, foreach=foreach, nonfinite=nonfinite, compile=False)
    except ValueError as exc:
        assert str(exc) and "\n" not in str(exc), str(exc)
        return
    for _ in range(2):
        for prm in params:
            g = 3 * torch.rand(prm.shape, generator=gen, dtype=torch.float64) * 2 - 3
            prm.grad = (torch.zeros_like(g) if zero_grad else g).to(dtype)
        opt.step()
        for prm, shape in zip(params, shapes):
            assert prm.shape == shape and prm.dtype == dtype
            assert bool(torch.isfinite(prm).all()), (lr, p, wd, eps, normalized, maximize, dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_zero_gradient_leaves_weights_almost_unchanged(dtype):
    """A fixed point of the property above: a zero gradient (no weight decay) changes nothing but rounding."""
    w = torch.nn.Parameter(torch.linspace(-3, 3, 13, dtype=torch.float64).to(dtype))
    w0 = w.detach().clone()
    opt = LpMirrorDescent([w], lr=0.1, p=1.75, normalized=True, compile=False)
    w.grad = torch.zeros_like(w)
    opt.step()
    torch.testing.assert_close(w.detach(), w0, rtol=4 * torch.finfo(dtype).eps, atol=0.0)
