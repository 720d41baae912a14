"""What a claim of the report is: its verdict, the rule that decided it, numbers and figures.

The claims' wording (title, the paper's statement, the rule, what to run when results are missing)
is in ``mirrorattn/resources/claims.toml``: :func:`claim_text` reads it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from mirrorattn.io import read_json

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


@dataclass(frozen=True)
class ClaimText:
    """The wording of one claim: what :class:`Claim` starts from, and the note when its results are missing."""

    key: str
    title: str
    paper: str
    rule: str
    missing: str

    def claim(self) -> Claim:
        """A new, not yet run :class:`Claim` with this wording (and no note)."""
        return Claim(key=self.key, title=self.title, paper=self.paper, rule=self.rule)


@functools.cache
def _claim_texts() -> dict[str, Any]:
    text = resources.files("mirrorattn.resources").joinpath("claims.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def claim_text(name: str, *, stand_in: bool = False, **values: Any) -> ClaimText:
    """The wording of claim ``name`` (a table of claims.toml), its ``{placeholders}`` filled from ``values``.

    The key is ``name`` unless the table sets one; ``stand_in`` applies the table's ``stand_in``
    fields (the wording when a smaller data set stands in for the paper's).
    """
    spec = dict(_claim_texts()[name])
    override = spec.pop("stand_in", {})
    if stand_in:
        spec.update(override)
    spec.setdefault("key", name)
    return ClaimText(**{k: v.format(**values) for k, v in spec.items()})


def load_claim(text: ClaimText, path: Path) -> tuple[Claim, dict[str, Any] | None]:
    """A new claim worded ``text`` and the JSON results at ``path``; None, with ``text.missing`` as the
    claim's note (what to run), when there is no such file."""
    c = text.claim()
    if not path.is_file():
        c.note = text.missing
        return c, None
    return c, read_json(path, expect=dict)


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


def judge_rows(c: Claim, header: list[str], checked: list[tuple[list[Any], bool]]) -> None:
    """Decide ``c`` from per-row checks and add their table to its body.

    ``checked`` holds ``(cells, passes)`` per row; the verdict is reproduced when there is a row and
    every row passes, and the table gets a last column "passes" (yes / no).
    """
    c.verdict = verdict(bool(checked) and all(ok for _, ok in checked))
    c.body += table([*header, "passes"], [[*cells, "yes" if ok else "no"] for cells, ok in checked])


def rel(path: Path, root: Path) -> str:
    """``path`` relative to the report folder, with forward slashes."""
    return Path(os.path.relpath(Path(path).absolute(), Path(root).absolute())).as_posix()


__all__ = ["NOT_REPRODUCED", "NOT_RUN", "REPRODUCED", "VERDICTS", "Claim", "ClaimText", "claim_text", "fmt",
           "judge_rows", "load_claim", "pct", "rel", "table", "verdict"]
