"""The shared run logic of the text and vision experiments: reuse, resume, divergence, stable run hashes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

import mirrorattn.experiments.classification as cl
from mirrorattn.experiments.text import TextExperimentConfig
from mirrorattn.experiments.vision import VisionExperimentConfig
from mirrorattn.io import config_hash
from mirrorattn.train import NonFiniteLossError, Split, TrainData


@dataclass
class ToyModel:
    """The model config of the toy runs (a linear classifier of 4 features)."""

    features: int = 4


def _data() -> TrainData:
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        x = torch.randn(n, 4, generator=g)
        return Split(x, (x[:, 0] > 0).long())

    return TrainData(split(64), split(32), split(32))


def _spec(config: VisionExperimentConfig, data: TrainData, **options) -> cl.RunSpec:
    return config.run_spec("adam", 0, ToyModel(), lr=0.05, build_model=lambda: nn.Linear(4, 2), data=data, **options)


def _no_fit(*args, **kwargs):
    raise AssertionError("a finished run was trained again")


def _record_resume(monkeypatch) -> list[bool]:
    """Patch fit to note its ``resume`` argument (then train as usual)."""
    calls: list[bool] = []
    real = cl.fit

    def noting(*args, **kwargs):
        calls.append(kwargs["resume"])
        return real(*args, **kwargs)

    monkeypatch.setattr(cl, "fit", noting)
    return calls


def _analyse(model: nn.Module, write: bool) -> dict:
    return {"weight_norm": float(model.weight.detach().norm())}


@pytest.fixture
def config() -> VisionExperimentConfig:
    return VisionExperimentConfig(epochs=2, batch_size=16, device="cpu", stop_train_acc=None)


def test_a_finished_run_is_reused_and_a_longer_one_resumed(tmp_path: Path, config, monkeypatch) -> None:
    data = _data()
    first = cl.run_one(_spec(config, data, analyse=_analyse, resume_longer=True), tmp_path, progress=False)
    assert first["epochs_run"] == 2 and first["diverged"] is False and "weight_norm" in first["analysis"]
    on_disk = json.loads((tmp_path / "run_config.json").read_text())
    assert on_disk["config_hash"] == first["config_hash"] == config_hash(_spec(config, data).identity)
    monkeypatch.setattr(cl, "fit", _no_fit)
    assert cl.run_one(_spec(config, data, analyse=_analyse, resume_longer=True), tmp_path, progress=False) == first
    monkeypatch.undo()
    # more epochs: another config hash, the same resume hash -> continued from the checkpoint, not restarted
    config.epochs = 3
    calls = _record_resume(monkeypatch)
    longer = cl.run_one(_spec(config, data, analyse=_analyse, resume_longer=True), tmp_path, progress=False)
    assert calls == [True] and longer["config_hash"] != first["config_hash"] and longer["epochs_run"] == 3
    assert len(json.loads((tmp_path / "history.json").read_text())) == 3
    assert json.loads((tmp_path / "run_config.json").read_text())["resume_hash"] == on_disk["resume_hash"]


def test_without_resume_longer_other_settings_start_over(tmp_path: Path, config, monkeypatch) -> None:
    data = _data()
    calls = _record_resume(monkeypatch)
    cl.run_one(_spec(config, data), tmp_path, progress=False)
    assert "resume_hash" not in json.loads((tmp_path / "run_config.json").read_text())
    (tmp_path / "stale.txt").write_text("from a run of other settings")
    config.epochs = 1
    again = cl.run_one(_spec(config, data), tmp_path, progress=False)
    assert calls == [False, False] and again["epochs_run"] == 1 and not (tmp_path / "stale.txt").exists()
    assert len(json.loads((tmp_path / "history.json").read_text())) == 1


def test_a_recorded_divergence_is_reused(tmp_path: Path, config, monkeypatch) -> None:
    def nan_fit(*args, **kwargs):
        raise NonFiniteLossError("training loss became nan at epoch 1, batch 1")

    data = _data()
    monkeypatch.setattr(cl, "fit", nan_fit)
    with pytest.raises(NonFiniteLossError):
        cl.run_one(_spec(config, data), tmp_path / "raise", progress=False)
    spec = _spec(config, data, analyse=_analyse, on_diverged="record", summary_head={"dataset": "toy"},
                 summary_tail={"augmentation": None})
    s = cl.run_one(spec, tmp_path / "rec", progress=False)
    assert list(s) == ["config_hash", "dataset", "optimizer", "lr", "seed", "diverged", "error", "test_acc",
                       "test_acc_last", "wall_seconds", "augmentation", "analysis"]
    assert s["diverged"] is True and "nan" in s["error"] and s["test_acc"] is None and s["analysis"] is None
    monkeypatch.setattr(cl, "fit", _no_fit)  # a diverged run has no analysis, yet it is reused as it is
    assert cl.run_one(spec, tmp_path / "rec", progress=False) == s
    with pytest.raises(ValueError, match="on_diverged"):
        cl.run_one(_spec(config, data, on_diverged="ignore"), tmp_path / "bad", progress=False)


def test_aggregate_and_format_stat_by_hand() -> None:
    runs = [{"lr": 0.1, "test_acc": 0.8, "analysis": {"scalars": {"h": 1.0}}},
            {"lr": 0.1, "test_acc": 0.9, "analysis": {"scalars": {"h": 3.0}}},
            {"lr": 0.1, "test_acc": None, "diverged": True, "analysis": None}]
    row = cl.aggregate({"sgd": runs})["sgd"]
    assert row["test_acc"]["n"] == 2 and row["test_acc"]["mean"] == pytest.approx(0.85)
    assert row["test_acc"]["std"] == pytest.approx(0.0707106781, rel=1e-8)  # sqrt(0.005), ddof 1
    assert row["h"] == {"mean": 2.0, "std": pytest.approx(2 ** 0.5), "n": 2} and row["diverged_runs"] == 1
    assert cl.format_stat(row["test_acc"], 100) == "85.00 ± 7.07" and cl.format_stat(row["test_acc_last"]) == "-"


def test_run_hashes_of_finished_runs_do_not_change() -> None:
    """Golden hashes (computed before the text and vision run logic was shared): changing one means every
    finished run on disk is trained again. Update them only for a deliberate change of a run's identity."""
    text = TextExperimentConfig(dataset="imdb")
    t = cl.run_identity(text, text.train_config("lp-md:1.1", 3e-3, 1), text.model_config(2, 15000))
    vision = VisionExperimentConfig(dataset="cifar10", lr_schedule="cosine", warmup_epochs=0.5)
    model = vision.model_config((3, 32, 32), 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    v = cl.run_identity(vision, vision.train_config("adam", 1e-3, 0), model, augmentation=vision.augmentation(32))
    assert (config_hash(t), config_hash(v)) == (TEXT_HASH, VISION_HASH)


TEXT_HASH, VISION_HASH = "1efd3973a7ba", "cea48e86d3ce"
