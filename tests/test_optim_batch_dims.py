"""LpMirrorDescent with ``batch_dims``: the leading dimensions index independent problems, each normalised by its
own dual norm - against a float64 NumPy reference written from paper.md section 2 (raw exponents, one slice at a
time), against one-slice runs, and its checks (validation, state dicts, DTensor refusal)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from mirrorattn.optim import LpMirrorDescent, _sharded
from mirrorattn.optim import lpmd as lpmd_mod

EPS = float(np.finfo(np.float64).eps)


def ref_slices(w0, grads, p, lr, bd, *, wd=0.0, maximize=False, eps=EPS):
    """NumPy float64 normalised l_p-MD on every slice w0[i_1, ..., i_bd] separately (a loop over slices)."""
    lead = w0.shape[:bd]
    out = np.empty_like(w0)
    q = p / (p - 1.0)
    for idx in np.ndindex(*lead):
        w = np.array(w0[idx], dtype=np.float64)
        u = np.sign(w) * np.abs(w) ** (p - 1.0)
        for g in grads:
            d = np.array(g[idx], dtype=np.float64)
            d = (-d if maximize else d) + wd * w
            u = u - lr * d / (np.sum(np.abs(d) ** q) ** (1.0 / q) + eps)
            w = np.sign(u) * np.abs(u) ** (1.0 / (p - 1.0))
        out[idx] = w
    return out


def _grads(shape, steps=6, seed=1):
    rng = np.random.default_rng(seed)
    scales = np.array([1e-3, 1.0, 1e3, 0.0])[: shape[0]].reshape((-1,) + (1,) * (len(shape) - 1))
    return [rng.standard_normal(shape) * scales for _ in range(steps)]


def _run(w0, grads, p, bd, **kw):
    w = torch.tensor(w0)
    opt = LpMirrorDescent([w], lr=0.1, p=p, normalized=True, eps=EPS, batch_dims=bd, **kw)
    for g in grads:
        w.grad = torch.tensor(g)
        opt.step()
    return w.numpy(), opt


# the NumPy path (small CPU tensors) and the torch eager path (compile_min_numel=1 sends them past the NumPy path)
PATHS = {"numpy": {}, "torch": {"compile_min_numel": 1, "compile": False}}


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("p", [1.75, 2.0, 3.0, 1.1])
@pytest.mark.parametrize("shape,bd", [((4, 3, 5), 1), ((3, 2, 4), 2), ((4, 6), 1)])
def test_each_slice_follows_the_reference(path, p, shape, bd):
    w0 = np.random.default_rng(0).standard_normal(shape)
    grads = _grads(shape)
    ours, opt = _run(w0, grads, p, bd, **PATHS[path])
    expect = ref_slices(w0, grads, p, 0.1, bd)
    np.testing.assert_allclose(ours, expect, rtol=1e-12, atol=1e-13)
    assert set(opt.last_step_paths) == ({"numpy"} if path == "numpy" else {"direct" if p == 2.0 else "foreach"})
    assert np.abs(ours - w0).max() > 0.1  # the iterates move


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("p", [1.75, 2.0, 3.0])
def test_a_slice_in_the_batch_equals_the_slice_alone(path, p):
    """Bit for bit on the NumPy path; to rounding on the torch one (torch's vectorised pow rounds the elements
    of a loop's tail differently, and where the tail falls depends on the tensor's size)."""
    shape = (4, 3, 5)
    w0 = np.random.default_rng(2).standard_normal(shape)
    grads = _grads(shape, seed=3)
    full, _ = _run(w0, grads, p, 1, **PATHS[path])
    for s in range(shape[0]):
        alone, _ = _run(w0[s:s + 1], [g[s:s + 1] for g in grads], p, 1, **PATHS[path])
        if path == "numpy":
            np.testing.assert_array_equal(full[s], alone[0])
        else:
            np.testing.assert_allclose(full[s], alone[0], rtol=1e-14, atol=0)


@pytest.mark.parametrize("p", [1.75, 3.0])
def test_weight_decay_and_maximize_per_slice(p):
    shape = (3, 4, 2)
    w0 = np.random.default_rng(4).standard_normal(shape)
    grads = _grads(shape, seed=5)
    for path in PATHS.values():
        ours, _ = _run(w0, grads, p, 1, weight_decay=0.05, maximize=True, **path)
        np.testing.assert_allclose(ours, ref_slices(w0, grads, p, 0.1, 1, wd=0.05, maximize=True), rtol=1e-12,
                                   atol=1e-13)


@pytest.mark.parametrize("p", [1.75, 3.0])
def test_without_normalisation_batch_dims_changes_nothing(p):
    w0 = np.random.default_rng(6).standard_normal((4, 3, 5))
    grads = _grads(w0.shape, seed=7)
    runs = []
    for bd in (0, 1):
        w = torch.tensor(w0)
        opt = LpMirrorDescent([w], lr=0.1, p=p, batch_dims=bd)
        for g in grads:
            w.grad = torch.tensor(g)
            opt.step()
        runs.append(w)
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("path", sorted(PATHS))
def test_a_zero_slice_gradient_moves_nothing_and_makes_no_nan(path):
    w = torch.zeros(3, 2, 2, dtype=torch.float64)
    w[1] = 0.5
    opt = LpMirrorDescent([w], lr=0.1, p=3.0, normalized=True, eps=EPS, batch_dims=1, **PATHS[path])
    g = torch.zeros_like(w)
    g[2] = 1.0
    w.grad = g
    opt.step()
    assert torch.isfinite(w).all()
    assert torch.equal(w[:2], torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [[0.5, 0.5], [0.5, 0.5]]], dtype=w.dtype))
    assert (w[2] < 0).all()


def test_the_numpy_path_moves_the_version_counter_and_keeps_float32():
    w = torch.nn.Parameter(torch.randn(3, 4, dtype=torch.float32))
    opt = LpMirrorDescent([w], lr=0.1, p=1.5, normalized=True, batch_dims=1)
    loss = (w ** 3).sum()  # saves w for the backward pass
    before = w._version
    w.grad = torch.ones_like(w)
    opt.step()
    assert w._version > before and w.dtype == torch.float32 and opt.last_step_paths == {"numpy": 1}
    assert opt.state[w]["dual"].dtype == torch.float32
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()  # autograd sees the weight written in place, as with any torch optimizer


@pytest.mark.parametrize("bad", [-1, 1.0, True, "1", None])
def test_bad_batch_dims_is_refused(bad):
    with pytest.raises(ValueError, match="batch_dims must be an int >= 0"):
        LpMirrorDescent([torch.zeros(2, 2)], lr=0.1, p=2.0, batch_dims=bad)


def test_batch_dims_beyond_a_parameter_is_refused():
    with pytest.raises(ValueError, match="at least 3 dimensions"):
        LpMirrorDescent([torch.zeros(2, 2, 2), torch.zeros(2, 2)], lr=0.1, p=2.0, batch_dims=3)
    opt = LpMirrorDescent([torch.zeros(2, 2)], lr=0.1, p=2.0)
    with pytest.raises(ValueError, match="at least 3 dimensions"):
        opt.add_param_group({"params": [torch.zeros(2)], "batch_dims": 3})
    assert len(opt.param_groups) == 1
    opt.param_groups[0]["batch_dims"] = 5  # an edited group is checked at the step
    opt.param_groups[0]["params"][0].grad = torch.ones(2, 2)
    with pytest.raises(ValueError, match="at least 5 dimensions"):
        opt.step()


def test_dtensor_parameters_refuse_batch_dims(monkeypatch):
    marked = torch.zeros(2, 3)
    monkeypatch.setattr(_sharded, "is_sharded", lambda t: t is marked)
    with pytest.raises(ValueError, match="not supported for DTensor"):
        LpMirrorDescent([marked], lr=0.1, p=1.5, normalized=True, batch_dims=1)
    LpMirrorDescent([marked], lr=0.1, p=1.5, normalized=True)  # batch_dims = 0: accepted


def test_state_dict_keeps_batch_dims_and_loads_old_states():
    w0 = np.random.default_rng(8).standard_normal((3, 4))
    grads = _grads(w0.shape, steps=4, seed=9)
    straight, _ = _run(w0, grads, 1.75, 1)
    w = torch.tensor(w0)
    opt = LpMirrorDescent([w], lr=0.1, p=1.75, normalized=True, eps=EPS, batch_dims=1)
    for g in grads[:2]:
        w.grad = torch.tensor(g)
        opt.step()
    saved = copy.deepcopy(opt.state_dict())
    assert saved["param_groups"][0]["batch_dims"] == 1
    old = copy.deepcopy(saved)
    del old["param_groups"][0]["batch_dims"]  # a state saved before the option existed
    for state in (saved, old):
        w2 = torch.tensor(w.numpy().copy())
        opt2 = LpMirrorDescent([w2], lr=0.1, p=1.75, normalized=True, eps=EPS, batch_dims=1)
        opt2.load_state_dict(copy.deepcopy(state))
        assert opt2.param_groups[0]["batch_dims"] == 1
        for g in grads[2:]:
            w2.grad = torch.tensor(g)
            opt2.step()
        np.testing.assert_array_equal(w2.numpy(), straight)
    assert "batch_dims" in lpmd_mod.OPTIONAL_GROUP_KEYS and "batch_dims" not in lpmd_mod.GROUP_KEYS
    too_deep = copy.deepcopy(saved)
    too_deep["param_groups"][0]["batch_dims"] = 3
    with pytest.raises(ValueError, match="param_groups\\[0\\].*at least 3 dimensions"):
        opt.load_state_dict(too_deep)
    assert opt.param_groups[0]["batch_dims"] == 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_gradients_of_small_cpu_tensors_are_caught_and_huge_finite_ones_are_not(bad):
    """The non-finite check of small CPU tensors (a NumPy sum): NaN / inf raise or skip; finite entries whose sum
    overflows are stepped (the exact check clears them)."""
    from mirrorattn.optim import NonFiniteGradientError

    w = torch.ones(2, 3, dtype=torch.float64)
    opt = LpMirrorDescent([w], lr=0.1, p=1.75, normalized=True, batch_dims=1)
    w.grad = torch.full_like(w, 1e308)
    opt.step()
    assert torch.isfinite(w).all() and (w < 1).all()
    before = w.clone()
    w.grad = torch.zeros_like(w)
    w.grad[1, 2] = bad
    with pytest.raises(NonFiniteGradientError, match="NaN or inf"):
        opt.step()
    assert torch.equal(w, before)
    skipping = LpMirrorDescent([w], lr=0.1, p=1.75, normalized=True, batch_dims=1, nonfinite="skip")
    skipping.step()
    assert torch.equal(w, before) and skipping.skipped_steps == 1
