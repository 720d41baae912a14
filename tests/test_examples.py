"""The README's tour (examples/tour.py) runs and its numbers are sane."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tour_runs() -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "tour.py")], capture_output=True, text=True,
                         env=env, timeout=300, check=True).stdout
    loss = float(re.search(r"final training loss with l_1.1 mirror descent: ([0-9.]+)", out).group(1))
    assert loss < 0.5  # the target is learnable; chance level is log 2 = 0.69
    div = float(re.search(r"D\(W_mm, W_k\): ([0-9.e+-]+)", out).group(1))
    assert 0 <= div < 0.05  # the iterate's direction is close to the SVM's
    assert "(optimal)" in out
