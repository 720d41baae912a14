"""Optimizers: l_p mirror descent (:class:`LpMirrorDescent`) and a name -> optimizer registry."""

from .lpmd import LpMirrorDescent, NonFiniteGradientError, dual_dtype
from .registry import available_optimizers, build_optimizer, parse_optimizer_spec, register_optimizer

__all__ = [
    "LpMirrorDescent",
    "NonFiniteGradientError",
    "available_optimizers",
    "build_optimizer",
    "dual_dtype",
    "parse_optimizer_spec",
    "register_optimizer",
]
