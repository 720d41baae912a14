"""``LpMirrorDescent`` on DTensor parameters (FSDP2 ``fully_shard``): the step on each process's local shard.

The mirror step is elementwise, so a sharded tensor is stepped on its local shard (``to_local()``) by the
same kernels as a plain tensor (the compiled one for tensors of at least ``compile_min_numel`` elements -
counted on the whole tensor, so every process takes the same path - else the eager ops). Two quantities
are not elementwise and are reduced across processes:

- the dual norm ||g||_q of normalised mode: each shard's max |g| is all-reduced (MAX), then each shard's
  sum of |g / m|^q (SUM; |x|^q by ``mirrorattn.mirror.abs_pow``, as in ``lp_norms``); one MAX and one SUM
  per parameter group and shard group, however many tensors;
- the non-finite check: each process's per-tensor flags are all-reduced (MAX) over the default process
  group, so that every process raises (naming the same parameter) or skips the step together.

**State.** ``state[param]["dual"]`` of a DTensor parameter is a DTensor with the parameter's mesh and
placements, so ``state_dict()``, ``torch.distributed.checkpoint.state_dict.get_state_dict`` and a
sharded ``torch.distributed.checkpoint`` save and load it like the parameter itself.

**Written weights.** As for plain tensors, a weight written between steps is compared with the weight its
dual implies; the comparison, and the dual recomputed where it differs, are per shard (no collective).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import torch
import torch.distributed as dist

from mirrorattn.mirror import abs_pow, check_p, exponent_kind, mirror_map, signed_pow

from . import _finite
from . import _kernels as K

try:
    from torch.distributed.tensor import DTensor
except ImportError:  # pragma: no cover - a torch without torch.distributed
    DTensor = None  # type: ignore[assignment, misc]

Item = tuple[torch.Tensor, torch.Tensor]


def is_sharded(t: torch.Tensor) -> bool:
    """True for a DTensor (e.g. a parameter or gradient of an FSDP2 ``fully_shard`` module)."""
    return DTensor is not None and isinstance(t, DTensor)


def check_finite(opt: Any, found: list[tuple[int, int, torch.Tensor, torch.Tensor]]) -> bool:
    """``opt._check_finite(found)`` when no gradient is a DTensor; else a check agreed by every process.

    Each process flags its own (local) non-finite gradients; the flags are all-reduced (MAX), and only
    when one is set does ``opt._check_finite`` run - on a marker per tensor (inf where any process saw a
    NaN/inf) - to raise naming that parameter, or to count the skipped step, on every process alike.
    """
    if not any(is_sharded(g) for *_, g in found):
        return opt._check_finite(found)
    local = [g.to_local() if is_sharded(g) else _finite.values_of(g) for *_, g in found]
    device = next(g.to_local().device for *_, g in found if is_sharded(g))
    flags = torch.zeros(len(found), dtype=torch.float32, device=device)
    by_dev: dict[torch.device, list[int]] = defaultdict(list)
    for i, g in enumerate(local):
        by_dev[g.device].append(i)
    for idx in by_dev.values():
        norms = torch._foreach_norm([local[i] for i in idx])
        bad = ~torch.isfinite(torch.stack([n.float() for n in norms]))
        flags[idx] = bad.to(device=device, dtype=flags.dtype)
    if bool(flags.any()):  # an l_2 norm can overflow for finite entries: check those tensors exactly
        for i in flags.nonzero().flatten().tolist():
            flags[i] = float(not bool(torch.isfinite(local[i]).all()))
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    if not bool(flags.any()):
        return True
    marks = torch.where(flags > 0, math.inf, 0.0)
    return opt._check_finite([(gi, pi, param, marks[i: i + 1]) for i, (gi, pi, param, _) in enumerate(found)])


def step(opt: Any, gi: int, items: list[Item], paths: dict[str, int]) -> None:
    """Step group ``gi``'s parameters: the DTensor ones here, the others by ``opt._step_group``."""
    sharded = [(w, g) for w, g in items if is_sharded(w)]
    plain = [(w, g) for w, g in items if not is_sharded(w)]
    group = opt.param_groups[gi]
    if plain:
        opt._step_group(group, plain, paths)
    if sharded:
        _step_sharded(opt, group, sharded, paths)


