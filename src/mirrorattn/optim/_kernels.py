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
  (one specialisation per dtype combination). Kernels are cached at module level (``_compile``). On a CPU, the
  ``third`` kinds (p = 1.75) take two vectorised passes instead (``_cbrt.split_multi_step``: inductor does not
  vectorise the bit casts of the cube root's first guess).

The normalised step's dual norm ||g||_q comes from the non-finite check's pass over g where it can (the unscaled
sum |g|^q: :func:`compiled_pow_sums`, q = 3/2, 2, ...), else from max|g| and the scaled sum (:func:`compiled_alphas`;
q = 11), or, for a ``third`` q on a CPU, from two passes that use the weight's memory as scratch
(``_cbrt.scratch_pow_sums``).

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

import functools
from typing import Callable, Sequence

import numpy as np
import torch

from mirrorattn.mirror import (
    Kind,
    dual_exponent,
    exponent_kind,
    inverse_exponent,
    lp_norms,
    signed_pow,
    signed_pow_list,
)

from ._cbrt import (  # noqa: F401 (scratch_*: the optimizer's, through this module)
    _CBRT_MAGIC,
    cbrt_halley,
    scratch_applies,
    scratch_pow_sums,
    signed_third_pow,
    split_applies,
    split_multi_step,
)
from ._compile import (  # noqa: F401 (EAGER_ENV, CHUNKS, _CACHE, _FAILED, compile_disabled: re-exported)
    _CACHE,
    _FAILED,
    CHUNKS,
    EAGER_ENV,
    _cached_compile,
    _concat_chunks,
    _guarded,
    _name_kernel,
    _per_list,
    _run_chunks,
    _tag,
    compile_disabled,
)


def dual_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the dual variable for a weight of ``dtype``: float64 stays, anything smaller -> float32."""
    return torch.promote_types(dtype, torch.float32)


@functools.lru_cache(maxsize=256)
def exponents(p: float) -> tuple[Kind, float]:
    """(kind of the inverse-map exponent 1/(p-1), dual exponent q) for a checked p; cached."""
    return exponent_kind(inverse_exponent(p)), dual_exponent(p)


def kernel_signed_pow(u: torch.Tensor, kind: Kind) -> torch.Tensor:
    """sign(u) |u|^e inside the compiled kernels: ``mirrorattn.mirror.signed_pow`` except for two kinds whose
    ``pow`` is slow in a compiled loop (tested against it): ``third`` exponents use :func:`cbrt_halley` (a few
    ulp), ``pow`` is computed as exp2(e * log2|u|) - about twice as fast as ``pow`` on AVX2 CPUs, at a relative
    error of about |e log2|u|| units in the last place (float64: ~1e-14 relative; float32: ~1e-6 at worst).
    """
    k = kind[0]
    if k == "third" and u.dtype in _CBRT_MAGIC:
        return signed_third_pow(u, kind)
    if k == "pow":
        return torch.copysign(torch.exp2(kind[1] * torch.log2(u.abs())), u)
    return signed_pow(u, kind)


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
    g) + wd * w, as an (n,) float64 tensor (computed in the dual's dtype ``udtype``).

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
            # the sum in udtype: a float64 sum of float32 terms was 20-30 % faster on an AMD EPYC (AVX2), and is
            # twice as slow on an AVX-512 Xeon (q = 11, 4.19 M weights, one thread: 3.0 ms against 1.6 ms)
            norm = x.sum().pow(1.0 / q) * m
            out.append(c[0] / (norm + c[2]))
        return torch.stack(out).to(torch.float64)

    return _name_kernel(body, f"lpmd_alphas{n}_q{_tag(qkind)}_{'wd' if has_wd else 'nowd'}{'_max' if maximize else ''}")


def compiled_multi_step(
    kind: Kind, has_beta: bool, us: Sequence[torch.Tensor], ws: Sequence[torch.Tensor],
    gs: Sequence[torch.Tensor], alphas: torch.Tensor, betas: torch.Tensor,
) -> int:
    """The compiled step u <- u - (alphas[i] g + betas[i] w), w <- sign(u)|u|^e on lists of contiguous tensors of
    one device and dtype combination, in chunks of :data:`CHUNKS`; ``alphas``, ``betas``: (n,) float64 tensors.

    Returns how many tensors (from the start of the lists) were updated: all of them, or fewer when a kernel
    could not be compiled (it is then marked failed and the caller steps the rest eagerly)."""
    n = len(us)
    if n and split_applies(kind, us[0], ws[0]):
        return split_multi_step(kind, has_beta, us, ws, gs, alphas, betas)

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
    return [m if m is not None else abs_max(g) for m, g in zip(_per_list(gs, compiled_abs_max), gs)]


def pow_sums(q: float, gs: Sequence[torch.Tensor]) -> list[torch.Tensor | None]:
    """sum |g|^q of each tensor (0-d float64 tensors, :func:`compiled_pow_sums`) where the compiled kernel takes it,
    None elsewhere."""
    return _per_list(gs, lambda lst: compiled_pow_sums(q, lst))


def _pow_sum_body(qkind: Kind, n: int) -> Callable[..., torch.Tensor]:
    """sum |g|^q of ``n`` flat tensors, unscaled, as an (n,) float64 tensor, computed and summed in the dual's dtype
    (float64 for a float64 g, else float32); inf where |g|^q overflows, NaN where g holds a NaN."""

    def body(gs: list[torch.Tensor]) -> torch.Tensor:
        out = []
        for i in range(n):
            a = gs[i].to(dual_dtype(gs[i].dtype)).abs()
            out.append(kernel_signed_pow(a, qkind).sum().to(torch.float64))
        return torch.stack(out)

    return _name_kernel(body, f"lpmd_powsum{n}_q{_tag(qkind)}")


def pow_sum_wins(q: float) -> bool:
    """Whether the non-finite check computes sum |g|^q for the normalised step's dual norm (:func:`compiled_pow_sums`,
    one pass over g for both) rather than max|g| for the scaled sum (:func:`compiled_alphas`: two passes). Not for a
    whole q above 2: unscaled, |g|^q leaves float32's range for ordinary gradients (q = 11: below |g| = 1.5e-3),
    and in float64 the pass costs more than the two float32 ones (on 4.19 M float32 entries, one thread, AVX-512
    Xeon: q = 11 6.5 ms against 0.9 + 3.0 ms; q = 3/2 1.4 ms against 1.0 + 1.8 ms). Not for a ``third`` q (7/3 for
    p = 1.75), whose cube root is slow in one pass: the step computes that sum itself, with the weight's memory as
    scratch (``_cbrt.scratch_pow_sums``; 13.2 ms in one pass)."""
    kind = exponent_kind(q)[0]
    return kind not in ("int", "third") or q == 2.0


def pow_sum_floor(g: torch.Tensor) -> float:
    """The least sum of :func:`compiled_pow_sums` from which ||g||_q = sum^(1/q) is as exact as the scaled
    (max|g|-divided) one: its largest term is then at least 2^24 times the smallest normal number of the dtype it
    was computed in, and the terms that underflow are too small to change the sum."""
    return max(g.numel(), 1) * torch.finfo(dual_dtype(g.dtype)).tiny * 2.0 ** 24


def compiled_pow_sums(q: float, gs: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """sum |g|^q of each of a list of contiguous tensors of one device, dtype and rank, unscaled, as an (n,) float64
    tensor, in chunks of :data:`CHUNKS` (:func:`_pow_sum_body`): the normalised step's dual norm and its non-finite
    check in one pass over the gradient (before, max|g| in one pass and the scaled sum in another). Where a sum is
    not finite or below :func:`pow_sum_floor` (g holds NaN or inf, or |g|^q over- or underflows), the caller checks
    g exactly and takes the scaled norm. None when the kernel could not be compiled."""
    qkind = exponent_kind(q)

    def chunk(i: int, k: int) -> object:
        key = ("powsum", qkind, k)
        return _guarded(key, _cached_compile(key, lambda: _pow_sum_body(qkind, k)), [g.view(-1) for g in gs[i:i + k]])

    return _concat_chunks(len(gs), chunk)


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
