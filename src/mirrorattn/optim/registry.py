"""A registry of optimizers, so that configs can name them: ``"adamw"``, ``"lp-md:1.1"``.

Spec strings: ``NAME`` or ``NAME:ARGS`` where ARGS is either one bare value for the optimizer's
primary argument (``"lp-md:1.1"`` means p = 1.1, ``"sgd:0.9"`` momentum 0.9) or comma-separated
``key=value`` pairs (``"lp-md:p=3,normalized=true"``). Values are parsed as int, float, bool
(true/false) or left as strings. Names are case-insensitive.

Lists of specs (``--optimizers``, :func:`split_optimizer_list`) are comma-separated; a piece
``key=value`` whose key is not a registered optimizer continues the spec before it, so
``"adam,lp-md:p=1.1,normalized=true,sgd"`` is adam, ``lp-md:p=1.1,normalized=true`` and sgd.
Semicolons may separate the specs instead (``"adam;lp-md:p=1.1,normalized=true"``); then commas
stay inside the specs.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

from .lpmd import LpMirrorDescent

Factory = Callable[..., torch.optim.Optimizer]

_REGISTRY: dict[str, Factory] = {}
_PRIMARY: dict[str, str | None] = {}


def register_optimizer(name: str, *, primary: str | None = None) -> Callable[[Factory], Factory]:
    """Decorator registering ``factory(params, lr=..., **kwargs) -> Optimizer`` under ``name``.

    ``primary`` names the keyword that a bare spec value sets (``"lp-md:1.1"`` -> ``p=1.1``).
    Registering a name twice raises ``ValueError``.
    """
    key = _normalise(name)
    if not key or ":" in key or "," in key or "=" in key:
        raise ValueError(f"optimizer name must be non-empty without ':', ',' or '=', got {name!r}")

    def deco(factory: Factory) -> Factory:
        if key in _REGISTRY:
            raise ValueError(f"optimizer {key!r} is already registered")
        _REGISTRY[key] = factory
        _PRIMARY[key] = primary
        return factory

    return deco


def available_optimizers() -> list[str]:
    """Sorted names of the registered optimizers."""
    return sorted(_REGISTRY)


def _normalise(name: str) -> str:
    return str(name).strip().lower()


def _value(text: str) -> Any:
    t = text.strip()
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(t)
        except ValueError:
            pass
    return t


def _unknown(name: str) -> ValueError:
    return ValueError(f"unknown optimizer {name!r}; known: {', '.join(available_optimizers())} "
                      "(register your own with mirrorattn.optim.register_optimizer)")


def parse_optimizer_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``"lp-md:1.1"`` into ``("lp-md", {"p": 1.1})``; unknown names raise ``ValueError``."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"optimizer spec must be a non-empty string like 'adamw' or 'lp-md:1.1', got {spec!r}")
    name, _, args = spec.partition(":")
    name = _normalise(name)
    if name not in _REGISTRY:
        raise _unknown(name)
    kwargs: dict[str, Any] = {}
    args = args.strip()
    if not args:
        return name, kwargs
    if "=" not in args:
        primary = _PRIMARY[name]
        if primary is None:
            raise ValueError(f"optimizer {name!r} takes no bare value in its spec; write key=value pairs, got {spec!r}")
        return name, {primary: _value(args)}
    for part in args.split(","):
        key, eq, val = part.partition("=")
        key = key.strip()
        if not eq or not key.isidentifier():
            raise ValueError(f"bad item {part!r} in optimizer spec {spec!r}; expected key=value")
        kwargs[key] = _value(val)
    return name, kwargs


def _starts_spec(piece: str) -> bool:
    """Whether a comma-separated ``piece`` begins a new spec: it is not a ``key=value`` argument of the previous
    one (its name, the text before the first ':' or '=', is a registered optimizer, or it has no '=')."""
    if "=" not in piece:
        return True
    head = piece.split("=", 1)[0]
    return ":" in head or _normalise(head) in _REGISTRY


def split_optimizer_list(text: str) -> list[str]:
    """Split a list of optimizer specs: ``"adam,lp-md:p=1.1,normalized=true,sgd"`` ->
    ``["adam", "lp-md:p=1.1,normalized=true", "sgd"]``.

    With a ';' in ``text`` the specs are separated by ';' only. Otherwise by commas, where a
    ``key=value`` piece whose key is not a registered optimizer name joins the spec before it when that
    spec has arguments (``NAME:...``). Blank pieces are dropped; the specs are not validated (see
    :func:`parse_optimizer_spec`). Also splits ``--lr`` lists (``"lp-md:p=1.1,normalized=true=5e-2,adam=1e-3"``).
    """
    if ";" in text:
        return [t.strip() for t in text.split(";") if t.strip()]
    specs: list[str] = []
    for piece in (t.strip() for t in text.split(",")):
        if not piece:
            continue
        if specs and ":" in specs[-1] and not _starts_spec(piece):
            specs[-1] = f"{specs[-1]},{piece}"
        else:
            specs.append(piece)
    return specs


def build_optimizer(spec: str, params: Iterable[Any], lr: float, **kwargs: Any) -> torch.optim.Optimizer:
    """Build the optimizer named by ``spec`` on ``params``; ``kwargs`` add to (not override) the spec's."""
    name, spec_kwargs = parse_optimizer_spec(spec)
    both = set(spec_kwargs) & set(kwargs)
    if both:
        raise ValueError(f"optimizer argument(s) {sorted(both)} given both in the spec {spec!r} and as keywords")
    try:
        return _REGISTRY[name](params, lr=lr, **spec_kwargs, **kwargs)
    except TypeError as err:
        raise ValueError(f"bad arguments for optimizer {name!r}: {err}") from err


@register_optimizer("sgd", primary="momentum")
def _sgd(params: Iterable[Any], lr: float, **kw: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, **kw)


@register_optimizer("adam")
def _adam(params: Iterable[Any], lr: float, **kw: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, **kw)


@register_optimizer("adamw")
def _adamw(params: Iterable[Any], lr: float, **kw: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, **kw)


@register_optimizer("rmsprop", primary="alpha")
def _rmsprop(params: Iterable[Any], lr: float, **kw: Any) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(params, lr=lr, **kw)


@register_optimizer("lp-md", primary="p")
def _lpmd(params: Iterable[Any], lr: float, **kw: Any) -> torch.optim.Optimizer:
    if "p" not in kw:
        raise ValueError("optimizer 'lp-md' needs p: write 'lp-md:1.1' or pass p=1.1")
    return LpMirrorDescent(params, lr=lr, **kw)
