"""The toy runs of the run-folder tests: a linear classifier of 4 features on a fixed random split."""

from __future__ import annotations

from dataclasses import dataclass

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
