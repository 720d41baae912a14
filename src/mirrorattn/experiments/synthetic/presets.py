"""Presets of the synthetic experiments: ``paper`` (the authors' settings, paper.md section 5)
and ``quick`` (fewer seeds and iterations, for the demo and CI; well under a minute in all)."""

from __future__ import annotations

from typing import Any

__all__ = ["PRESETS", "preset"]

_PAPER: dict[str, dict[str, Any]] = {
    "local": {"ps": (1.75, 2.0, 3.0), "iterations": (1500, 2000, 20000), "seeds": 100, "n": 6, "T": 8, "d": 10,
              "eta": 0.1, "init_scale": 1.0, "grid_points": 60},
    "joint": {"ps": (1.75, 2.0, 3.0), "iterations": (1500, 2000, 20000), "eta": 0.1, "grid_points": 300},
    "regpath": {"ps": (1.75, 2.0, 3.0), "seeds": 10, "n": 6, "T": 8, "d": 10, "r_min": 0.5, "r_max": 200.0,
                "radii": 16, "fw_tol": 1e-6, "max_steps": 4000},
    "kq": {"ps": (2.0, 1.75, 3.0), "iterations": 3000, "seeds": 20, "n": 6, "T": 8, "d": 10, "eta": 0.1},
}

#: what ``quick`` changes in the paper's settings (the same problems, smaller and shorter)
_QUICK_CHANGES: dict[str, dict[str, Any]] = {
    "local": {"iterations": (600, 800, 4000), "seeds": 8, "grid_points": 30},
    "joint": {"iterations": (600, 800, 3000), "grid_points": 120},
    "regpath": {"seeds": 3, "r_max": 100.0, "radii": 8, "fw_tol": 1e-5, "max_steps": 1500},
    "kq": {"iterations": 800, "seeds": 4, "grid_points": 25},
}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "paper": _PAPER,
    "quick": {name: {**fields, **_QUICK_CHANGES[name]} for name, fields in _PAPER.items()},
}


def preset(name: str, experiment: str) -> dict[str, Any]:
    """The preset ``name`` (``quick`` or ``paper``) for ``experiment``; a clear error otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return dict(PRESETS[name][experiment])
