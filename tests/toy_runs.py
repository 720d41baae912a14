"""The toy runs of the run-folder tests: a linear classifier of 4 features on a fixed random split."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mirrorattn.train import Split, TrainData


@dataclass
class ToyModel:
    """The model config of the toy runs (a linear classifier of 4 features)."""

    features: int = 4


class NaNLinear(torch.nn.Linear):
    """The toy runs' model (4 features, 2 classes) whose training output becomes NaN after ``calls`` batches."""

    def __init__(self, calls: int) -> None:
        super().__init__(4, 2)
        self.calls, self.n = calls, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        self.n += int(self.training)
        return out * float("nan") if self.training and self.n > self.calls else out


def toy_data() -> TrainData:
    """64 training, 32 validation and 32 test points in 4 dimensions; the label is the sign of the first."""
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        x = torch.randn(n, 4, generator=g)
        return Split(x, (x[:, 0] > 0).long())

    return TrainData(split(64), split(32), split(32))


def record_resume(monkeypatch) -> list[bool]:
    """Patch ``run_one``'s ``fit`` to note its ``resume`` argument (then train as usual)."""
    import mirrorattn.experiments.classification as cl

    calls: list[bool] = []
    real = cl.fit

    def noting(*args, **kwargs):
        calls.append(kwargs["resume"])
        return real(*args, **kwargs)

    monkeypatch.setattr(cl, "fit", noting)
    return calls


#: a tiny converge-style text comparison on a slice of the embedded polarity data (no data root needed)
TINY_POLARITY = ["text", "--dataset", "polarity", "--preset", "converge", "--max-train", "200", "--width", "8",
                 "--heads", "2", "--vocab-size", "300", "--warmup-epochs", "0", "--seeds", "1", "--no-progress"]


def polarity_comparison(tmp_path_factory, name: str, *argv: str):
    """Run ``mirrorattn`` on :data:`TINY_POLARITY` + ``argv`` into a fresh folder (its own cache, no data root);
    a generator for a module fixture: yields the ``--out`` folder."""
    import pytest

    from mirrorattn.cli import main

    root = tmp_path_factory.mktemp(name)
    mp = pytest.MonkeyPatch()
    mp.setenv("MIRRORATTN_CACHE", str(root / "cache"))
    mp.setenv("MIRRORATTN_DATA", str(root / "no-data"))
    assert main([*TINY_POLARITY, *argv, "--out", str(root / "out")]) == 0
    yield root / "out"
    mp.undo()


def torchrun_job(tmp_path: Path, name: str, script: str, *args: str, timeout: int = 240
                 ) -> tuple[subprocess.CompletedProcess, dict[str, Any]]:
    """Write ``script`` to ``tmp_path / (name + ".py")``, run it under torchrun with 2 CPU (gloo) processes of one
    thread each, assert that it succeeded; return the process and the script's namespace (run as module ``name``,
    so its ``__main__`` block stays out) for the one-process reference."""
    path = tmp_path / f"{name}.py"
    path.write_text(script)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(tmp_path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(path), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    namespace: dict[str, Any] = {"__name__": name}
    exec(compile(script, str(path), "exec"), namespace)
    return proc, namespace