def _local_grad(param: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The local shard of ``param``'s gradient (a DTensor of the parameter's placements)."""
    if not is_sharded(g) or g.is_sparse:
        raise RuntimeError(f"LpMirrorDescent: a DTensor parameter of shape {tuple(param.shape)} needs a dense "
                           f"DTensor gradient, got {type(g).__name__} ({g.layout})")
    if g.placements != param.placements:
        g = g.redistribute(param.device_mesh, param.placements)
    return g.to_local()


def _stamp(param: torch.Tensor) -> tuple[int, int, int]:
    """Version counters (the DTensor's: its own in-place ops; the shard's: writes to it) and the shard's address."""
    local = param.to_local()
    return param._version, local._version, local.data_ptr()


def _prepare(opt: Any, param: torch.Tensor, p: float, kind: K.Kind) -> torch.Tensor:
    """The local shard of ``param``'s up-to-date dual variable (a DTensor in the state)."""
    st = opt.state[param]
    st["step"] = st.get("step", 0) + 1
    u = st.get("dual")
    if u is None or st.get("p") != p or not is_sharded(u) or u.shape != param.shape \
            or u.placements != param.placements or u.dtype != K.dual_dtype(param.dtype) \
            or u.device != param.device:
        u = st["dual"] = opt._init_dual(param, p)  # DTensor ops: every process builds its shard together
        st["p"] = p
        return u.to_local()
    ul, w = u.to_local(), param.to_local()
    if opt._stamps.get(param) != _stamp(param) and ul.numel():
        implied = signed_pow(ul, kind).to(w.dtype)
        fi = torch.finfo(w.dtype)
        rtol = 4 * fi.eps if kind[0] not in ("pow", "third") else max(4 * fi.eps, 64 * torch.finfo(ul.dtype).eps)
        if not torch.allclose(implied, w, rtol=rtol, atol=fi.tiny):
            ul.copy_(mirror_map(w.to(ul.dtype), p))
    return ul


def _shard_group(param: torch.Tensor) -> Any:
    """The process group over which ``param`` is sharded (None: replicated, no reduction needed)."""
    dims = [i for i, pl in enumerate(param.placements) if pl.is_shard()]
    if any(pl.is_partial() for pl in param.placements) or len(dims) > 1:
        raise ValueError(f"LpMirrorDescent takes DTensor parameters sharded along one mesh dimension (FSDP2, "
                         f"HSDP); got placements {param.placements}")
    return param.device_mesh.get_group(dims[0]) if dims else None


def global_dual_norms(params: list[torch.Tensor], gs: list[torch.Tensor], q: float) -> list[torch.Tensor]:
    """||g||_q of each whole (sharded) tensor from the local shards ``gs``: max |g| all-reduced (MAX), then the
    sum of |g / max|^q (SUM), one collective of each kind per shard group for the whole list."""
    by_group: dict[Any, list[int]] = defaultdict(list)
    for i, param in enumerate(params):
        by_group[_shard_group(param)].append(i)
    norms: list[torch.Tensor] = [torch.empty(())] * len(gs)
    for pg, idx in by_group.items():
        m = torch.stack([gs[i].abs().amax() if gs[i].numel() else gs[i].new_zeros(()) for i in idx])
        if pg is not None:
            dist.all_reduce(m, op=dist.ReduceOp.MAX, group=pg)
        m = m.clamp_min(torch.finfo(m.dtype).tiny)
        qkind = exponent_kind(q)
        s = torch.stack([abs_pow((gs[i] / m[j]).abs(), qkind).sum() for j, i in enumerate(idx)])
        if pg is not None:
            dist.all_reduce(s, op=dist.ReduceOp.SUM, group=pg)
        total = s.pow(1.0 / q) * m
        for j, i in enumerate(idx):
            norms[i] = total[j]
    return norms


