"""``LpMirrorDescent``: l_p mirror descent as a ``torch.optim.Optimizer`` (paper.md section 2)."""

from __future__ import annotations

import math
from collections import defaultdict
from itertools import chain
from typing import Any, Callable, Iterable

import numpy as np
import torch

from mirrorattn.mirror import check_p, exponent_kind, lp_norms, mirror_map, signed_pow

from . import _finite, _lean, _sharded
from . import _kernels as K
from ._finite import NonFiniteGradientError  # noqa: F401 (public: mirrorattn.optim.NonFiniteGradientError)
from ._kernels import coalesce_rows, dual_dtype

#: default smallest tensor (in elements) sent to the compiled kernel; smaller ones go eager, where
#: a kernel launch costs more than the arithmetic and no compilation is ever triggered
COMPILE_MIN_NUMEL = 1 << 16

_NONFINITE_CHOICES = ("raise", "skip")



def _coalesced(g: torch.Tensor, name: str) -> torch.Tensor:
    """:func:`coalesce_rows` of ``g``; ``RuntimeError`` for a layout other than COO with one sparse dimension."""
    if g.layout != torch.sparse_coo or g.sparse_dim() != 1:
        raise RuntimeError(f"LpMirrorDescent takes dense gradients or sparse COO gradients with one sparse "
                           f"dimension (nn.Embedding(..., sparse=True)); {name} has {g.layout} with "
                           f"{g.sparse_dim()} sparse dimensions")
    return coalesce_rows(g)


