"""Exceptions raised by the max-margin solvers.

All of them subclass :class:`SVMError`, itself a ``ValueError``, so that the ``mirrorattn`` command
prints them as one line. Every message says what was wrong, names the offending samples and says
what to do.
"""

from __future__ import annotations

from typing import Iterable


class SVMError(ValueError):
    """A max-margin problem could not be solved (bad input, solver failure, infeasibility)."""


class SVMInputError(SVMError):
    """The arrays handed to a solver are malformed: shapes, NaN/inf, alpha out of range or on padding."""


class InfeasibleSVMError(SVMError):
    """The constraints cannot all hold: a selected token cannot be separated from another one.

    ``samples`` holds the indices of the samples involved (a set of samples whose constraints
    already contradict each other, or samples with a constraint row that is exactly zero).
    """

    def __init__(self, message: str, samples: Iterable[int] = ()) -> None:
        super().__init__(message)
        self.samples: list[int] = sorted({int(s) for s in samples})


class InvalidSamplesError(SVMInputError, InfeasibleSVMError):
    """Some samples hold unusable data: NaN/inf, or alpha out of range or on a padding token.

    Both an :class:`SVMInputError` and an :class:`InfeasibleSVMError` (no W can satisfy
    constraints built from such samples), so that code skipping infeasible instances also skips
    these; ``samples`` names them.
    """


def name_samples(samples: Iterable[int], limit: int = 20) -> str:
    """``"[3, 7, 12]"`` or ``"[0, 1, ..., 19] and 5 more"`` for an error message."""
    s = sorted({int(i) for i in samples})
    if len(s) <= limit:
        return str(s)
    return f"{s[:limit]} and {len(s) - limit} more"


__all__ = ["InfeasibleSVMError", "InvalidSamplesError", "SVMError", "SVMInputError", "name_samples"]
