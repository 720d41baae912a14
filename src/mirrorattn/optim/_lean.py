"""The lean step of ``LpMirrorDescent``: small dense CPU float32/float64 tensors stepped in NumPy, with a plan.

On tiny tensors (the synthetic experiments' 10 x 10 W, a small model's layer norms) the step's cost is
overhead: torch.optim's step wrapper (a profiler record, hook loops), the per-step checks and grouping of
the general path, and one eager torch op (several microseconds each) per arithmetic operation. After a step
of the general path in which every parameter with a gradient qualifies (below), the optimizer keeps a plan:
NumPy views of each weight and dual variable and the group's settings. The next step checks in one pass,
before changing anything, that the plan still holds - the same parameters with dense CPU gradients of their
dtype and shape, no weight written since (version counter and address, as the general path checks), the same
p, normalisation, eps, weight decay, maximize and batch_dims in every group (the learning rate is read each
step), finite gradients (a NumPy sum per tensor) - and steps every tensor: normalised, with
``_kernels.numpy_step``; plain, u <- u - lr d by the eager path's torch op (so bit for bit its rounding) and
w = sign(u)|u|^e in NumPy (``mirrorattn.mirror.signed_pow``: the eager path's operations); otherwise it runs the general
path (which raises, skips or resyncs as it always does) and plans again.

Qualifies: a real CPU float32/float64 weight below ``compile_min_numel`` elements with p != 2 (p = 2 keeps
``torch.optim.SGD``'s own operations, bit for bit), not a DTensor, without the neg/conj bits. The plan is
dropped by ``load_state_dict``, ``add_param_group``, ``resync_dual`` and unpickling. Step hooks or a running
profiler send every step through torch.optim's wrapper and the general path.
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
class _Group:
    group: dict[str, Any]
    params: tuple[torch.Tensor, ...]
    settings: tuple
    kind: Kind
    q: float
    #: per parameter: None (no gradient at planning) or (weight view, dual view, dual tensor, state dict)
    entries: list[tuple[np.ndarray, np.ndarray, torch.Tensor, dict] | None]


def _settings(group: dict[str, Any]) -> tuple:
    return (group["p"], group["normalized"], group["eps"], group["weight_decay"], group["maximize"],
            group.get("batch_dims", 0))


def hooks_active(opt: torch.optim.Optimizer) -> bool:
    """Whether a step must go through torch.optim's wrapper: step hooks registered, or a profiler running."""
    return bool(_torch_optimizer._global_optimizer_pre_hooks or _torch_optimizer._global_optimizer_post_hooks
                or opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks
                or torch.autograd._profiler_enabled())


def _qualifies(opt: Any, param: torch.Tensor) -> bool:
    return (param.is_cpu and param.dtype in NUMPY_DTYPES and 0 < param.numel() < opt.compile_min_numel
            and param.layout == torch.strided and not param.is_neg() and not param.is_conj()
            and not _sharded.is_sharded(param))


def plan(opt: Any, exponents: Any) -> list[_Group] | None:
    """The plan of the lean step after a general step, or None when a parameter with a gradient does not qualify.
    ``exponents(p)``: (kind of 1/(p-1), q)."""
    groups = []
    for group in opt.param_groups:
        p = float(group["p"])
        kind, q = exponents(p)
        entries: list[tuple[np.ndarray, np.ndarray, torch.Tensor, dict] | None] = []
        for param in group["params"]:
            if param.grad is None:
                entries.append(None)
                continue
            st = opt.state.get(param, {})
            u = st.get("dual")
            if kind[0] == "identity" or not _qualifies(opt, param) or u is None or u.dtype != param.dtype \
                    or st.get("p") != p or param not in opt._stamps:
                return None
            entries.append((param.detach().numpy(), u.numpy(), u, st))
        groups.append(_Group(group, tuple(group["params"]), _settings(group), kind, q, entries))
    return groups


def _gradients(opt: Any, groups: list[_Group]) -> list[list[np.ndarray | None]] | None:
    """The gradients' NumPy views when the plan holds and every gradient is finite, else None (nothing changed)."""
    out = []
    for pg in groups:
        params = pg.group["params"]
        if len(params) != len(pg.params) or _settings(pg.group) != pg.settings \
                or not all(a is b for a, b in zip(params, pg.params)):
            return None
        views: list[np.ndarray | None] = []
        for param, entry in zip(params, pg.entries):
            g = param.grad
            if entry is None or g is None:
                if (entry is None) != (g is None):
                    return None
                views.append(None)
                continue
            if g.layout != torch.strided or not g.is_cpu or g.dtype != param.dtype or g.shape != param.shape \
                    or g.is_neg() or opt._stamps.get(param) != (param._version, param.data_ptr()) \
                    or entry[3].get("dual") is not entry[2]:
                return None
            gv = g.detach().numpy()
            if not math.isfinite(np.add.reduce(gv, axis=None)):  # NaN/inf (or an overflowing sum): general path
                return None
            views.append(gv)
        out.append(views)
    return out


def step(opt: Any, groups: list[_Group]) -> bool:
    """One lean step; False (nothing changed) when the plan no longer holds or a gradient is not finite."""
    grads = _gradients(opt, groups)
    if grads is None:
        return False
    lrs = [float(pg.group["lr"]) for pg in groups]
    if not all(math.isfinite(lr) and lr >= 0.0 for lr in lrs):
        return False
    n = 0
    for pg, views, lr in zip(groups, grads, lrs):
        p, normalized, eps, wd, maximize, bd = pg.settings
        for param, entry, g in zip(pg.params, pg.entries, views):
            if g is None:
                continue
            w, u, ut, st = entry
            st["step"] += 1
            if normalized:
                K.numpy_step(u, w, g, lr, pg.kind, normalized=True, eps=float(eps), q=pg.q, batch_dims=bd,
                             wd=float(wd), maximize=bool(maximize))
            else:  # u <- u - lr d by the eager path's torch op (its rounding, bit for bit), the power in NumPy
                d = -param.grad if maximize else param.grad
                ut.add_(d.add(param.detach(), alpha=wd) if wd != 0.0 else d, alpha=-lr)
                signed_pow(u, pg.kind, out=w)
            torch.autograd.graph.increment_version(param)
            opt._stamps[param] = (param._version, param.data_ptr())
            n += 1
    opt.last_step_paths = {"numpy": n} if n else {}
    return True
