"""Elementwise kernels of the l_p mirror-descent step: exponent fast paths, eager and compiled.

The step on one tensor, with ``u`` the dual variable (float32 or float64), ``w`` the weight (any
float dtype), ``g`` the gradient and 0-d coefficients ``alpha`` and ``beta``:

    u <- u - (alpha * g + beta * w)
    w <- sign(u) |u|^e,        e = 1 / (p - 1)

Two implementations compute it:

- eager: a chain of (``torch._foreach_*`` or per-tensor) ops, with temporaries; always available;
- compiled: one ``torch.compile``'d elementwise function per exponent kind and list length (a chunk of 8, 4,
  2 or 1 tensors: :func:`compiled_multi_step`; one tensor: :func:`compiled_one`) that mutates ``u`` and ``w``
  in place; inductor fuses it into a single loop per tensor that reads ``u, g`` (and ``w`` when
  ``beta != 0``) once and writes ``u, w`` once, with no temporaries. Tensors are passed flattened
  and compiled with dynamic shapes, so one kernel serves every size; dtypes are guarded by dynamo
  (one specialisation per dtype combination). Kernels are cached at module level.

Exponent kinds (``mirrorattn.mirror.exponent_kind``; the eager arithmetic is ``mirrorattn.mirror.signed_pow``,
the compiled kernels' :func:`kernel_signed_pow` differs only where noted): ``identity`` (p = 2), ``int``
(1/(p-1) a whole number, e.g. p = 1.1 -> 10, p = 1.5 -> 2: repeated squaring, exact), ``halfint`` (n + 1/2: repeated
squaring times a square root), ``sqrt`` (p = 3), ``third`` (n + 1/3 or n + 2/3 with n >= 1, e.g.
p = 1.75 -> 4/3, p = 1.6 -> 5/3: repeated squaring times a cube root, which the compiled kernel
computes with a bit-level first guess and Halley steps in plain multiplies and one division - see
:func:`cbrt_halley`), and ``pow`` otherwise (the compiled kernel evaluates it as exp2(e log2|u|),
the eager path with ``pow``; so does the eager path for ``third``).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable, Sequence

import numpy as np
import torch
import torch.fx.experimental._config as _fx_config

from mirrorattn.mirror import Kind, exponent_kind, lp_norms, pow_int, signed_pow, signed_pow_list

log = logging.getLogger(__name__)

#: environment variable that, when set to 1/true/yes, disables torch.compile for the optimizer
EAGER_ENV = "MIRRORATTN_OPTIM_EAGER"

#: first guess of the cube root from the bit pattern: bits(x) / 3 + magic (per float dtype), and
#: the Halley steps that take the guess (<= 3.2 % off) to full precision (error cubes each step)
_CBRT_MAGIC = {torch.float32: (torch.int32, 709921077.0, 2),
               torch.float64: (torch.int64, float(0x2A9F7893782DA1CE), 3)}


def cbrt_halley(a: torch.Tensor) -> torch.Tensor:
    """Cube root of ``a >= 0`` (float32/float64) from elementwise multiplies and divisions only.

    The first guess reinterprets the bits of ``a`` as an integer, divides by 3 (in floating point,
    which vectorises; integer division does not) and adds a magic offset - the exponent of the
    result is a third of the exponent of ``a``, within 3.2 %. Halley's step
    y <- y (y^3 + 2a) / (2 y^3 + a) cubes the relative error, so two steps reach float32 precision
    and three float64 precision (measured: <= 3 ulp). Inside a compiled kernel this is about 2x
    faster than exp2(log2(a) / 3). For a = 0 the steps halve the guess instead of reaching 0, and
    for subnormal a the guess is poor: callers multiply by a (``third`` kinds have n >= 1), which
    makes both exact (0, or an underflow to 0). Valid for a below a third of the dtype's largest
    value (far above where |u|^(4/3) overflows).
    """
    itype, magic, steps = _CBRT_MAGIC[a.dtype]
    y = (a.view(itype).to(a.dtype) * (1.0 / 3.0) + magic).to(itype).view(a.dtype)
    for _ in range(steps):
        y3 = y * y * y
        y = y * ((y3 + 2.0 * a) / (2.0 * y3 + a))  # ratio first: no overflow below max/3
    return y


def kernel_signed_pow(u: torch.Tensor, kind: Kind) -> torch.Tensor:
    """sign(u) |u|^e inside the compiled kernels: ``mirrorattn.mirror.signed_pow`` except for two kinds whose
    ``pow`` is slow in a compiled loop (tested against it): ``third`` exponents use :func:`cbrt_halley` (a few
    ulp), ``pow`` is computed as exp2(e * log2|u|) - about twice as fast as ``pow`` on AVX2 CPUs, at a relative
    error of about |e log2|u|| units in the last place (float64: ~1e-14 relative; float32: ~1e-6 at worst).
    """
    k = kind[0]
    if k == "third" and u.dtype in _CBRT_MAGIC:
        a = u.abs()
        c = cbrt_halley(a)
        return torch.copysign(pow_int(a, kind[1]) * (c if kind[2] == 1 else c * c), u)
    if k == "pow":
        return torch.copysign(torch.exp2(kind[1] * torch.log2(u.abs())), u)
    return signed_pow(u, kind)


#: list lengths of the multi-tensor kernels: a list of tensors is cut into chunks of these sizes (largest
#: first), so that at most this many list lengths are ever compiled per kernel
CHUNKS = (8, 4, 2, 1)


def _name_kernel(body: Callable[..., object], name: str) -> Callable[..., object]:
    """Give ``body`` a code object of its own: dynamo keeps its compiled-graph cache (and its recompilation
    limit) per code object, and every kernel would otherwise share one."""
    body.__code__ = body.__code__.replace(co_name=name, co_qualname=name)
    body.__name__ = body.__qualname__ = name
    return body


def _tag(kind: Kind) -> str:
    return "_".join(str(x).replace(".", "p").replace("-", "m") for x in kind)


def _compiled_multi_body(kind: Kind, has_beta: bool, n: int) -> Callable[..., None]:
    """The elementwise step u <- u - (alphas[i] g + betas[i] w), w <- sign(u)|u|^e on ``n`` tensors in one call,
    mutating u and w in place: ``alphas`` and ``betas`` are (n,) float64 tensors (one coefficient per tensor).

    One call (one guard check, one C++ kernel with a loop per tensor) instead of n: the per-call overhead of a
    compiled function (~30 us on a CPU) is paid once per chunk. Each tensor gets the arithmetic of the one-tensor
    kernel it would get in a chunk of one (coefficients rounded to u's dtype, the same fused expression)."""

    def body(us: list[torch.Tensor], ws: list[torch.Tensor], gs: list[torch.Tensor], alphas: torch.Tensor,
             betas: torch.Tensor) -> None:
        for i in range(n):
            u, w = us[i], ws[i]
            gd = gs[i].to(u.dtype)
            if has_beta:
                u.sub_(alphas[i] * gd + betas[i] * w.to(u.dtype))
            else:
                u.sub_(alphas[i] * gd)
            w.copy_(kernel_signed_pow(u, kind))

    return _name_kernel(body, f"lpmd_multi{n}_{_tag(kind)}_{'wd' if has_beta else 'nowd'}")


def _compiled_alphas_body(qkind: Kind, q: float, has_wd: bool, maximize: bool, n: int) -> Callable[..., torch.Tensor]:
    """The normalised step's coefficients for ``n`` tensors: lr / (||d||_q + eps) with d = (-g if maximize else
    g) + wd * w, as an (n,) float64 tensor (computed in the dual's dtype ``udtype``; for a whole q the sum of |d/m|^q
    in float64).

    ||d||_q = (sum |d / m|^q)^(1/q) m with m = max|d| (so |d|^q cannot overflow or underflow: the eager
    ``mirrorattn.mirror.lp_norms``); |x|^q through the fast path of ``qkind``. Without weight decay m is max|g|,
    given in ``gmax`` ((n,), from the non-finite check); with it, a reduction of its own. The reductions are in a
    function of its own so that the scalar arithmetic is done once, not inside the update's loop. ``coef`` = (lr,
    weight decay, eps) as a float64 tensor: a new step size is not a recompilation."""

    def body(ws: list[torch.Tensor], gs: list[torch.Tensor], coef: torch.Tensor, udtype: torch.dtype,
             gmax: torch.Tensor) -> torch.Tensor:
        c = coef.to(udtype)
        out = []
        for i in range(n):
            d = gs[i].to(udtype)
            if maximize:
                d = -d
            if has_wd:
                d = d + c[1] * ws[i].to(udtype)
                m = d.abs().amax()
            else:  # max|g|, known from the non-finite check: one pass over g fewer
                m = gmax[i].to(udtype)
            m = m.clamp_min(torch.finfo(udtype).tiny)
            x = kernel_signed_pow((d * (1.0 / m)).abs(), qkind)
            # whole q: the sum in float64 - no cascade-sum helper around every float32 addition (20-30 % faster on
            # 4.19 M weights, and more exact); the cube roots and pows of other kinds hide the helper (measured:
            # float64 there is 10 % slower)
            norm = (x.to(torch.float64) if qkind[0] == "int" else x).sum().pow(1.0 / q) * m
            out.append(c[0] / (norm + c[2]))
        return torch.stack(out).to(torch.float64)

    return _name_kernel(body, f"lpmd_alphas{n}_q{_tag(qkind)}_{'wd' if has_wd else 'nowd'}{'_max' if maximize else ''}")


_CACHE: dict[tuple, Callable[..., None]] = {}
_FAILED: dict[tuple, str] = {}
_LOCK = threading.Lock()


def compile_disabled() -> bool:
    """True when compilation is switched off by the ``MIRRORATTN_OPTIM_EAGER`` environment variable."""
    return os.environ.get(EAGER_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _cached_compile(key: tuple, build: Callable[[], Callable[..., object]]) -> Callable[..., object] | None:
    """The compiled function cached under ``key`` (compiled from ``build()`` on first use), or None when
    compilation is off or failed for ``key``'s family (``key`` without its last entry, the chunk size)."""
    if key[:-1] in _FAILED or compile_disabled() or not hasattr(torch, "compile"):
        return None
    fn = _CACHE.get(key)
    if fn is None:
        with _LOCK:
            fn = _CACHE.get(key)
            if fn is None:
                fn = _CACHE[key] = torch.compile(build(), dynamic=True, fullgraph=True)
    return fn


def _run_chunks(n: int, call: Callable[[int, int], None]) -> int:
    """Call ``call(start, size)`` over chunks of :data:`CHUNKS` covering ``range(n)``, with sizes that are not
    duck-shaped (two tensors of equal size at the first call get symbols of their own, so a later list whose sizes
    coincide differently is not a recompilation; the ranks of the tensors the flat views come from are guarded,
    so callers keep one rank per list). Returns how many were done: ``n``, or the start of the chunk whose
    kernel could not be compiled (``call`` returns False; its key is then in ``_FAILED``)."""
    i = 0
    duck = _fx_config.use_duck_shape  # set and restored directly: ``patch()`` costs ~25 us a call
    _fx_config.use_duck_shape = False
    try:
        while i < n:
            k = next(c for c in CHUNKS if c <= n - i)
            if not call(i, k):
                return i
            i += k
    finally:
        _fx_config.use_duck_shape = duck
    return n


def _guarded(key: tuple, fn: Callable[..., object] | None, *args: object) -> object:
    """``fn(*args)``; on a failure (compilation unavailable: no compiler, unsupported backend ...) the key is
    marked failed (one warning) and None is returned."""
    if fn is None:
        return None
    try:
        out = fn(*args)
    except Exception as err:
        if key[:-1] not in _FAILED:  # one warning per family: no other chunk size is tried after a failure
            log.warning("torch.compile of the l_p mirror-descent kernel %s failed (%s: %s); using eager ops",
                        key, type(err).__name__, err)
        _FAILED[key[:-1]] = f"{type(err).__name__}: {err}"
        return None
    return out if out is not None else True


def compiled_multi_step(
    kind: Kind, has_beta: bool, us: Sequence[torch.Tensor], ws: Sequence[torch.Tensor],
    gs: Sequence[torch.Tensor], alphas: torch.Tensor, betas: torch.Tensor,
) -> int:
    """The compiled step u <- u - (alphas[i] g + betas[i] w), w <- sign(u)|u|^e on lists of contiguous tensors of
    one device and dtype combination, in chunks of :data:`CHUNKS`; ``alphas``, ``betas``: (n,) float64 tensors.

    Returns how many tensors (from the start of the lists) were updated: all of them, or fewer when a kernel
    could not be compiled (it is then marked failed and the caller steps the rest eagerly)."""
    n = len(us)

    def call(i: int, k: int) -> bool:
        key = ("multi", kind, has_beta, k)
        fn = _cached_compile(key, lambda: _compiled_multi_body(kind, has_beta, k))
        a, b = (alphas, betas) if k == n else (alphas[i:i + k].clone(), betas[i:i + k].clone())
        return _guarded(key, fn, [u.view(-1) for u in us[i:i + k]], [w.view(-1) for w in ws[i:i + k]],
                        [g.view(-1) for g in gs[i:i + k]], a, b) is not None

    return _run_chunks(n, call)


def _abs_max_body(n: int) -> Callable[..., torch.Tensor]:
    """max|g| of ``n`` flat tensors as an (n,) tensor of their dtype (NaN where one holds a NaN, inf for an inf)."""

    def body(gs: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([gs[i].abs().amax() for i in range(n)])

    return _name_kernel(body, f"lpmd_absmax{n}")


def compiled_abs_max(gs: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """max|g| of each of a list of contiguous tensors of one device, dtype and rank, as an (n,) tensor of their
    dtype, in chunks of :data:`CHUNKS`: the normalised step's scale and its non-finite check in one pass (on an
    idle AVX-512 Xeon 0.85 ms on 4.19 M float32 entries in 8 tensors, ``torch.aminmax`` 0.98 ms, a sum 0.66 ms;
    under load aminmax took up to 2.0 ms). None when the kernel could not be compiled (the caller computes it
    eagerly)."""

    def chunk(i: int, k: int) -> object:
        key = ("absmax", k)
        return _guarded(key, _cached_compile(key, lambda: _abs_max_body(k)), [g.view(-1) for g in gs[i:i + k]])

    return _concat_chunks(len(gs), chunk)


def abs_max(g: torch.Tensor) -> torch.Tensor:
    """max|g| as a 0-d tensor, NaN if g holds a NaN: one eager pass (``aminmax``; on CPUs several times faster
    than the inf-norm)."""
    lo, hi = torch.aminmax(g)
    return torch.maximum(hi, -lo)


def abs_maxima(gs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """max|g| of each tensor (0-d tensors): :func:`compiled_abs_max` on the contiguous CPU/CUDA ones, one call per
    device, dtype and rank; :func:`abs_max` for the rest and where the kernel could not be compiled."""
    out: list[torch.Tensor | None] = [None] * len(gs)
    lists: dict[tuple, list[int]] = {}
    for j, g in enumerate(gs):
        if g.is_contiguous() and g.device.type in ("cpu", "cuda"):
            lists.setdefault((g.device, g.dtype, g.dim()), []).append(j)
    for idx in lists.values():
        maxima = compiled_abs_max([gs[j] for j in idx])
        if maxima is not None:
            for t, j in enumerate(idx):
                out[j] = maxima[t]
    return [m if m is not None else abs_max(g) for m, g in zip(out, gs)]


def _concat_chunks(n: int, chunk: Callable[[int, int], object]) -> torch.Tensor | None:
    """The (n,) result of a reduction kernel run over the chunks of :func:`_run_chunks`: ``chunk(start, size)``
    returns its chunk's (size,) tensor, or None when its kernel could not be compiled (then None here too)."""
    parts: list[torch.Tensor] = []

    def call(i: int, k: int) -> bool:
        out = chunk(i, k)
        if out is not None:
            parts.append(out)
        return out is not None

    if _run_chunks(n, call) < n:
        return None
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def compiled_alphas(
    q: float, has_wd: bool, maximize: bool, ws: Sequence[torch.Tensor], gs: Sequence[torch.Tensor],
    coef: torch.Tensor, udtype: torch.dtype, gmax: torch.Tensor,
) -> torch.Tensor | None:
    """The normalised step's coefficients lr / (||d||_q + eps) of every tensor (:func:`_compiled_alphas_body`) as
    an (n,) float64 tensor, or None when the kernel could not be compiled (the caller goes eager). ``gmax``:
    max|g| per tensor ((n,); read only without weight decay)."""
    qkind = exponent_kind(q)

    def chunk(i: int, k: int) -> object:
        key = ("alphas", qkind, has_wd, maximize, k)
        fn = _cached_compile(key, lambda: _compiled_alphas_body(qkind, q, has_wd, maximize, k))
        return _guarded(key, fn, [w.view(-1) for w in ws[i:i + k]], [g.view(-1) for g in gs[i:i + k]], coef, udtype,
                        gmax if k == len(gs) else gmax[i:i + k].clone())

    return _concat_chunks(len(gs), chunk)


def compiled_one(kind: Kind, has_beta: bool, u: torch.Tensor, w: torch.Tensor, g: torch.Tensor,
                 alpha: float | torch.Tensor, beta: float) -> bool:
    """The compiled step of :func:`compiled_multi_step` on one contiguous tensor (a chunk of one); ``alpha`` a
    float or a 0-d tensor. False when no kernel could be compiled (nothing was changed then)."""
    a = alpha.detach().reshape(1) if isinstance(alpha, torch.Tensor) else torch.tensor([alpha], dtype=torch.float64)
    a = a.to(device=w.device, dtype=torch.float64)
    b = torch.tensor([beta], dtype=torch.float64, device=w.device)
    return compiled_multi_step(kind, has_beta, [u], [w], [g], a, b) == 1


def numpy_step(u: np.ndarray | None, w: np.ndarray, g: np.ndarray, lr: float, kind: Kind, *, normalized: bool,
               eps: float, q: float, batch_dims: int, wd: float, maximize: bool) -> None:
    """The step in NumPy, for small CPU tensors (a NumPy op costs ~1 us, an eager torch op several), on views of
    their memory: ``u`` and ``w`` are updated in place (``u`` None: p = 2, where u is w).

    d = (-g if maximize else g) + wd * w; with ``normalized`` d is divided by ||d_i||_q + eps per slice i of the
    first ``batch_dims`` dimensions (``mirrorattn.mirror.lp_norms``, on d / max|d_i|) as d * (lr / (norm + eps))
    (the coefficient first, as the torch paths), else lr * d; u <- u - that;
    w = sign(u)|u|^e by ``mirrorattn.mirror.signed_pow`` (the eager torch path's operations for e of ``kind``).
    """
    d = -g if maximize else g
    if wd != 0.0:
        d = d + wd * w
    step = d * (lr / (lp_norms(d, q, batch_dims) + eps) if normalized else lr)  # the torch paths' alpha * d
    if u is None:
        w -= step
    else:
        u -= step
        signed_pow(u, kind, out=w)


def coalesce_rows(g: torch.Tensor) -> torch.Tensor:
    """A sparse COO gradient (one sparse dimension, e.g. of ``nn.Embedding(..., sparse=True)``) with one entry
    per row, duplicates summed in their order from 0 - the sums (bit for bit) that the dense embedding
    gradient holds, which ``Tensor.coalesce()`` does not promise (it rounds differently)."""
    if g.is_coalesced():
        return g
    rows, inverse = torch.unique(g._indices()[0], sorted=True, return_inverse=True)
    values = g._values()
    summed = values.new_zeros((len(rows), *values.shape[1:])).index_add_(0, inverse, values)
    return torch.sparse_coo_tensor(rows[None], summed, g.shape, is_coalesced=True, check_invariants=False)


def eager_step(
    us: Sequence[torch.Tensor], ws: Sequence[torch.Tensor], gs: Sequence[torch.Tensor],
    lr: float | Sequence[torch.Tensor], maximize: bool, wd: float, kind: Kind, foreach: bool,
) -> None:
    """The same step with eager ops over lists of tensors (one dtype pair per call).

    The direction is ``d = (-g if maximize else g) + wd * w`` (rounded as torch.optim.SGD rounds
    it) and ``u <- u - lr * d``; ``lr`` is one float or one 0-d tensor per tensor (normalized
    mode). ``us`` are mutated in place and ``ws`` receive sign(u)|u|^e cast to their dtype.
    """
    if not us:
        return
    udt = us[0].dtype
    ds = [g if g.dtype == udt else g.to(udt) for g in gs]
    wcast = [w if w.dtype == udt else w.to(udt) for w in ws] if wd != 0.0 else None
    if foreach:
        us = list(us)
        if maximize:
            ds = torch._foreach_neg(ds)
        if wcast is not None:
            ds = torch._foreach_add(ds, wcast, alpha=wd)
        if isinstance(lr, float):
            torch._foreach_add_(us, ds, alpha=-lr)
        else:
            torch._foreach_sub_(us, torch._foreach_mul(ds, list(lr)))
        del ds
        if kind[0] in ("identity", "int"):
            torch._foreach_copy_(list(ws), signed_pow_list(us, kind))
        else:
            for u, w in zip(us, ws):
                signed_pow(u, kind, out=w)
        return
    for i, (u, w, d) in enumerate(zip(us, ws, ds)):
        if maximize:
            d = -d
        if wcast is not None:
            d = d.add(wcast[i], alpha=wd)
        if isinstance(lr, float):
            u.add_(d, alpha=-lr)
        else:
            u.sub_(d * lr[i])
        signed_pow(u, kind, out=w)
