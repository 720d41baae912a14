"""The lean step of ``LpMirrorDescent``: small CPU float32/float64 tensors stepped in NumPy, with a plan.

On small tensors (the synthetic experiments' 10 x 10 W, a small model's layers and token embedding) the step's
cost is overhead: torch.optim's step wrapper (a profiler record, hook loops), the per-step checks and grouping
of the general path, and one eager torch op (several microseconds each) per arithmetic operation. After a step
of the general path in which every parameter with a gradient qualifies (below), the optimizer keeps a plan:
NumPy views of each weight and dual variable and the group's settings. The next step checks in one pass,
before changing anything, that the plan still holds - the same parameters with CPU gradients of their dtype
and shape, dense or sparse as at planning, no weight written since (version counter and address, as the
general path checks), the same p, normalisation, eps, weight decay, maximize and batch_dims in every group (the
learning rate is read each step), finite gradients (NumPy sums) - and steps every tensor:

- normalised: ``_kernels.numpy_step`` per tensor;
- plain: u <- u - lr d by the eager path's torch op (so bit for bit its rounding) and w = sign(u)|u|^e in
  NumPy (``mirrorattn.mirror.signed_pow``: the eager path's operations). Two or more dense tensors of a plain
  group are stepped as one flat array (:class:`_Flat`: their duals are views of one buffer, their gradients
  copied into another; the same elementwise operations, a few calls instead of a few per tensor);
- a sparse COO gradient (``nn.Embedding(..., sparse=True)``; plain groups without weight decay): only its rows,
  as the general path's sparse step (duplicates summed by ``_kernels.coalesce_rows``; every other row untouched).

Otherwise it runs the general path (which raises, skips, resyncs or makes a sparse gradient dense as it always
does) and plans again.

Qualifies: a real CPU float32/float64 weight below ``compile_min_numel`` elements with p != 2 (p = 2 keeps
``torch.optim.SGD``'s own operations, bit for bit), not a DTensor, without the neg/conj bits. The plan is
dropped by ``load_state_dict``, ``add_param_group``, ``resync_dual`` and unpickling. Step hooks or a running
profiler send every step through torch.optim's wrapper and the general path; ``foreach=True``/``False`` at
construction switches the lean step off (torch ops always).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.optim import optimizer as _torch_optimizer

from mirrorattn.mirror import Kind, signed_pow

from . import _kernels as K
from . import _sharded

#: weight dtypes of the NumPy paths (their dual has the same dtype)
NUMPY_DTYPES = (torch.float32, torch.float64)


@dataclass
class _Flat:
    """Two or more dense tensors of one plain group and dtype stepped as one flat array: the duals are views of
    ``u`` (each parameter's ``state["dual"]``), the gradients are copied into ``g``, the weights computed into ``w``
    (NumPy) and copied out of its views ``wviews``."""
    members: tuple[int, ...]  # positions in the group's params
    u: torch.Tensor
    un: np.ndarray
    g: torch.Tensor
    gviews: list[torch.Tensor]
    wn: np.ndarray
    w: torch.Tensor
    wviews: list[torch.Tensor]
    weights: list[torch.Tensor]  # the parameters, detached (they share the version counter)


@dataclass
class _Group:
    group: dict[str, Any]
    params: tuple[torch.Tensor, ...]
    settings: tuple
    kind: Kind
    q: float
    #: per parameter: None (no gradient at planning) or (weight view, dual view, dual tensor, state dict)
    entries: list[tuple[np.ndarray, np.ndarray, torch.Tensor, dict] | None]
    #: per parameter: None (no gradient at planning), "rows" (a sparse gradient), "flat" (a member of ``flat``) or
    #: "own" (a dense tensor stepped on its own)
    roles: tuple[str | None, ...]
    flat: _Flat | None


def _settings(group: dict[str, Any]) -> tuple:
    return (group["p"], group["normalized"], group["eps"], group["weight_decay"], group["maximize"],
            group.get("batch_dims", 0))


def hooks_active(opt: torch.optim.Optimizer) -> bool:
    """Whether a step must go through torch.optim's wrapper: step hooks registered, or a profiler running."""
    return bool(_torch_optimizer._global_optimizer_pre_hooks or _torch_optimizer._global_optimizer_post_hooks
                or opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks
                or torch.autograd._profiler_enabled())


def qualifies(opt: Any, param: torch.Tensor) -> bool:
    """Whether ``param`` is a tensor the NumPy paths step (the lean step, and the general step's NumPy route)."""
    return (param.is_cpu and param.dtype in NUMPY_DTYPES and 0 < param.numel() < opt.compile_min_numel
            and param.layout == torch.strided and not param.is_neg() and not param.is_conj()
            and not _sharded.is_sharded(param))


def _flatten(params: tuple[torch.Tensor, ...], entries: list, members: list[int]) -> _Flat:
    """A :class:`_Flat` of the dense ``members``: their duals moved (copied exactly) into one buffer whose views
    become their ``state["dual"]`` (``entries`` updated)."""
    duals = [entries[i][2] for i in members]
    u = torch.cat([d.reshape(-1) for d in duals])
    sizes = [d.numel() for d in duals]
    for i, view in zip(members, u.split(sizes)):
        view = view.view(params[i].shape)
        w, _, _, st = entries[i]
        st["dual"] = view
        entries[i] = (w, view.numpy(), view, st)
    g, w = torch.empty_like(u), torch.empty_like(u)
    return _Flat(tuple(members), u, u.numpy(), g,
                 [v.view(params[i].shape) for i, v in zip(members, g.split(sizes))], w.numpy(), w,
                 [v.view(params[i].shape) for i, v in zip(members, w.split(sizes))],
                 [params[i].detach() for i in members])


def plan(opt: Any) -> list[_Group] | None:
    """The plan of the lean step after a general step, or None when a parameter with a gradient does not qualify."""
    groups = []
    for group in opt.param_groups:
        p = float(group["p"])
        kind, q = K.exponents(p)
        params = tuple(group["params"])
        entries: list[tuple[np.ndarray, np.ndarray, torch.Tensor, dict] | None] = []
        for param in params:
            if param.grad is None:
                entries.append(None)
                continue
            st = opt.state.get(param, {})
            u = st.get("dual")
            if kind[0] == "identity" or not qualifies(opt, param) or u is None or u.dtype != param.dtype \
                    or st.get("p") != p or param not in opt._stamps \
                    or (param.grad.is_sparse and (group["normalized"] or group["weight_decay"] != 0.0)):
                return None  # (a sparse gradient with weight decay or normalisation: made dense by the general path)
            entries.append((param.detach().numpy(), u.numpy(), u, st))
        roles = [None if e is None else "rows" if param.grad.is_sparse else "own" for param, e in zip(params, entries)]
        dense = [i for i, r in enumerate(roles) if r == "own"]
        flat = None
        if not group["normalized"] and len(dense) > 1 and len({params[i].dtype for i in dense}) == 1:
            flat = _flatten(params, entries, dense)
            for i in dense:
                roles[i] = "flat"
        groups.append(_Group(group, params, _settings(group), kind, q, entries, tuple(roles), flat))
    return groups


def _sparse_rows(g: torch.Tensor, param: torch.Tensor) -> tuple | None:
    """(rows, values as NumPy, values as a tensor) of a sparse COO gradient with one sparse dimension, coalesced as
    the general path coalesces it (``_kernels.coalesce_rows``); None when the lean step cannot take it."""
    if g.layout != torch.sparse_coo or g.sparse_dim() != 1 or not g.is_cpu or g.dtype != param.dtype \
            or g.shape != param.shape:
        return None
    g = K.coalesce_rows(g)
    vals = g._values()
    if vals.is_neg() or vals.is_conj():
        return None
    return g._indices()[0].numpy(), vals.numpy(), vals


#: from this many elements on, a gradient's finite check is torch's sum (vectorised; NumPy's pairwise float32 sum
#: is about twice as slow), below it NumPy's (less call overhead)
_TORCH_SUM_NUMEL = 4096


def _finite(g: torch.Tensor) -> bool:
    """Whether the sum of ``g`` is finite (False for a NaN or inf, or an overflowing sum: the general path checks)."""
    s = g.sum().item() if g.numel() >= _TORCH_SUM_NUMEL else np.add.reduce(g.detach().numpy().reshape(-1))
    return math.isfinite(s)


def _group_gradients(opt: Any, pg: _Group) -> list[Any] | None:
    """Per parameter of one planned group: None (no gradient), the dense gradient (a tensor; in a normalised group
    its NumPy view; a member of the flat bundle: copied into it) or a sparse gradient's rows
    (:func:`_sparse_rows`); None when the plan does not hold or a gradient is not finite (nothing observable
    changed)."""
    params = pg.group["params"]
    if len(params) != len(pg.params) or _settings(pg.group) != pg.settings \
            or not all(a is b for a, b in zip(params, pg.params)):
        return None
    out: list[Any] = []
    for param, entry, role in zip(params, pg.entries, pg.roles):
        g = param.grad
        if role is None or g is None:
            if (role is None) != (g is None):
                return None
            out.append(None)
            continue
        if opt._stamps.get(param) != (param._version, param.data_ptr()) or entry[3].get("dual") is not entry[2] \
                or g.is_sparse != (role == "rows"):
            return None
        if role == "rows":
            g = _sparse_rows(g, param)
            if g is None or not _finite(g[2]):
                return None
        elif role == "own":
            if not g.is_cpu or g.dtype != param.dtype or g.shape != entry[0].shape or g.is_neg():
                return None
            gv = g.detach().numpy()
            if not math.isfinite(np.add.reduce(gv, axis=None)):
                return None
            if pg.settings[1]:  # normalised: the NumPy step takes the view
                g = gv
        out.append(g)
    flat = pg.flat
    if flat is not None:  # (a dense gradient has its parameter's dtype, device and shape: the grad setter checks)
        torch._foreach_copy_(flat.gviews, [out[i] for i in flat.members])
        if not _finite(flat.g):
            return None
    return out


def _step_rows(u: np.ndarray, w: np.ndarray, rows: tuple, lr: float, kind: Kind, maximize: bool) -> None:
    """The general path's sparse step (``LpMirrorDescent._sparse_step``, small tensor) on the gradient's rows only:
    u_r <- u_r - lr d_r by the same torch op (its rounding), w_r = sign(u_r)|u_r|^e in NumPy; other rows untouched."""
    idx, _, vals = rows
    ur = np.take(u, idx, axis=0)
    torch.from_numpy(ur).add_(-vals if maximize else vals, alpha=-lr)
    u[idx] = ur
    w[idx] = signed_pow(ur, kind)


def _step_flat(flat: _Flat, lr: float, wd: float, maximize: bool, kind: Kind) -> None:
    """The plain step of a flat bundle (its gradients already copied into ``flat.g``): the eager path's operations
    (d = -g if maximize, d + wd w, u <- u - lr d, w = sign(u)|u|^e) on the concatenated arrays."""
    if maximize:
        flat.g.neg_()
    if wd != 0.0:
        torch._foreach_copy_(flat.wviews, flat.weights)
        flat.g.add_(flat.w, alpha=wd)
    flat.u.add_(flat.g, alpha=-lr)
    signed_pow(flat.un, kind, out=flat.wn)
    torch._foreach_copy_(flat.weights, flat.wviews)  # bumps the parameters' version counters


def _step_group(opt: Any, pg: _Group, grads: list[Any], lr: float) -> tuple[int, int]:
    """Step one planned group with its checked gradients; returns (dense tensors, sparse tensors) stepped."""
    p, normalized, eps, wd, maximize, bd = pg.settings
    if pg.flat is not None:
        _step_flat(pg.flat, lr, float(wd), bool(maximize), pg.kind)
    n = rows = 0
    for param, entry, g, role in zip(pg.params, pg.entries, grads, pg.roles):
        if g is None:
            continue
        w, u, ut, st = entry
        st["step"] += 1
        if role == "flat":
            opt._stamps[param] = (param._version, param.data_ptr())
            n += 1
            continue
        if role == "rows":  # sparse rows (plain, no weight decay)
            _step_rows(u, w, g, lr, pg.kind, bool(maximize))
            rows += 1
        elif normalized:
            K.numpy_step(u, w, g, lr, pg.kind, normalized=True, eps=float(eps), q=pg.q,
                         batch_dims=bd, wd=float(wd), maximize=bool(maximize))
            n += 1
        else:  # u <- u - lr d by the eager path's torch op (its rounding, bit for bit), the power in NumPy
            d = -g if maximize else g
            ut.add_(d.add(param.detach(), alpha=wd) if wd != 0.0 else d, alpha=-lr)
            signed_pow(u, pg.kind, out=w)
            n += 1
        torch.autograd.graph.increment_version(param)
        opt._stamps[param] = (param._version, param.data_ptr())
    return n, rows


def step(opt: Any, groups: list[_Group]) -> bool:
    """One lean step; False (nothing changed) when the plan no longer holds or a gradient is not finite."""
    grads = []
    for pg in groups:
        gs = _group_gradients(opt, pg)
        if gs is None:
            return False
        grads.append(gs)
    lrs = [float(pg.group["lr"]) for pg in groups]
    if not all(math.isfinite(lr) and lr >= 0.0 for lr in lrs):
        return False
    n = rows = 0
    for pg, gs, lr in zip(groups, grads, lrs):
        dn, dr = _step_group(opt, pg, gs, lr)
        n, rows = n + dn, rows + dr
    opt.last_step_paths = {k: v for k, v in (("numpy", n), ("sparse", rows)) if v}
    return True
