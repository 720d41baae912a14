"""mirrorattn.io: atomic writers (whole files or the old ones, never a part, no temporary files left, the umask's
mode), damaged JSON named, and run-folder locks between real processes."""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mirrorattn.io import (
    CorruptFileError,
    FolderInUseError,
    atomic_path,
    current_umask,
    ensure_unlocked,
    folder_lock_holder,
    lock_folder,
    read_json,
    torch_save,
    write_json,
    write_npz,
    write_text,
)


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


# ------------------------------------------------------------------ damaged files, modes, folder locks

@pytest.mark.parametrize("content, why", [("", "not JSON"), ('{"a": 1', "not JSON"), (b"\xff\xfe{}", "not JSON"),
                                          ("[1, 2]", "holds a JSON array, expected a JSON object")])
def test_read_json_names_a_damaged_file(tmp_path: Path, content, why) -> None:
    path = tmp_path / "summary.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(CorruptFileError, match=why) as err:
        read_json(path, expect=dict)
    assert str(path) in str(err.value) and "\n" not in str(err.value) and err.value.path == path
    assert isinstance(err.value, ValueError) and isinstance(err.value, json.JSONDecodeError)  # callers keep working
    assert read_json(write_json(tmp_path / "ok.json", [1]), expect=list) == [1]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_files_get_the_mode_open_would_give(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        written = [write_json(tmp_path / "a.json", {}), write_text(tmp_path / "b.md", "x"),
                   write_npz(tmp_path / "c.npz", x=np.zeros(2)), torch_save(tmp_path / "d.pt", {"w": 1})]
        with open(tmp_path / "plain", "w"):
            pass
    finally:
        os.umask(old)
    want = stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert want == 0o666 & ~umask
    assert [oct(stat.S_IMODE(p.stat().st_mode)) for p in written] == [oct(want)] * 4


_HOLD = """
import sys, time
from pathlib import Path
from mirrorattn.io import lock_folder
with lock_folder(sys.argv[1]):
    print("locked", flush=True)
    while not Path(sys.argv[2]).exists():
        time.sleep(0.02)
"""


def test_a_locked_folder_keeps_a_second_process_out(tmp_path: Path) -> None:
    folder, release = tmp_path / "runs" / "adam-seed0", tmp_path / "release"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder), str(release)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert folder_lock_holder(folder) == str(holder.pid)
        with pytest.raises(FolderInUseError) as err:
            with lock_folder(folder):
                raise AssertionError("a second process got the lock")
        assert str(err.value) == (f"run folder {folder} is in use by another process (pid {holder.pid}); "
                                  "wait for it to finish or use another --out")
        with pytest.raises(FolderInUseError, match=f"pid {holder.pid}"):
            ensure_unlocked(folder)
    finally:
        release.touch()
        assert holder.wait(timeout=30) == 0
    assert folder_lock_holder(folder) is None  # released with the process
    with lock_folder(folder):
        assert folder_lock_holder(folder) == str(os.getpid())
    ensure_unlocked(folder)
