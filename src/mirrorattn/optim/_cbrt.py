"""The cube root of the ``third`` exponent kinds (e = n + 1/3 or n + 2/3, e.g. p = 1.75 -> 4/3) in the compiled
kernels, and the CPU step that computes it in two passes.

:func:`cbrt_halley` takes a first guess from the bit pattern of ``a`` and refines it with Halley steps. Inside a
fused CPU kernel inductor does not vectorise bit casts (it emits a store, a scalar loop and a load for every 16
floats), and the guess's two casts (float -> int, int -> float) made the p = 1.75 step 2.4 times SGD's step.
:func:`split_multi_step` computes the same numbers in two passes, with the weight's own memory carrying the guess
from the first to the second, so that the int -> float cast is a load:

1. ``u <- u - (alpha g + beta w)`` and ``w.view(int) <- int(float(bits(|u|)) / 3 + magic)``, the guess's bits
   (with weight decay in a pass of its own, from an integer view of u);
2. Halley's steps from that guess (``w``, read as floats), and ``w <- sign(u) |u|^n * c`` (``c`` or ``c^2``).

Each pass is the arithmetic of the one-kernel step, in the same order: the weights are equal bit for bit (tested).
``benchmarks/optimizer_step.py`` (4.19 M float32 weights, one thread, AVX-512 Xeon): 1.67 times SGD's step
against 2.42 for the fused kernel; three passes (the float -> int cast a load too) were faster with warm caches
(5.5 against 5.8 ms) and slower in the benchmark, whose eleven optimizers evict each other's weights (1.78).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from mirrorattn.mirror import Kind, pow_int

from ._compile import _cached_compile, _concat_chunks, _guarded, _name_kernel, _run_chunks, _tag

#: first guess of the cube root from the bit pattern: bits(x) / 3 + magic (per float dtype), and
#: the Halley steps that take the guess (<= 3.2 % off) to full precision (error cubes each step)
_CBRT_MAGIC = {torch.float32: (torch.int32, 0x7FFFFFFF, 709921077.0, 2),
               torch.float64: (torch.int64, 0x7FFFFFFFFFFFFFFF, float(0x2A9F7893782DA1CE), 3)}


def _guess_bits(bits: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The integer bits of the cube root's first guess from the integer bits of a >= 0."""
    itype, _, magic, _ = _CBRT_MAGIC[dtype]
    return (bits.to(dtype) * (1.0 / 3.0) + magic).to(itype)


