"""The shared run logic of the text and vision experiments: reuse, resume, divergence, stable run hashes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from torch import nn

import mirrorattn.experiments.classification as cl
from mirrorattn.experiments.text import TextExperimentConfig
from mirrorattn.experiments.vision import VisionExperimentConfig
from mirrorattn.io import config_hash
from mirrorattn.train import NonFiniteLossError, TrainData
from toy_runs import NaNLinear, ToyModel, record_resume, toy_data

_data = toy_data


def _spec(config: VisionExperimentConfig, data: TrainData, **options) -> cl.RunSpec:
    return config.run_spec("adam", 0, ToyModel(), lr=0.05, build_model=lambda: nn.Linear(4, 2), data=data, **options)


def _no_fit(*args, **kwargs):
    raise AssertionError("a finished run was trained again")


_record_resume = record_resume


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


def test_without_resume_longer_other_settings_start_over_only_with_overwrite(tmp_path: Path, config,
                                                                             monkeypatch) -> None:
    data = _data()
    calls = _record_resume(monkeypatch)
    first = cl.run_one(_spec(config, data), tmp_path, progress=False)
    assert "resume_hash" not in json.loads((tmp_path / "run_config.json").read_text())
    (tmp_path / "stale.txt").write_text("from a run of other settings")
    config.epochs = 1
    # a finished run is never deleted implicitly: one line naming the folder, what differs and the option
    with pytest.raises(cl.RunConflictError, match=r"epochs 2 -> 1.*--overwrite") as err:
        cl.run_one(_spec(config, data), tmp_path, progress=False)
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value) and calls == [False]
    assert json.loads((tmp_path / "summary.json").read_text()) == first and (tmp_path / "stale.txt").exists()
    again = cl.run_one(_spec(config, data), tmp_path, progress=False, overwrite=True)
    assert calls == [False, False] and again["epochs_run"] == 1 and not (tmp_path / "stale.txt").exists()
    assert len(json.loads((tmp_path / "history.json").read_text())) == 1


def _nan_spec(config: VisionExperimentConfig, data: TrainData, calls: int, **options) -> cl.RunSpec:
    """A toy run whose loss becomes NaN after ``calls`` training batches (4 per epoch)."""
    return config.run_spec("adam", 0, ToyModel(), lr=0.05, build_model=lambda: NaNLinear(calls), data=data, **options)


def test_a_recorded_divergence_is_reused(tmp_path: Path, config, monkeypatch) -> None:
    data = _data()
    with pytest.raises(NonFiniteLossError):
        cl.run_one(_nan_spec(config, data, 0), tmp_path / "raise", progress=False)
    spec = _nan_spec(config, data, 0, analyse=_analyse, on_diverged="record", summary_head={"dataset": "toy"},
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


# ------------------------------------------------------------------ every optimizer checked, none twice

@pytest.mark.parametrize("pair", [("adam", "adam"), ("lp-md:1.1", "lp-md:p=1.1"), ("Adam", "adam"),
                                  ("sgd:0.9", "sgd:momentum=0.9"), ("lp-md:2", "lp-md:2.0")])
@pytest.mark.parametrize("kind", [VisionExperimentConfig, TextExperimentConfig])
def test_an_optimizer_listed_twice_is_refused(kind, pair) -> None:
    """Twice the same optimizer would count its runs twice in the mean ± std ("over 2 seeds")."""
    with pytest.raises(ValueError, match=r"optimizers lists the same optimizer twice .*list it once") as err:
        kind(optimizers=("sgd:0.5", *pair)).validate()
    assert repr(pair[0]) in str(err.value) and repr(pair[1]) in str(err.value)
    assert cl.optimizer_key(pair[0]) == cl.optimizer_key(pair[1]) != cl.optimizer_key("sgd:0.5")
    kind(optimizers=("lp-md:1.1", "lp-md:2", "sgd", "sgd:0.9")).validate()  # different settings are fine


def _refuse(*args, **kwargs):
    raise AssertionError("data was loaded (or a run started) before every optimizer was checked")


@pytest.mark.parametrize("command", ["vision", "vision-sweep", "text", "text-sweep"])
def test_every_optimizer_is_checked_before_data_or_folders(tmp_path: Path, monkeypatch, command) -> None:
    from mirrorattn.experiments import sweep, text, vision

    for module, name in ((vision, "prepare_vision_data"), (text, "prepare_text_data"), (sweep, "sweep_data")):
        monkeypatch.setattr(module, name, _refuse)
    run = {"vision": vision.run_vision_experiment, "vision-sweep": vision.run_vision_sweep,
           "text": text.run_text_experiment, "text-sweep": text.run_lr_sweep}[command]
    kind = VisionExperimentConfig if command.startswith("vision") else TextExperimentConfig
    with pytest.raises(ValueError, match="unknown optimizer 'foo'"):
        run(kind(optimizers=("adam", "foo"), device="cpu"), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_a_diverged_runs_failing_analysis_is_recorded_not_fatal(tmp_path: Path, config, monkeypatch) -> None:
    """A run that diverges after a finished epoch keeps that epoch (policy best-epoch); when its analysis fails
    on the diverged weights (e.g. non-finite attention), the summary says so and the comparison goes on."""
    def failing(model: nn.Module, write: bool) -> dict:
        raise ValueError("probs must be finite and non-negative (softmax outputs)")

    spec = _nan_spec(config, _data(), 4, analyse=failing, on_diverged="best-epoch")  # NaN at epoch 2, batch 1
    s = cl.run_one(spec, tmp_path, progress=False)
    assert s["diverged"] is True and s["best_epoch"] == 1 and s["analysis"] is None
    assert s["analysis_error"] == "analysis skipped: probs must be finite and non-negative (softmax outputs)"
    with pytest.raises(ValueError, match="probs must be finite"):  # a run that did not diverge still fails loudly
        cl.run_one(_spec(config, _data(), analyse=failing), tmp_path / "ok", progress=False)
