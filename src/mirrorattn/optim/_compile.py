"""torch.compile plumbing of the optimizer's kernels: one compiled function per key, cached at module level; chunked
calls over lists of tensors; a failed compilation marked once (one warning) so that the caller goes eager.

Kernel bodies are compiled with dynamic shapes and ``fullgraph=True``; each gets a code object of its own
(:func:`_name_kernel`), so that dynamo's cache and recompilation limit are per kernel.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable, Sequence

import torch
import torch.fx.experimental._config as _fx_config

from mirrorattn.mirror import Kind

log = logging.getLogger("mirrorattn.optim._kernels")

#: environment variable that, when set to 1/true/yes, disables torch.compile for the optimizer
EAGER_ENV = "MIRRORATTN_OPTIM_EAGER"

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


def _per_list(gs: Sequence[torch.Tensor], kernel: Callable[[list[torch.Tensor]], torch.Tensor | None]
              ) -> list[torch.Tensor | None]:
    """``kernel`` (a compiled reduction: a list of tensors of one device, dtype and rank -> an (n,) tensor, or None)
    on the contiguous CPU/CUDA tensors of ``gs``, one call per device, dtype and rank; a 0-d tensor per tensor, None
    for the rest and where the kernel could not be compiled."""
    out: list[torch.Tensor | None] = [None] * len(gs)
    lists: dict[tuple, list[int]] = {}
    for j, g in enumerate(gs):
        if g.is_contiguous() and g.device.type in ("cpu", "cuda"):
            lists.setdefault((g.device, g.dtype, g.dim()), []).append(j)
    for idx in lists.values():
        values = kernel([gs[j] for j in idx])
        if values is not None:
            for t, j in enumerate(idx):
                out[j] = values[t]
    return out
