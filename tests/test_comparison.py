"""The comparison runner shared by the text and vision experiments: order, divergence policy, results."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import mirrorattn.experiments.comparison as comparison
from mirrorattn.experiments.vision import VisionExperimentConfig
from toy_runs import NaNLinear, ToyModel, toy_data


def _prepare(config, progress=True):
    return SimpleNamespace(data=toy_data(), summary={"source": "toy"})


def _make_spec(config, prepared, optimizer, seed, out_dir, *, on_diverged="raise"):
    calls = 4 if optimizer == "sgd" else 10**9  # sgd: the loss becomes NaN at epoch 2, batch 1
    return config.run_spec(optimizer, seed, ToyModel(), build_model=lambda: NaNLinear(calls), data=prepared.data,
                           on_diverged=on_diverged)


def _config() -> VisionExperimentConfig:
    return VisionExperimentConfig(optimizers=("adam", "sgd"), seeds=2, epochs=2, batch_size=16, lr=0.05,
                                  device="cpu", stop_train_acc=None)


def test_runs_train_seed_major() -> None:
    assert comparison.comparison_jobs(_config()) == [("adam", 0), ("sgd", 0), ("adam", 1), ("sgd", 1)]


@pytest.mark.parametrize("policy", ["record", "best-epoch"])
def test_one_runner_applies_the_experiments_divergence_policy(tmp_path: Path, monkeypatch, policy) -> None:
    trained: list[str] = []
    real_run_one = comparison.run_one

    def noting(spec, out_dir, **kwargs):
        trained.append(Path(out_dir).name)
        return real_run_one(spec, out_dir, **kwargs)

    monkeypatch.setattr(comparison, "run_one", noting)
    reports: list[dict] = []
    exp = comparison.Comparison("toy", _prepare, _make_spec, lambda out, cfg, res: reports.append(res), policy)
    results = comparison.run_comparison(exp, _config(), tmp_path, progress=False)
    assert trained == ["adam-seed0", "sgd-seed0", "adam-seed1", "sgd-seed1"]
    assert reports == [results] and json.loads((tmp_path / "results.json").read_text())["data"] == {"source": "toy"}
    sgd, adam = results["runs"]["sgd"], results["runs"]["adam"]
    assert [s["seed"] for s in sgd] == [0, 1] and all(s["diverged"] for s in sgd)
    assert not any(s["diverged"] for s in adam) and all(s["epochs_run"] == 2 for s in adam)
    assert results["aggregate"]["sgd"]["diverged_runs"] == 2 and results["aggregate"]["adam"]["diverged_runs"] == 0
    if policy == "record":  # no accuracy: the run counts as diverged, nothing else
        assert all(s["test_acc"] is None and "epoch 2, batch 1" in s["error"] for s in sgd)
    else:  # the validation-best epoch before the NaN
        assert all(s["best_epoch"] == 1 and s["test_acc"] is not None and s["test_acc_last"] is None for s in sgd)
    # a rerun reuses every finished run (diverged ones included)
    monkeypatch.setattr(comparison, "run_one", real_run_one)
    monkeypatch.setattr("mirrorattn.experiments.classification.fit", lambda *a, **k: pytest.fail("trained again"))
    assert comparison.run_comparison(exp, _config(), tmp_path, progress=False)["runs"] == results["runs"]
