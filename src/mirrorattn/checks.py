"""Argument checks in one style: each ``check_*`` returns the value (converted) or raises one ``ValueError``
line that names the field, says what it must be and shows what it got::

    check_int(0, "seeds")                        # seeds must be a positive integer (>= 1), got 0
    check_finite(float("inf"), "eta", low=0.0, strict=True)   # eta must be a finite number > 0, got inf
    check_fraction(1.5, "test_fraction")         # test_fraction must be in (0, 1), got 1.5
    check_choice("chars", "tokenizer", ("wordpiece", "word"))  # tokenizer must be one of wordpiece, word, ...

Part of the base layer: every layer may use them (config dataclasses' ``validate``, loaders' arguments).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["check_choice", "check_finite", "check_fraction", "check_int"]


def check_int(value: Any, name: str, low: int = 1, *, optional: bool = False) -> int | None:
    """``value`` as an int, or a ``ValueError`` unless it is an integer >= ``low`` (bools are not integers here);
    ``optional``: None passes (and is returned)."""
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        need = {0: "an integer >= 0", 1: "a positive integer (>= 1)"}.get(low, f"an integer >= {low}")
        raise ValueError(f"{name} must be {need}{' or None' if optional else ''}, got {value!r}")
    return int(value)


def check_finite(value: Any, name: str, low: float | None = None, strict: bool = False) -> float:
    """``value`` as a float, or a ``ValueError`` unless it is a finite number (and > ``low`` when ``strict``,
    else >= ``low``, when ``low`` is given)."""
    ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if strict else value >= low
    if not ok:
        bound = "" if low is None else f" {'>' if strict else '>='} {low:g}"
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    return float(value)


def check_fraction(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """``value`` as a float, or a ``ValueError`` unless it lies in (0, 1) - in [0, 1) when ``allow_zero``."""
    ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)
    if not (ok and (0.0 <= value if allow_zero else 0.0 < value) and value < 1.0):
        raise ValueError(f"{name} must be in {'[0' if allow_zero else '(0'}, 1), got {value!r}")
    return float(value)


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``, else a ``ValueError`` listing them."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value
