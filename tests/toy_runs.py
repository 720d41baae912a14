"""The toy runs of the run-folder tests: a linear classifier of 4 features on a fixed random split."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mirrorattn.train import Split, TrainData


@dataclass
class ToyModel:
    """The model config of the toy runs (a linear classifier of 4 features)."""

    features: int = 4


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
