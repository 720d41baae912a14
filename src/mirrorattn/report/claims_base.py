"""What a claim of the report is: its verdict, the rule that decided it, numbers and figures."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
NOT_RUN = "not run"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, NOT_RUN)


@dataclass
class Claim:
    """One of the paper's claims as checked on saved results.

    ``body`` is Markdown (tables of our numbers, with the paper's beside them where it published
    one); ``figures`` are paths relative to the report folder; ``numbers`` is the machine-readable
    core that decided the verdict (written to report.json).
    """

    key: str
    title: str
    paper: str
    rule: str
    verdict: str = NOT_RUN
    body: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def verdict(ok: bool) -> str:
    """``reproduced`` if ``ok`` else ``not reproduced``."""
    return REPRODUCED if ok else NOT_REPRODUCED


def fmt(x: Any, digits: int = 3) -> str:
    """A number for a table: scientific below 1e-2, fixed otherwise; '-' for missing/NaN."""
    if x is None:
        return "-"
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(f):
        return "-"
    if f != 0 and abs(f) < 1e-2:
        return f"{f:.{digits - 1}e}"
    return f"{f:.{digits}f}"


def pct(mean: Any, std: Any = None) -> str:
    """A fraction as a percentage, with its spread: '83.1 +- 0.4 %'."""
    if mean is None:
        return "-"
    s = f"{100 * float(mean):.1f}"
    if std is not None and math.isfinite(float(std)):
        s += f" ± {100 * float(std):.1f}"
    return s + " %"


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A Markdown table as lines."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return out


def rel(path: Path, root: Path) -> str:
    """``path`` relative to the report folder, with forward slashes."""
    return Path(os.path.relpath(Path(path).absolute(), Path(root).absolute())).as_posix()


__all__ = ["NOT_REPRODUCED", "NOT_RUN", "REPRODUCED", "VERDICTS", "Claim", "fmt", "pct", "rel", "table", "verdict"]
