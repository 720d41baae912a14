"""The vision experiment and ``mirrorattn vision``: config building, end to end on digits, reuse and exact resume."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mirrorattn.cli import main
from mirrorattn.config import ConfigError
from mirrorattn.experiments import classification, vision_cli
from mirrorattn.experiments import vision as vx
from mirrorattn.experiments.classification import run_name
from mirrorattn.experiments.vision import PRESETS, VisionExperimentConfig, preset_values
from mirrorattn.experiments.vision_cli import build_vision_config

TINY = ["--patch", "2", "--width", "16", "--depth", "1", "--heads", "2", "--mlp-hidden", "16",
        "--analysis-samples", "50", "--attention-images", "2", "--max-test", "100", "--no-progress", "--device", "cpu"]


def _args(*argv: str):
    parser = argparse.ArgumentParser()
    vision_cli.register(parser.add_subparsers())
    return parser.parse_args(["vision", "--out", "unused", *argv])


def test_config_from_preset_file_and_options(tmp_path: Path) -> None:
    cfg = build_vision_config(_args("--dataset", "cifar10", "--preset", "paper"))
    assert (cfg.image_size, cfg.patch, cfg.width, cfg.depth, cfg.heads, cfg.mlp_hidden) == (48, 4, 512, 6, 8, 512)
    assert cfg.batch_size == 100 and cfg.dropout == 0.1 and cfg.crop_padding == 4
    assert cfg.lr_for("adam") == 1e-4 and cfg.lr_for("lp-md:1.1") == 5e-2
    assert cfg.augmentation(48) == {"padding": 4, "flip": True}
    toml = tmp_path / "c.toml"
    toml.write_text("width = 48\nheads = 3\nepochs = 7\n", encoding="utf-8")
    cfg = build_vision_config(_args("--dataset", "digits", "--config", str(toml), "--epochs", "2",
                                    "--optimizers", "adam,lp-md:1.1", "--lr", "lp-md:1.1=0.2", "--no-augment"))
    assert (cfg.width, cfg.heads, cfg.epochs) == (48, 3, 2)  # option beats file beats preset
    assert cfg.optimizers == ("adam", "lp-md:1.1")
    assert cfg.lr_for("lp-md:1.1") == 0.2 and cfg.lr_for("adam") == PRESETS["quick"]["digits"]["lrs"]["adam"]
    assert "sgd" not in cfg.lrs and cfg.augmentation(8) is None
    cfg = build_vision_config(_args("--lr", "0.003", "--max-train", "none"))
    assert cfg.lrs == {} and cfg.lr_for("sgd") == 0.003 and cfg.max_train is None


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="unknown preset"):
        preset_values("fast", "digits")
    with pytest.raises(ValueError, match="multiple of heads"):
        build_vision_config(_args("--width", "10", "--heads", "4"))
    with pytest.raises(ValueError, match="--lr"):
        build_vision_config(_args("--lr", "adam=fast"))
    with pytest.raises(ValueError, match="not run"):
        VisionExperimentConfig(optimizers=("adam",), lrs={"sgd": 0.1}).validate()
    with pytest.raises(ConfigError, match="unknown config field"):
        from mirrorattn.config import build_config

        build_config(VisionExperimentConfig, {"widht": 3})
    cfg = VisionExperimentConfig(patch=3)
    with pytest.raises(ValueError, match="not a multiple of patch"):
        cfg.model_config((1, 8, 8), 10)


def test_missing_data_is_one_clear_line(tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main(["vision", "--dataset", "cifar10", "--data-root", str(tmp_path), "--out", str(tmp_path / "o"),
               "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1
    assert "CIFAR-10 not found" in err[0] and str(tmp_path) in err[0] and "--download" in err[0]


@pytest.mark.slow
def test_cli_end_to_end_on_digits_reuse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    argv = ["vision", "--dataset", "digits", "--out", str(out), "--seeds", "2", "--epochs", "2",
            "--optimizers", "adam,lp-md:1.1", *TINY]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    for opt, seeds in (("adam", 2), ("lp-md:1.1", 2)):
        runs = results["runs"][opt]
        assert len(runs) == seeds
        for r in runs:
            assert 0.0 <= r["test_acc"] <= 1.0 and 0.0 <= r["test_acc_last"] <= 1.0
            run_dir = out / "runs" / run_name(opt, r["seed"])
            summary = json.loads((run_dir / "summary.json").read_text())
            assert summary["test_acc"] == r["test_acc"] and "test_acc_last" in summary
            hist = json.loads((run_dir / "history.json").read_text())
            assert len(hist) == 2
            maps = np.load(run_dir / "attention_maps.npz")
            assert maps["maps"].shape == (2, 4, 4) and maps["images"].shape == (2, 1, 8, 8)
            # a [CLS] row over 1 + 16 tokens: the patch shares sum to at most 1
            assert (maps["maps"].sum(axis=(1, 2)) <= 1 + 1e-9).all()
        agg = results["aggregate"][opt]["test_acc"]
        accs = [r["test_acc"] for r in runs]
        assert agg["mean"] == pytest.approx(np.mean(accs)) and agg["std"] == pytest.approx(np.std(accs, ddof=1))
    table = (out / "results.md").read_text()
    assert "| adam |" in table and "| lp-md:1.1 |" in table and "test acc (val-best)" in table
    mean = results["aggregate"]["adam"]["test_acc"]["mean"]
    assert f"{100 * mean:.2f}" in table
    for fig in ("curves.png", "qkv_hist.png", "attention_maps.png"):
        assert (out / fig).stat().st_size > 1000
    # the two seeds are different initialisations
    w0 = torch.load(out / "runs" / "adam-seed0" / "best_model.pt")
    w1 = torch.load(out / "runs" / "adam-seed1" / "best_model.pt")
    assert not torch.equal(w0["pos_emb"], w1["pos_emb"])

    # a second invocation reuses every finished run (fit is not called)
    def no_fit(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(classification, "fit", no_fit)
    assert main(argv) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["aggregate"]["adam"]["test_acc"] == results["aggregate"]["adam"]["test_acc"]


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = VisionExperimentConfig(dataset="digits", width=16, depth=1, heads=2, mlp_hidden=16, epochs=3, batch_size=128,
                                 max_train=400, max_test=100, optimizers=("lp-md:1.1",), lrs={"lp-md:1.1": 0.05},
                                 analysis_samples=20, attention_images=1, device="cpu")
    prepared = vx.prepare_vision_data(cfg)
    full = vx.train_one(cfg, prepared, "lp-md:1.1", 0, tmp_path / "full", progress=False)

    steps_per_epoch = -(-len(prepared.data.train) // cfg.batch_size)
    calls = {"n": 0}
    real_call = vx.RandomCropFlip.__call__

    def interrupting(self, images, generator=None):
        calls["n"] += 1
        if calls["n"] == steps_per_epoch + 2:  # in the middle of epoch 2
            raise KeyboardInterrupt
        return real_call(self, images, generator)

    monkeypatch.setattr(vx.RandomCropFlip, "__call__", interrupting)
    with pytest.raises(KeyboardInterrupt):
        vx.train_one(cfg, prepared, "lp-md:1.1", 0, tmp_path / "cut", progress=False)
    assert not (tmp_path / "cut" / "summary.json").exists()
    assert len(json.loads((tmp_path / "cut" / "history.json").read_text())) == 1
    monkeypatch.setattr(vx.RandomCropFlip, "__call__", real_call)
    resumed = vx.train_one(cfg, prepared, "lp-md:1.1", 0, tmp_path / "cut", progress=False)
    assert resumed["epochs_run"] == 3
    assert resumed["test_acc"] == full["test_acc"] and resumed["test_acc_last"] == full["test_acc_last"]
    a = torch.load(tmp_path / "full" / "best_model.pt")
    b = torch.load(tmp_path / "cut" / "best_model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_diverging_run_is_recorded_not_fatal(tmp_path: Path) -> None:
    cfg = VisionExperimentConfig(dataset="digits", width=16, depth=1, heads=2, mlp_hidden=16, epochs=2, batch_size=64,
                                 max_train=300, max_test=60, optimizers=("sgd", "adam"), lrs={"sgd": 1e6}, seeds=1,
                                 analysis_samples=20, attention_images=1, device="cpu")
    results = vx.run_vision_experiment(cfg, tmp_path, progress=False)
    bad = results["runs"]["sgd"][0]
    assert bad["diverged"] is True and bad["test_acc"] is None and "nan" in bad["error"].lower()
    assert results["runs"]["adam"][0]["diverged"] is False
    assert results["aggregate"]["sgd"]["test_acc"]["n"] == 0
    table = (tmp_path / "results.md").read_text()
    assert "| sgd | 1e+06 | 1/1 | - |" in table and "| adam | 0.001 | 0/1 |" in table


def test_run_and_epoch_seconds_of_the_table() -> None:
    from mirrorattn.experiments.vision_analysis import _seconds

    runs = [{"wall_seconds": 530.0}, {"wall_seconds": 590.0}, {"wall_seconds": 560.0}, {"diverged": True}]
    got = _seconds(runs, "wall_seconds")
    assert got["mean"] == pytest.approx(560.0) and got["max"] == 590.0
    assert got["std"] == pytest.approx(math.sqrt(((530 - 560) ** 2 + (590 - 560) ** 2 + 0) / 2))
    assert _seconds([{"wall_seconds": 12.5}], "wall_seconds") == {"mean": 12.5, "std": 0.0, "max": 12.5}
    assert _seconds([{"diverged": True}], "seconds_per_epoch") is None


@pytest.mark.slow
def test_two_workers_give_the_sequential_results(tmp_path: Path) -> None:
    """``workers=2`` trains the runs in spawned processes: the same summaries (bit for bit) as one at a time."""
    cfg = VisionExperimentConfig(dataset="digits", width=16, depth=1, heads=2, mlp_hidden=16, epochs=1, batch_size=64,
                                 max_train=200, max_test=50, optimizers=("adam", "sgd"), seeds=1,
                                 analysis_samples=20, attention_images=1, device="cpu", snapshots="log")
    one = vx.run_vision_experiment(cfg, tmp_path / "one", progress=False)
    two = vx.run_vision_experiment(cfg, tmp_path / "two", progress=False, workers=2)
    for opt in ("adam", "sgd"):
        a, b = one["runs"][opt][0], two["runs"][opt][0]
        assert (a["test_acc"], a["val_acc_best"], a["test_acc_last"]) == (b["test_acc"], b["val_acc_best"],
                                                                         b["test_acc_last"])
        wa = torch.load(tmp_path / "one" / "runs" / run_name(opt, 0) / "snapshots" / "epoch_0001.pt")
        wb = torch.load(tmp_path / "two" / "runs" / run_name(opt, 0) / "snapshots" / "epoch_0001.pt")
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        vx.run_vision_experiment(cfg, tmp_path / "bad", progress=False, workers=0)


@pytest.mark.slow
def test_vision_command_under_torchrun(tmp_path):
    """``torchrun ... -m mirrorattn.torchrun vision``: every process joins the process group before rank 0 locks
    the run folder (it once failed with "run folder ... in use by another process"), and the run finishes."""
    import json
    import os
    import subprocess
    import sys

    args = ["vision", "--dataset", "digits", "--preset", "quick", "--optimizers", "adam", "--seeds", "1", "--epochs",
            "1", "--max-train", "200", "--max-test", "100", "--width", "8", "--depth", "1", "--heads", "2",
            "--mlp-hidden", "16", "--analysis-samples", "20", "--attention-images", "1", "--no-progress",
            "--device", "cpu", "--out", str(tmp_path / "out")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mirrorattn.torchrun", *args]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "runs" / "adam-seed0" / "summary.json").read_text())
    assert summary["epochs_run"] == 1 and summary["analysis"] is not None