def _halley(a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Halley's steps y <- y (y^3 + 2a) / (2 y^3 + a) from the first guess ``y`` of the cube root of ``a``."""
    for _ in range(_CBRT_MAGIC[a.dtype][3]):
        y3 = y * y * y
        y = y * ((y3 + 2.0 * a) / (2.0 * y3 + a))  # ratio first: no overflow below max/3
    return y


def cbrt_halley(a: torch.Tensor) -> torch.Tensor:
    """Cube root of ``a >= 0`` (float32/float64) from elementwise multiplies and divisions only.

    The first guess reinterprets the bits of ``a`` as an integer, divides by 3 (in floating point,
    which vectorises; integer division does not) and adds a magic offset - the exponent of the
    result is a third of the exponent of ``a``, within 3.2 %. Halley's step
    y <- y (y^3 + 2a) / (2y^3 + a) cubes the relative error, so two steps reach float32 precision
    and three float64 precision (measured: <= 3 ulp). Inside a compiled kernel this is about 2x
    faster than exp2(log2(a) / 3). For a = 0 the steps halve the guess instead of reaching 0, and
    for subnormal a the guess is poor: callers multiply by a (``third`` kinds have n >= 1), which
    makes both exact (0, or an underflow to 0). Valid for a below a third of the dtype's largest
    value (far above where |u|^(4/3) overflows).
    """
    itype = _CBRT_MAGIC[a.dtype][0]
    return _halley(a, _guess_bits(a.view(itype), a.dtype).view(a.dtype))


def third_pow(a: torch.Tensor, c: torch.Tensor, kind: Kind) -> torch.Tensor:
    """|u|^e of a ``third`` kind from a = |u| and its cube root c: a^n c (n + 1/3) or a^n c^2 (n + 2/3)."""
    return pow_int(a, kind[1]) * (c if kind[2] == 1 else c * c)


def signed_third_pow(u: torch.Tensor, kind: Kind) -> torch.Tensor:
    """sign(u) |u|^e of a ``third`` kind with :func:`cbrt_halley` (the compiled kernels' arithmetic)."""
    a = u.abs()
    return torch.copysign(third_pow(a, cbrt_halley(a), kind), u)


def split_applies(kind: Kind, u: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether :func:`split_multi_step` takes this (CPU, ``third`` kind, the weight of the dual's dtype: its memory
    holds the guess's bits)."""
    return kind[0] == "third" and u.device.type == "cpu" and w.dtype == u.dtype and u.dtype in _CBRT_MAGIC


def _update_body(has_beta: bool, n: int) -> Callable[..., None]:
    """Pass 1: u <- u - (alpha g + beta w), and without weight decay also the guess's bits into w's memory (with
    it, aot_autograd refuses to read w as floats and write it as integers in one graph: :func:`_guess_body`)."""

    def body(us: list[torch.Tensor], ws: list[torch.Tensor], gs: list[torch.Tensor], alphas: torch.Tensor,
             betas: torch.Tensor, wbits: list[torch.Tensor]) -> None:
        for i in range(n):
            u, gd = us[i], gs[i].to(us[i].dtype)
            if has_beta:
                u.sub_(alphas[i] * gd + betas[i] * ws[i])
            else:
                u.sub_(alphas[i] * gd)
                wbits[i].copy_(_guess_bits(u.abs().view(wbits[i].dtype), u.dtype))

    return _name_kernel(body, f"lpmd_cbrt_update{n}_{'wd' if has_beta else 'nowd'}")


def _guess_body(n: int) -> Callable[..., None]:
    """The guess's bits of the cube root of |x| into ``wbits`` from an integer view of x (no bit cast): a pass of
    its own for u with weight decay (:func:`_update_body`), and for g in :func:`scratch_pow_sums`."""

    def body(xbits: list[torch.Tensor], wbits: list[torch.Tensor], dtype: torch.dtype) -> None:
        for i in range(n):
            wbits[i].copy_(_guess_bits(xbits[i] & _CBRT_MAGIC[dtype][1], dtype))

    return _name_kernel(body, f"lpmd_cbrt_guess{n}")


def _finish_body(kind: Kind, n: int) -> Callable[..., None]:
    def body(us: list[torch.Tensor], ws: list[torch.Tensor]) -> None:
        for i in range(n):
            u, w = us[i], ws[i]
            a = u.abs()
            w.copy_(torch.copysign(third_pow(a, _halley(a, w), kind), u))

    return _name_kernel(body, f"lpmd_cbrt_finish{n}_{_tag(kind)}")


def split_multi_step(kind: Kind, has_beta: bool, us: Sequence[torch.Tensor], ws: Sequence[torch.Tensor],
                     gs: Sequence[torch.Tensor], alphas: torch.Tensor, betas: torch.Tensor) -> int:
    """The step of ``_kernels.compiled_multi_step`` for :func:`split_applies` lists, in two passes per chunk;
    returns how many tensors were updated (a chunk whose first pass could not be compiled is left unchanged; one
    whose later pass could not be compiled is finished eagerly with the same arithmetic)."""
    n = len(us)
    itype = _CBRT_MAGIC[us[0].dtype][0]

    def call(i: int, k: int) -> bool:
        # detached: the finishing pass reads w before it writes it, which dynamo refuses on a view of a parameter
        # that requires grad (made in no_grad mode); the memory, and the version counter, are the parameter's
        u, w = [t.detach().view(-1) for t in us[i:i + k]], [t.detach().view(-1) for t in ws[i:i + k]]
        a, b = (alphas, betas) if k == n else (alphas[i:i + k].clone(), betas[i:i + k].clone())
        key = ("cbrt_update", has_beta, k)
        fn = _cached_compile(key, lambda: _update_body(has_beta, k))
        if _guarded(key, fn, u, w, [g.view(-1) for g in gs[i:i + k]], a, b, [t.view(itype) for t in w]) is None:
            return False
        done: object = True
        if has_beta:
            key = ("cbrt_guess", k)
            done = _guarded(key, _cached_compile(key, lambda: _guess_body(k)), [t.view(itype) for t in u],
                            [t.view(itype) for t in w], u[0].dtype)
        key = ("cbrt_finish", kind, k)
        if done is None or _guarded(key, _cached_compile(key, lambda: _finish_body(kind, k)), u, w) is None:
            for ut, wt in zip(u, w):  # the same arithmetic, eagerly
                wt.copy_(signed_third_pow(ut, kind))
        return True

    return _run_chunks(n, call)


def scratch_applies(qkind: Kind, g: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether :func:`scratch_pow_sums` takes this gradient and weight (CPU, a ``third`` q, both of one dtype)."""
    return qkind[0] == "third" and g.device.type == "cpu" and g.dtype == w.dtype and g.dtype in _CBRT_MAGIC


def _scratch_sum_body(qkind: Kind, n: int) -> Callable[..., torch.Tensor]:
    def body(gs: list[torch.Tensor], ws: list[torch.Tensor]) -> torch.Tensor:
        out = []
        for i in range(n):
            a = gs[i].abs().clamp_max(torch.finfo(gs[i].dtype).max / 4)  # above: inf or NaN, as the guess's not valid
            out.append(third_pow(a, _halley(a, ws[i]), qkind).sum().to(torch.float64))
        return torch.stack(out)

    return _name_kernel(body, f"lpmd_cbrt_gsum{n}_{_tag(qkind)}")


def scratch_pow_sums(qkind: Kind, gs: Sequence[torch.Tensor], ws: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """sum |g|^q (q of the ``third`` kind ``qkind``) of a list of :func:`scratch_applies` gradients, unscaled, as an
    (n,) float64 tensor, in two vectorised passes per chunk: the cube root's guess from g's bits (an integer view:
    no bit cast) into the weight's memory, then Halley's steps and the sum; None when a kernel could not be
    compiled. **Overwrites the weights**: for the normalised step without weight decay, whose update then
    rewrites every weight from its dual. A sum that is not finite (an entry of g above a third of the dtype's
    largest value, where the guess is not valid, gives inf or NaN) is for the caller to replace with the scaled
    norm, as one from ``_kernels.compiled_pow_sums``."""
    itype = _CBRT_MAGIC[gs[0].dtype][0]

    def chunk(i: int, k: int) -> object:
        g, w = [t.detach().view(-1) for t in gs[i:i + k]], [t.detach().view(-1) for t in ws[i:i + k]]
        key = ("cbrt_guess", k)
        if _guarded(key, _cached_compile(key, lambda: _guess_body(k)), [t.view(itype) for t in g],
                    [t.view(itype) for t in w], g[0].dtype) is None:
            return None
        key = ("cbrt_gsum", qkind, k)
        return _guarded(key, _cached_compile(key, lambda: _scratch_sum_body(qkind, k)), g, w)

    return _concat_chunks(len(gs), chunk)