#: the hyper-parameters every group of an LpMirrorDescent optimizer (and of its state dict) carries
GROUP_KEYS = ("p", "lr", "normalized", "eps", "weight_decay", "maximize")
#: group options a state dict may lack (saved before they existed): such a group keeps the current group's value
OPTIONAL_GROUP_KEYS = ("batch_dims",)
#: weight dtypes of the NumPy paths: their dual has the same dtype
_NUMPY_DTYPES = _lean.NUMPY_DTYPES
#: what the per-parameter state may hold
_STATE_KEYS = frozenset({"dual", "p", "step"})


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_group(group: dict[str, Any]) -> None:
    check_p(group["p"])
    lr = group["lr"]
    if isinstance(lr, torch.Tensor) and lr.numel() == 1 and not lr.is_complex():
        lr = float(lr)
    if not (_number(lr) and lr >= 0.0):
        raise ValueError(f"lr must be a finite number >= 0, got {group['lr']!r}")
    eps = group["eps"]
    if not (_number(eps) and eps > 0.0):
        raise ValueError(f"eps must be a finite number > 0 (e.g. 1e-12), got {eps!r}")
    wd = group["weight_decay"]
    if not (_number(wd) and wd >= 0.0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {wd!r}")
    for flag in ("normalized", "maximize"):
        if not (isinstance(group[flag], bool) or (type(group[flag]) is int and group[flag] in (0, 1))):
            raise ValueError(f"{flag} must be True or False, got {group[flag]!r}")
    bd = group.get("batch_dims", 0)
    if not (type(bd) is int and bd >= 0):
        raise ValueError(f"batch_dims must be an int >= 0, got {bd!r}")


def _check_batch_dims(group: dict[str, Any]) -> None:
    """A group with ``batch_dims`` = b > 0: every parameter has at least b dimensions and is a plain tensor
    (not a DTensor: its slices would span processes)."""
    bd = group.get("batch_dims", 0)
    if not bd:
        return
    for param in group["params"]:
        if _sharded.is_sharded(param):
            raise ValueError(f"batch_dims = {bd} is not supported for DTensor (FSDP2) parameters; put them in a "
                             "group with batch_dims = 0")
        if param.dim() < bd:
            raise ValueError(f"batch_dims = {bd} needs parameters with at least {bd} dimensions, got one of shape "
                             f"{tuple(param.shape)}")


def _check_eps(group: dict[str, Any], params: Iterable[torch.Tensor]) -> None:
    """In normalized mode a zero gradient is scaled by lr / (0 + eps) (1 / eps for p = 2): that factor must be
    finite in the dtype of the update (float32 for all but float64 weights), else inf * 0 = NaN weights."""
    dtypes = {dual_dtype(t.dtype) for t in params if isinstance(t, torch.Tensor) and t.is_floating_point()}
    if not group["normalized"] or not dtypes:
        return
    lr = float(group["lr"])
    dtype = min(dtypes, key=lambda dt: torch.finfo(dt).max)
    limit = torch.finfo(dtype).max / 4
    if max(lr, 1.0) / group["eps"] > limit:
        raise ValueError(f"eps = {group['eps']!r} is too small for normalized=True with lr = {group['lr']!r}: "
                         f"max(lr, 1) / eps overflows {dtype} and a zero gradient would turn the weights NaN; use "
                         f"eps >= {max(lr, 1.0) / limit:.1e} (the default is 1e-12)")


class LpMirrorDescent(torch.optim.Optimizer):
    r"""l_p mirror descent with the potential psi(w) = ||w||_p^p / p (entrywise), p > 1.

    **Update** (per parameter tensor, each step)::

        g <- -grad if maximize else grad
        g <- g + weight_decay * w                     (mirror descent on the l_2-regularised loss)
        g <- g / (||g||_q + eps)  if normalized       (q = p / (p - 1), the dual exponent)
        u <- u - lr * g                               (u = grad psi(w) = sign(w) |w|^(p-1))
        w <- grad psi*(u) = sign(u) |u|^(1/(p-1))

    **Independent problems in one tensor** (``batch_dims`` = b > 0, per group): the first b dimensions
    of each of the group's tensors index independent problems (e.g. a leading seed axis: S models
    trained side by side as one (S, ...) tensor). In normalised mode each slice g[i_1, ..., i_b] is then
    divided by its own dual norm over the remaining dimensions, so every slice follows exactly the
    iterates it would follow alone (the rest of the step is elementwise anyway; without normalisation
    ``batch_dims`` changes nothing). In normalised mode such tensors skip the compiled kernels (they take
    one coefficient per tensor): dense CPU float32/float64 tensors below ``compile_min_numel`` elements
    are stepped in NumPy on views of their memory (path "numpy": the NumPy mirror maps and dual norms of
    ``mirrorattn.mirror``, a few times less overhead than eager torch ops on small tensors), the rest
    by the eager torch ops. DTensor (FSDP2) parameters refuse ``batch_dims`` > 0 (``ValueError``); a
    state dict saved without it loads, keeping the current group's value.

    p = 2 is plain gradient descent and matches ``torch.optim.SGD`` (no momentum, same weight
    decay and maximize) to floating-point precision (bit for bit on float32/float64 weights).

    **State.** ``state[param]["dual"]`` holds u, created from the weight at the first step;
    ``state[param]["p"]`` the p that u belongs to (a group whose p changes recomputes u from w);
    ``state[param]["step"]`` counts steps. Keeping u (rather than recomputing it from w each step)
    means that a weight that rounds to 0 keeps its progress in u. For p = 2 with float32/float64
    weights u equals w, so no copy is stored. ``state_dict()``/``load_state_dict()`` round-trip
    u exactly (its dtype is kept; torch's default would cast it to the weight's dtype).

    **Weights changed by the user** between steps are honoured. After writing a weight, the
    optimizer records the tensor's version counter (``param._version``, bumped by every in-place
    write, e.g. ``nn.init.*``, ``param.copy_()``, ``model.load_state_dict()``) and its
    ``data_ptr()`` (which changes on ``param.data = new_tensor``). At the next step, a weight
    whose record differs (or has none, e.g. after ``load_state_dict`` or ``deepcopy``) is
    compared with the weight implied by u, sign(u)|u|^(1/(p-1)) cast to its dtype; if they differ
    by more than rounding (4 ulp of the weight's dtype; 64 ulp of u's for the general ``pow``),
    u is recomputed from the weight. The hot path costs two integer
    comparisons per tensor. Writes through ``param.data.<op>_()`` bypass the version counter (a
    PyTorch design choice) and are not seen; after such writes call :meth:`resync_dual`.

    **Half precision.** bf16/fp16 weights keep their dtype; u (and the arithmetic) is float32.
    float64 weights get a float64 u.

    **Exponent fast paths.** 1/(p-1) is snapped (``mirrorattn.mirror.inverse_exponent``: p = 1.1
    gives exactly 10) and classified: a whole number (p = 1.1 -> 10, 1.5 -> 2, 1.01 -> 100) uses
    repeated squaring, n + 1/2 repeated squaring times a sqrt, 1/2 (p = 3) a sqrt, 1 (p = 2) the
    identity, n + 1/3 or n + 2/3 (p = 1.75 -> 4/3, p = 1.6 -> 5/3) repeated squaring times a cube
    root (in the compiled kernel from multiplies and divisions, ``_kernels.cbrt_halley``: a few
    ulp, about 2x faster than exp2/log2), anything else ``pow`` (in the compiled kernel
    exp2(e log2|u|), about twice as fast as ``pow`` on AVX2 CPUs; relative error ~1e-14 in
    float64, up to ~1e-6 in float32).

    **Speed.** Tensors with at least ``compile_min_numel`` elements (contiguous, on CPU/CUDA) go
    through one ``torch.compile``'d elementwise kernel per exponent kind that updates u and w in
    place in a single pass; the rest through eager ``torch._foreach_*`` ops (``foreach=False``: a
    per-tensor loop). Compilation is skipped with ``compile=False`` or the environment variable
    ``MIRRORATTN_OPTIM_EAGER=1``, and falls back to eager (with one warning) if it fails. When every
    tensor with a gradient is a small CPU float32/float64 one (p != 2, ``foreach`` left at None), the
    steps after the first are lean (``_lean``; sparse embedding rows and flat bundles of a plain group's dense
    tensors included): NumPy on views planned at the previous step, past
    torch.optim's step wrapper unless step hooks or a profiler need it (the synthetic 10 x 10 W steps
    faster than a naive stateless step in eager torch). ``last_step_paths`` counts the tensors each
    path ("compiled", "foreach", "loop", "direct" for p = 2 SGD form, "numpy" for ``batch_dims`` > 0
    and the lean step, "sparse") handled at the last step.

    **Checks.** Hyper-parameters are checked on construction, in :meth:`add_param_group` and in
    :meth:`load_state_dict` (which refuses the state of another optimizer, or of other parameters);
    with ``normalized=True``, ``max(lr, 1) / eps`` must be finite in the dtype of the update (a zero
    gradient is scaled by it). When a dual variable is (re)built from a weight, it must be finite:
    sign(w)|w|^(p-1) overflows for large p and |w| (float32 duals: p = 200 above |w| = 1.56), which is
    a ``ValueError`` naming the largest |w| it can hold. Zero-size parameters are skipped.

    **Non-finite gradients.** Every step first checks the gradients (a sum per gradient on a CPU, else one fused
    norm per device);
    a NaN/inf raises :class:`NonFiniteGradientError` naming the parameter (its name if the
    optimizer was given ``named_parameters()``), or with ``nonfinite="skip"`` the whole step is
    skipped (nothing changes; ``skipped_steps`` counts them).

    Args:
        params: parameters or parameter groups (dicts may set lr, p, normalized, eps,
            weight_decay, maximize, batch_dims per group); ``named_parameters()`` is accepted.
        lr: step size (>= 0).
        p: the l_p geometry, finite and > 1.
        normalized: divide each tensor's gradient by its dual norm ||g||_q + eps.
        eps: added to the dual norm in normalized mode (> 0).
        weight_decay: l_2 coefficient added to the gradient as ``weight_decay * w`` (>= 0).
        maximize: ascend instead of descend.
        batch_dims: leading dimensions that index independent problems (normalised per slice), >= 0.
        foreach: eager path over the tensor list with ``torch._foreach_*`` ops (None: on, and small CPU
            float32/float64 tensors may take the lean NumPy step, ``_lean``; True/False: torch ops always).
        nonfinite: "raise" or "skip" on NaN/inf gradients.
        compile: use the compiled kernel (None: yes unless ``MIRRORATTN_OPTIM_EAGER`` is set).
        compile_min_numel: smallest tensor (elements) sent to the compiled kernel.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        p: float,
        *,
        normalized: bool = False,
        eps: float = 1e-12,
        weight_decay: float = 0.0,
        maximize: bool = False,
        batch_dims: int = 0,
        foreach: bool | None = None,
        nonfinite: str = "raise",
        compile: bool | None = None,
        compile_min_numel: int = COMPILE_MIN_NUMEL,
    ) -> None:
        if nonfinite not in _NONFINITE_CHOICES:
            raise ValueError(f"nonfinite must be one of {_NONFINITE_CHOICES}, got {nonfinite!r}")
        if not (isinstance(compile_min_numel, int) and compile_min_numel >= 1):
            raise ValueError(f"compile_min_numel must be an int >= 1, got {compile_min_numel!r}")
        defaults = dict(lr=lr, p=p, normalized=normalized, eps=eps, weight_decay=weight_decay, maximize=maximize,
                        batch_dims=batch_dims)
        _check_group(defaults)
        defaults.update(normalized=bool(normalized), maximize=bool(maximize))
        self.foreach = True if foreach is None else bool(foreach)
        self.lean = foreach is None
        self.nonfinite = nonfinite
        self.compile = compile
        self.compile_min_numel = compile_min_numel
        self.skipped_steps = 0
        self.last_step_paths: dict[str, int] = {}
        self._stamps: dict[torch.Tensor, tuple[int, int]] = {}
        self._gmax: dict[int, torch.Tensor] = {}  # id(gradient) -> max|gradient|, of the current step's check
        self._gpow: dict[int, torch.Tensor] = {}  # id(gradient) -> sum |gradient|^q, of the current step's check
        self._lean_plan: list | None = None  # the lean step's plan (``_lean``)
        super().__init__(params, defaults)

    # -- plumbing -------------------------------------------------------------------------------

    _EXTRA = ("foreach", "lean", "nonfinite", "compile", "compile_min_numel", "skipped_steps")

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update({k: getattr(self, k) for k in self._EXTRA})
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("foreach", True)
        self.__dict__.setdefault("lean", True)
        self.__dict__.setdefault("nonfinite", "raise")
        self.__dict__.setdefault("compile", None)
        self.__dict__.setdefault("compile_min_numel", COMPILE_MIN_NUMEL)
        self.__dict__.setdefault("skipped_steps", 0)
        self.last_step_paths = {}
        self._gmax, self._gpow = {}, {}
        self._lean_plan = None
        self._stamps = {}  # forces the (cheap, one-off) check of every weight against its dual

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self._lean_plan = None
        super().add_param_group(param_group)
        try:
            _check_group(self.param_groups[-1])
            _check_eps(self.param_groups[-1], self.param_groups[-1]["params"])
            _check_batch_dims(self.param_groups[-1])
        except ValueError:
            self.param_groups.pop()  # a refused group is not kept
            raise

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict; the dual variables keep their own dtype (float32/float64) and are copied.

        ``ValueError`` (nothing loaded) unless it is an LpMirrorDescent state for these parameters: every
        group carries this optimizer's hyper-parameters (:data:`GROUP_KEYS`, valid values), the groups hold
        as many parameters as ours, and each parameter's state holds only ``dual`` (of the parameter's
        shape), ``p`` and ``step``. A group saved without an option of :data:`OPTIONAL_GROUP_KEYS` (a state
        saved before it existed) keeps this optimizer's value of it.
        """
        id_map = self._check_state_dict(state_dict)
        self._lean_plan = None
        duals = {id_map[k]: v["dual"] for k, v in state_dict["state"].items() if k in id_map and "dual" in v}
        kept = [{k: g[k] for k in OPTIONAL_GROUP_KEYS if k in g} for g in self.param_groups]
        super().load_state_dict(state_dict)
        for group, values in zip(self.param_groups, kept):
            for k, v in values.items():
                group.setdefault(k, v)
        for param, d in duals.items():
            self.state[param]["dual"] = d.detach().to(device=param.device, dtype=dual_dtype(param.dtype), copy=True)
        self._stamps = {}

    def _check_state_dict(self, state_dict: Any) -> dict[Any, torch.Tensor]:
        """Validate ``state_dict`` (see :meth:`load_state_dict`); returns saved parameter id -> our parameter."""
        what, fix = "this state dict is not an LpMirrorDescent state", (
            "load a state saved by LpMirrorDescent.state_dict() for the same parameters")
        groups = state_dict.get("param_groups") if isinstance(state_dict, dict) else None
        state = state_dict.get("state") if isinstance(state_dict, dict) else None
        if not isinstance(groups, list) or not isinstance(state, dict) or \
                not all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups):
            raise ValueError(f"{what} (it needs 'state' and 'param_groups' with 'params'); {fix}")
        for gi, g in enumerate(groups):
            missing = [k for k in GROUP_KEYS if k not in g]
            if missing:
                raise ValueError(f"{what} (it lacks {missing[0]!r}); {fix}")
            try:
                _check_group(g)
                if gi < len(self.param_groups):
                    ours = self.param_groups[gi]
                    _check_eps(g, ours["params"])
                    _check_batch_dims({"params": ours["params"], "batch_dims": g.get("batch_dims",
                                                                                      ours.get("batch_dims", 0))})
            except ValueError as exc:
                raise ValueError(f"state dict param_groups[{gi}]: {exc}") from None
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError(f"the state dict's groups hold {[len(g['params']) for g in groups]} parameters, this "
                             f"optimizer's {[len(g['params']) for g in self.param_groups]}; {fix}")
        id_map = dict(zip(chain.from_iterable(g["params"] for g in groups),
                          chain.from_iterable(g["params"] for g in self.param_groups)))
        for k, v in state.items():
            extra = sorted(set(v) - _STATE_KEYS) if isinstance(v, dict) else ["(not a dict)"]
            if extra:
                raise ValueError(f"{what} (the state of parameter {k!r} holds {extra[0]!r}, which LpMirrorDescent "
                                 f"does not keep); {fix}")
            d, param = v.get("dual"), id_map.get(k)
            if d is not None and param is not None and not (
                    isinstance(d, torch.Tensor) and d.is_floating_point() and d.shape == param.shape):
                got = f"shape {tuple(d.shape)} ({d.dtype})" if isinstance(d, torch.Tensor) else type(d).__name__
                raise ValueError(f"the state dict's dual variable of parameter {k!r} is {got}, but the parameter has "
                                 f"shape {tuple(param.shape)}; {fix}")
        return id_map

    @property
    def use_compile(self) -> bool:
        """Whether large tensors go through the compiled kernel (constructor flag and environment)."""
        return self.compile is not False and not K.compile_disabled()

    @torch.no_grad()
    def resync_dual(self, params: Iterable[torch.Tensor] | None = None) -> None:
        """Recompute the dual variable from the current weights (all, or those in ``params``)."""
        chosen = None if params is None else {id(t) for t in params}
        self._lean_plan = None
        for group in self.param_groups:
            for param in group["params"]:
                if chosen is not None and id(param) not in chosen:
                    continue
                st = self.state.get(param)
                if st and "dual" in st:
                    st["dual"] = self._init_dual(param, check_p(group["p"]))
                    self._stamp(param)

    # -- helpers --------------------------------------------------------------------------------

    @staticmethod
    def _init_dual(param: torch.Tensor, p: float, numpy: bool = False) -> torch.Tensor:
        """u = sign(w)|w|^(p-1) in the dual dtype (``numpy``: by the NumPy mirror map, for a CPU weight);
        ``ValueError`` if it is not finite (runs once per weight, not every step: at the first step, after a
        change of p, or when the weight was written)."""
        w = param.detach().to(dual_dtype(param.dtype))
        if numpy:
            u = torch.from_numpy(np.ascontiguousarray(mirror_map(w.numpy(), p)))
        else:
            u = mirror_map(w, p).contiguous()
        if u.numel() and not bool(torch.isfinite(u).all()):
            if not bool(torch.isfinite(w).all()):
                why = "the weight holds NaN or inf"
            else:
                top = float(w.abs().max())
                limit = math.exp(math.log(torch.finfo(u.dtype).max) / (p - 1.0))
                why = (f"|w| reaches {top:.4g}, but |w|^(p-1) overflows {u.dtype} above |w| = {limit:.4g}; "
                       "use a smaller p or smaller weights")
            raise ValueError(f"LpMirrorDescent: the dual variable sign(w)|w|^(p-1) of a parameter of shape "
                             f"{tuple(param.shape)} ({param.dtype}) is not finite for p = {p:g}: {why}")
        return u

    def _stamp(self, param: torch.Tensor) -> None:
        self._stamps[param] = (param._version, param.data_ptr())

    def _name(self, gi: int, group: dict[str, Any], pi: int, param: torch.Tensor) -> str:
        names = group.get("param_names")
        if names is not None and pi < len(names):
            return f"'{names[pi]}'"
        return f"param_groups[{gi}]['params'][{pi}] (shape {tuple(param.shape)}, dtype {param.dtype})"

    def _check_finite(self, found: list[tuple[int, int, torch.Tensor, torch.Tensor]]) -> bool:
        """True if every gradient is finite; otherwise raise or (skip mode) return False (``_finite``)."""
        return _finite.check_finite(self, found)

    # -- the step -------------------------------------------------------------------------------

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One mirror-descent step on every parameter with a gradient; returns ``closure()``'s loss.

        The lean step (``_lean``: small CPU tensors in NumPy, planned at the previous step) when its plan holds
        and nothing needs torch.optim's wrapper (hooks, a profiler); else the general step, through the wrapper.
        """
        if closure is None and self._lean_plan is not None and not _lean.hooks_active(self) \
                and _lean.step(self, self._lean_plan):
            return None
        return self._wrapped_step(closure)

    step.hooked = True  # type: ignore[attr-defined]  # torch.optim wraps _general_step instead (below)

    @torch.no_grad()
    def _general_step(self, closure: Callable[[], Any] | None = None) -> Any:
        """The step of every path, with every check (see the class documentation); plans the lean step."""
        self._lean_plan = None
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        found: list[tuple[int, int, torch.Tensor, torch.Tensor]] = []
        for gi, group in enumerate(self.param_groups):
            _check_group(group)
            _check_batch_dims(group)
            for pi, param in enumerate(group["params"]):
                g = param.grad
                if g is None or param.numel() == 0:  # nothing to update (and no norm of an empty gradient)
                    continue
                if g.is_sparse:
                    g = _coalesced(g, self._name(gi, group, pi, param))
                if not param.is_floating_point():
                    raise TypeError(f"LpMirrorDescent needs real floating-point parameters, "
                                    f"got {self._name(gi, group, pi, param)}")
                found.append((gi, pi, param, g))
        paths: dict[str, int] = defaultdict(int)
        if found and _sharded.check_finite(self, found):  # DTensor (FSDP2) gradients: a check over processes
            by_group: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = defaultdict(list)
            for gi, _, param, g in found:
                by_group[gi].append((param, g))
            for gi, items in by_group.items():
                _sharded.step(self, gi, items, paths)  # DTensor parameters on their shards, the rest: _step_group
        self.last_step_paths = dict(paths)
        self._gmax, self._gpow = {}, {}  # ids are only valid while this step's gradients are alive
        if self.lean and paths and set(paths) <= {"foreach", "numpy", "sparse"}:  # a step taken by small tensors only
            self._lean_plan = _lean.plan(self)
        return loss

    _wrapped_step = torch.optim.Optimizer.profile_hook_step(_general_step)

    def _prepare(self, param: torch.Tensor, p: float, kind: K.Kind, numpy: bool = False) -> torch.Tensor:
        """The up-to-date dual variable of ``param`` (created or recomputed when needed; ``numpy``: by the NumPy
        mirror map)."""
        st = self.state[param]
        st["step"] = st.get("step", 0) + 1
        u = st.get("dual")
        if u is None or st.get("p") != p or u.shape != param.shape or u.dtype != dual_dtype(param.dtype) \
                or u.device != param.device:
            u = st["dual"] = self._init_dual(param, p, numpy)
            st["p"] = p
        elif self._stamps.get(param) != (param._version, param.data_ptr()):
            implied = signed_pow(u, kind).to(param.dtype)
            fi = torch.finfo(param.dtype)
            rtol = 4 * fi.eps
            if kind[0] in ("pow", "third"):  # the compiled kernels' exp2(e log2|u|), cube root differ more
                rtol = max(rtol, 64 * torch.finfo(u.dtype).eps)
            if not torch.allclose(implied, param, rtol=rtol, atol=fi.tiny):
                u = st["dual"] = self._init_dual(param, p, numpy)
        return u

    def _step_group(self, group: dict[str, Any], items: list[tuple[torch.Tensor, torch.Tensor]],
                    paths: dict[str, int]) -> None:
        p = check_p(group["p"])
        lr = float(group["lr"])
        wd = float(group["weight_decay"])
        eps = float(group["eps"])
        normalized = bool(group["normalized"])
        maximize = bool(group["maximize"])
        bd = group.get("batch_dims", 0)
        kind, q = K.exponents(p)
        if normalized and (bd or (self.lean and kind[0] != "identity")):
            # the small CPU tensors in NumPy: with batch_dims its per-slice norms; with the lean step on, also the
            # arithmetic of the lean step (``_lean``), so that a step of either path rounds alike and a run
            # restored from its checkpoint (whose first step is a general one) continues bit for bit
            items = self._sliced_numpy(items, p, kind, q, lr, wd, eps, maximize, bd, paths)
        direct, dual = self._route(items, p, kind, lr, wd != 0.0 or normalized, maximize, paths)
        if direct:
            self._direct_step(direct, lr, wd, eps, normalized, maximize, bd)
            paths["direct"] += len(direct)
        if not dual:
            return

        if normalized:
            # one coefficient per slice (batch_dims > 0) is the eager path's: the compiled kernels take one per tensor
            rest = list(range(len(dual))) if bd else self._compiled_normalized(dual, kind, q, lr, wd, eps, maximize,
                                                                                paths)
            gs, alphas = [], []
            for param, g, u in (dual[i] for i in rest):
                ge = g.to(u.dtype)
                ge = -ge if maximize else ge
                if wd != 0.0:
                    ge = ge.add(param.to(u.dtype), alpha=wd)
                gs.append(ge)
                alphas.append(lr / (lp_norms(ge, q, bd) + eps))
        else:
            gs, alphas = [g for _, g, _ in dual], None
            rest = self._compiled_update(dual, gs, -lr if maximize else lr, lr * wd, kind, paths)
            gs = [gs[i] for i in rest]

        eager: dict[tuple, list[int]] = defaultdict(list)
        for j, i in enumerate(rest):  # j: position in gs / alphas, i: in dual
            param, _, u = dual[i]
            eager[(param.device, param.dtype, u.dtype)].append(j)
        for idx in eager.values():
            us = [dual[rest[j]][2] for j in idx]
            ws = [dual[rest[j]][0] for j in idx]
            gl = [gs[j] for j in idx]
            if alphas is None:
                K.eager_step(us, ws, gl, lr, maximize, wd, kind, self.foreach)
            else:
                K.eager_step(us, ws, gl, [alphas[j] for j in idx], False, 0.0, kind, self.foreach)
            paths["foreach" if self.foreach else "loop"] += len(idx)

        for param, _, _ in dual:
            self._stamp(param)

    def _sliced_numpy(self, items: list[tuple[torch.Tensor, torch.Tensor]], p: float, kind: K.Kind, q: float,
                      lr: float, wd: float, eps: float, maximize: bool, bd: int,
                      paths: dict[str, int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The normalised step (any ``batch_dims`` = bd) of the dense CPU float32/float64 tensors below
        ``compile_min_numel`` elements, in NumPy on views of the tensors (``_kernels.numpy_step``; their
        duals come from the NumPy mirror map, so all their arithmetic is ``mirrorattn.mirror``'s NumPy functions;
        the weight's version counter moves as an in-place torch op would). Returns the items left to the torch
        paths."""
        rest = []
        for param, g in items:
            if not (_lean.qualifies(self, param) and g.is_cpu and g.layout == torch.strided):
                rest.append((param, g))
                continue
            u = None if self._direct_state(param, p, kind) else self._prepare(param, p, kind, numpy=True).numpy()
            w = param.numpy(force=True)  # a view: no neg bit (checked), real, on the CPU
            K.numpy_step(u, w, g.numpy(force=True).astype(w.dtype, copy=False), lr, kind, normalized=True, eps=eps, q=q,
                         batch_dims=bd, wd=wd, maximize=maximize)
            torch.autograd.graph.increment_version(param)
            self._stamps[param] = (param._version, param.data_ptr())
            paths["numpy"] += 1
        return rest

    def _direct_state(self, param: torch.Tensor, p: float, kind: K.Kind) -> bool:
        """True for p = 2 with a float32/64 weight (u is w: no dual variable is kept; the state is updated here)."""
        if kind[0] != "identity" or dual_dtype(param.dtype) != param.dtype:
            return False
        st = self.state[param]
        st.pop("dual", None)
        st["p"] = p
        st["step"] = st.get("step", 0) + 1
        return True

    def _compiled_lists(self, dual: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
                        ) -> tuple[dict[tuple, list[int]], list[int]]:
        """Indices into ``dual`` of the tensors the compiled kernels take (at least ``compile_min_numel``
        elements, contiguous, on CPU/CUDA, compilation on) by device and dtype combination, and of the rest."""
        lists: dict[tuple, list[int]] = defaultdict(list)
        rest: list[int] = []
        use = None  # looked up once, and only when a tensor is large enough to need it
        for i, (param, g, u) in enumerate(dual):
            if param.numel() >= self.compile_min_numel and param.device.type in ("cpu", "cuda") \
                    and param.is_contiguous() and g.is_contiguous() and u.is_contiguous() \
                    and (use := self.use_compile if use is None else use):
                lists[(param.device, param.dtype, u.dtype, g.dtype, param.dim())].append(i)  # rank: see K._run_chunks
            else:
                rest.append(i)
        return lists, rest

    def _compiled_normalized(self, dual: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], kind: K.Kind,
                             q: float, lr: float, wd: float, eps: float, maximize: bool,
                             paths: dict[str, int]) -> list[int]:
        """The normalised step of the tensors the compiled kernels take: the coefficients alpha = lr / (||d||_q +
        eps) of d = (-g if maximize else g) + wd w from one compiled call per chunk, then the plain kernel with
        u <- u - (+-alpha g + alpha wd w). Returns the indices into ``dual`` left to the eager path."""
        lists, rest = self._compiled_lists(dual)
        for (device, _, udtype, *_), idx in lists.items():
            coef = torch.tensor([lr, wd, eps], dtype=torch.float64, device=device)
            ws, gs = [dual[i][0] for i in idx], [dual[i][1] for i in idx]
            qkind = exponent_kind(q)
            if wd == 0.0 and id(gs[0]) not in self._gpow and K.scratch_applies(qkind, gs[0], ws[0]):
                sums = K.scratch_pow_sums(qkind, gs, ws)  # overwrites ws: the update below rewrites them
                self._gpow.update({} if sums is None else {id(g): s for g, s in zip(gs, sums)})
            alphas = _finite.alphas_from_sums(self, gs, q, lr, eps, udtype) if wd == 0.0 else None
            if alphas is None:
                alphas = K.compiled_alphas(q, wd != 0.0, maximize, ws, gs, coef, udtype, _finite.grad_maxima(self, gs))
            done = 0 if alphas is None else K.compiled_multi_step(
                kind, wd != 0.0, [dual[i][2] for i in idx], ws, gs, -alphas if maximize else alphas, alphas * wd)
            paths["compiled"] += done
            rest += idx[done:]
        return sorted(rest)

    def _compiled_update(self, dual: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], gs: list[torch.Tensor],
                         signed_lr: float, beta: float, kind: K.Kind, paths: dict[str, int]) -> list[int]:
        """The plain step u <- u - (signed_lr g + beta w) of the tensors the compiled kernels take, one
        multi-tensor call per chunk of a device and dtype combination; returns the indices into ``dual`` left
        to the eager path."""
        lists, rest = self._compiled_lists(dual)
        for (device, *_), idx in lists.items():
            a_t = torch.full((len(idx),), signed_lr, dtype=torch.float64, device=device)
            b_t = torch.full((len(idx),), beta, dtype=torch.float64, device=device)
            done = K.compiled_multi_step(kind, beta != 0.0, [dual[i][2] for i in idx], [dual[i][0] for i in idx],
                                         [gs[i] for i in idx], a_t, b_t)
            paths["compiled"] += done
            rest += idx[done:]
        return sorted(rest)

    def _route(self, items: list[tuple[torch.Tensor, torch.Tensor]], p: float, kind: K.Kind, lr: float,
               dense_only: bool, maximize: bool, paths: dict[str, int]) -> tuple[list, list]:
        """Sparse gradients are applied here (rows of the batch only); the rest is split into the direct
        (p = 2, no dual variable) and the dual-variable parameters: ``(direct, dual)``. ``dense_only``
        (weight decay moves every row, normalisation needs the whole gradient): sparse ones become dense."""
        direct: list[tuple[torch.Tensor, torch.Tensor]] = []
        dual: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for param, g in items:
            if g.is_sparse and dense_only:
                g = g.to_dense()
            if g.is_sparse:
                self._sparse_step(param, g, p, kind, lr, maximize)
                paths["sparse"] += 1
            elif self._direct_state(param, p, kind):
                direct.append((param, g))
            else:
                dual.append((param, g, self._prepare(param, p, kind)))
        return direct, dual

    def _sparse_step(self, param: torch.Tensor, g: torch.Tensor, p: float, kind: K.Kind, lr: float,
                     maximize: bool) -> None:
        """The step for a coalesced sparse (COO, one row per index) gradient: only its rows move.

        A row absent from ``g`` has gradient 0, and without weight decay or normalisation its update is
        u <- u - lr * 0 = u, w = w: it is not touched at all (bit for bit). The rows present go through the
        kernel the dense step would use for this tensor (compiled for a large one, else eager), so they get
        the dense step's arithmetic. p = 2 with float32/64 weights (u is w) is ``param.add_(g, alpha=-lr)``,
        the update ``torch.optim.SGD`` makes with a sparse gradient.
        """
        if self._direct_state(param, p, kind):
            param.add_(g, alpha=lr if maximize else -lr)
            return
        u = self._prepare(param, p, kind)
        rows, vals = g._indices()[0], g._values().contiguous()
        u_rows, w_rows = u.index_select(0, rows), param.index_select(0, rows)
        big = param.numel() >= self.compile_min_numel and param.device.type in ("cpu", "cuda") and self.use_compile
        if not (big and K.compiled_one(kind, False, u_rows, w_rows, vals, -lr if maximize else lr, 0.0)):
            # no kernel (small tensor, compile off, compilation failed: then the rows are unchanged)
            K.eager_step([u_rows], [w_rows], [vals], lr, maximize, 0.0, kind, self.foreach)
        u.index_copy_(0, rows, u_rows)
        param.index_copy_(0, rows, w_rows)
        self._stamp(param)

    def _direct_step(self, items: list[tuple[torch.Tensor, torch.Tensor]], lr: float, wd: float, eps: float,
                     normalized: bool, maximize: bool, batch_dims: int = 0) -> None:
        """p = 2 with float32/64 weights: u is w, and the step is SGD's (same ops, same order)."""
        groups: dict[tuple, list[tuple[torch.Tensor, torch.Tensor]]] = defaultdict(list)
        for param, g in items:
            groups[(param.device, param.dtype)].append((param, g))
        for pairs in groups.values():
            ps = [param for param, _ in pairs]
            gs = [g for _, g in pairs]
            # the non-finite check's sums of g^2 where it has them (normalised, no weight decay, large tensors)
            known = None
            if normalized and not batch_dims and wd == 0.0 and any(id(g) in self._gpow for g in gs):
                known = _finite.norms_from_sums(self, gs, 2.0, ps[0].dtype).to(ps[0].dtype)
            if self.foreach:
                if maximize:
                    gs = torch._foreach_neg(gs)
                if wd != 0.0:
                    if maximize:
                        torch._foreach_add_(gs, ps, alpha=wd)
                    else:
                        gs = torch._foreach_add(gs, ps, alpha=wd)
                if normalized:
                    norms = known if known is not None else [lp_norms(g, 2.0, batch_dims) for g in gs]
                    gs = torch._foreach_mul(gs, [1.0 / (n + eps) for n in norms])
                torch._foreach_add_(ps, gs, alpha=-lr)
            else:
                for j, (param, g) in enumerate(zip(ps, gs)):
                    g = -g if maximize else g
                    if wd != 0.0:
                        g = g.add(param, alpha=wd)
                    if normalized:
                        g = g * (1.0 / ((known[j] if known is not None else lp_norms(g, 2.0, batch_dims)) + eps))
                    param.add_(g, alpha=-lr)
