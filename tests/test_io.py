"""Atomic writers of mirrorattn.io: whole files or the old ones, never a part, and no temporary files left."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mirrorattn.io import atomic_path, read_json, write_json, write_text


def test_write_text_creates_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "results.md"
    write_text(path, "first\n")
    assert path.read_text(encoding="utf-8") == "first\n"
    write_text(path, "ünïcode second")
    assert path.read_text(encoding="utf-8") == "ünïcode second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.md"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    write_json(path, {"a": 1})
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_path(path) as tmp:
            tmp.write_text('{"a": 2, "trunc', encoding="utf-8")
            raise RuntimeError("interrupted")
    assert read_json(path) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_write_json_is_strict_json(tmp_path: Path) -> None:
    path = write_json(tmp_path / "x.json", {"nan": math.nan, "arr": np.arange(3), "inf": np.float64("inf")})
    text = path.read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text and text.endswith("\n")
    assert json.loads(text) == {"nan": None, "arr": [0, 1, 2], "inf": None}
