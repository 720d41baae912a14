"""Shared test fixtures. Tests run single-threaded so that several can share two cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only data root holding the real data sets (``MIRRORATTN_DATA`` or ../shared/data)."""
    env = os.environ.get("MIRRORATTN_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    if not root.is_dir():
        pytest.skip(f"real data not found at {root}; set MIRRORATTN_DATA")
    return root


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache folder for the test (MIRRORATTN_CACHE points at it)."""
    c = tmp_path / "cache"
    c.mkdir()
    monkeypatch.setenv("MIRRORATTN_CACHE", str(c))
    return c