def _compiled(opt: Any, param: torch.Tensor, u: torch.Tensor, w: torch.Tensor, g: torch.Tensor,
              alpha: float | torch.Tensor, beta: float, kind: K.Kind) -> bool:
    """Run the compiled kernel on the local shards if ``param`` (whole) is large enough; False: go eager."""
    if param.numel() < opt.compile_min_numel or w.device.type not in ("cpu", "cuda") \
            or not (w.is_contiguous() and g.is_contiguous() and u.is_contiguous()) or not opt.use_compile:
        return False
    if w.numel() == 0:  # an empty shard (a tensor with fewer rows than processes): nothing to do
        return True
    return K.compiled_one(kind, beta != 0.0, u, w, g, alpha, beta)


def _direction(g: torch.Tensor, w: torch.Tensor, dtype: torch.dtype, wd: float, maximize: bool) -> torch.Tensor:
    """(-g if maximize else g) + wd * w in ``dtype`` (the normalised mode's gradient before its scaling)."""
    d = g.to(dtype)
    d = -d if maximize else d
    return d.add(w.to(dtype), alpha=wd) if wd != 0.0 else d


def _direct(opt: Any, group: dict[str, Any], items: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
            p: float) -> None:
    """p = 2 with float32/64 weights: u is w, the step is SGD's on the local shards (no dual stored)."""
    lr, wd, eps = float(group["lr"]), float(group["weight_decay"]), float(group["eps"])
    ds = [_direction(g, w, w.dtype, wd, bool(group["maximize"])) for _, w, g in items]
    if group["normalized"]:
        norms = global_dual_norms([param for param, _, _ in items], ds, 2.0)
        ds = [d * (1.0 / (n + eps)) for d, n in zip(ds, norms)]
    for (param, w, _), d in zip(items, ds):
        st = opt.state[param]
        st.pop("dual", None)
        st["p"] = p
        st["step"] = st.get("step", 0) + 1
        w.add_(d, alpha=-lr)
        opt._stamps[param] = _stamp(param)


def _step_sharded(opt: Any, group: dict[str, Any], items: list[Item], paths: dict[str, int]) -> None:
    """The step of one group's DTensor parameters, on their local shards."""
    p = check_p(group["p"])
    lr, wd, eps = float(group["lr"]), float(group["weight_decay"]), float(group["eps"])
    normalized, maximize = bool(group["normalized"]), bool(group["maximize"])
    kind, q = K.exponents(p)
    local = [(param, param.to_local(), _local_grad(param, g)) for param, g in items]
    is_direct = [kind[0] == "identity" and K.dual_dtype(t[0].dtype) == t[0].dtype for t in local]
    if any(is_direct):
        _direct(opt, group, [t for t, d in zip(local, is_direct) if d], p)
        paths["direct"] += sum(is_direct)
    dual = [(param, w, g, _prepare(opt, param, p, kind)) for (param, w, g), d in zip(local, is_direct) if not d]
    if not dual:
        return
    if normalized:
        gs = [_direction(g, w, u.dtype, wd, maximize) for _, w, g, u in dual]
        alphas: list[Any] = [lr / (n + eps) for n in global_dual_norms([t[0] for t in dual], gs, q)]
        beta = 0.0
    else:
        gs = [g for _, _, g, _ in dual]
        alphas, beta = [-lr if maximize else lr] * len(dual), lr * wd
    eager: dict[tuple, list[int]] = defaultdict(list)
    for i, (param, w, _, u) in enumerate(dual):
        if _compiled(opt, param, u, w, gs[i], alphas[i], beta, kind):
            paths["compiled"] += 1
        else:
            eager[(w.device, w.dtype, u.dtype)].append(i)
    for idx in eager.values():
        us, ws, gl = [dual[i][3] for i in idx], [dual[i][1] for i in idx], [gs[i] for i in idx]
        if normalized:
            K.eager_step(us, ws, gl, [alphas[i] for i in idx], False, 0.0, kind, opt.foreach)
        else:
            K.eager_step(us, ws, gl, lr, maximize, wd, kind, opt.foreach)
        paths["foreach" if opt.foreach else "loop"] += len(idx)
    for param, *_ in dual:
        opt._stamps[param] = _stamp(param)
