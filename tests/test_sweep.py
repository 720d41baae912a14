"""The step-size sweep (mirrorattn.experiments.sweep): the choice rule, the generic machinery on a fake
experiment, the shared config fields and CLI options, and ``vision-sweep`` / ``vision --lr-from`` end to end."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from mirrorattn.cli import main
from mirrorattn.experiments import vision as vx
from mirrorattn.experiments import vision_cli
from mirrorattn.experiments.classification import run_name
from mirrorattn.experiments.sweep import SweepTarget, run_sweep, select_step
from mirrorattn.experiments.vision import VisionExperimentConfig
from mirrorattn.io import config_hash, write_json
from mirrorattn.train import NonFiniteLossError, Split, TrainData

TINY = ["--patch", "2", "--width", "16", "--depth", "1", "--heads", "2", "--mlp-hidden", "16",
        "--analysis-samples", "50", "--attention-images", "2", "--max-test", "100", "--no-progress", "--device", "cpu"]


def _expected_choice(rows: list[dict], chance: float, n_val: int) -> float:
    """select_step's documented rule, written again: best accuracy, then lower loss, then larger step; then the
    stability back-off to the next smaller step when the next larger one failed and the smaller is within noise."""
    band = 2 * math.sqrt(chance * (1 - chance) / n_val)
    by_lr = sorted(rows, key=lambda r: r["lr"])
    best_acc = max(r["val_acc_best"] for r in rows)
    tied = [r for r in by_lr if r["val_acc_best"] == best_acc]
    losses = [r["val_loss_best"] if r["val_loss_best"] is not None else math.inf for r in tied]
    lowest = min(losses)
    best = [r for r, loss in zip(tied, losses) if loss == lowest][-1]  # the largest step among the lowest losses
    k = by_lr.index(best)
    if 0 < k < len(by_lr) - 1:
        above, below = by_lr[k + 1], by_lr[k - 1]
        above_failed = above["diverged"] or above["val_acc_best"] <= chance + band
        below_ok = not below["diverged"] and below["val_acc_best"] > chance + band
        if above_failed and below_ok and best_acc - below["val_acc_best"] <= band:
            return below["lr"]
    return best["lr"]


def test_select_step_ties_and_warnings():
    def row(lr, acc, loss, diverged=False):
        return {"lr": lr, "val_acc_best": acc, "val_loss_best": loss, "diverged": diverged}

    # n_val 400, chance 0.5: standard error 0.025, two of them 0.05
    rows = [row(1e-3, 0.70, 0.60), row(1e-2, 0.85, 0.40), row(1e-1, 0.60, 0.70), row(1.0, 0.0, None, True)]
    best, warnings = select_step(rows, chance=0.5, n_val=400)
    assert best["lr"] == 1e-2 and warnings == []
    # equal accuracies: the lower validation loss wins (not the smallest step), and the flat grid is reported
    rows = [row(1e-3, 0.765, 0.52), row(1e-2, 0.765, 0.47), row(1e-1, 0.765, 0.49)]
    best, warnings = select_step(rows, chance=0.5, n_val=200)
    assert best["lr"] == 1e-2
    assert len(warnings) == 1 and "no measurable difference" in warnings[0]
    # within two standard errors of chance (0.5 + 2 * 0.025 = 0.55): nothing learned
    rows = [row(1e-3, 0.52, 0.69), row(1e-2, 0.549, 0.69), row(1e-1, 0.62, 0.9, False)]
    rows[2]["val_acc_best"] = 0.50
    best, warnings = select_step(rows, chance=0.5, n_val=400)
    assert best["lr"] == 1e-2 and any("within noise of chance" in w for w in warnings)
    # 0.56 is just above the noise band of chance, and the grid is not flat (0.50 .. 0.56 > 0.05)
    rows[1]["val_acc_best"] = 0.56
    assert select_step(rows, chance=0.5, n_val=400)[1] == []
    # stability margin: the best step's larger neighbour diverged, its smaller one is within noise -> take it
    rows = [row(1e-3, 0.60, 0.6), row(1e-2, 0.66, 0.6), row(3e-2, 0.69, 0.6), row(1e-1, 0.0, None, True)]
    best, _ = select_step(rows, chance=0.5, n_val=400)
    assert best["lr"] == 1e-2 and best["backed_off_from"] == 3e-2
    rows[1]["val_acc_best"] = 0.63  # 0.06 below the best: more than two standard errors, keep the best
    assert "backed_off_from" not in select_step(rows, chance=0.5, n_val=400)[0]
    rows[3] = row(1e-1, 0.51, 0.69)  # a larger step that stayed at chance counts as failed too
    rows[1]["val_acc_best"] = 0.66
    assert select_step(rows, chance=0.5, n_val=400)[0]["lr"] == 1e-2
    # the best step at the end of the grid: the optimum may lie beyond
    rows = [row(1e-3, 0.60, 0.6), row(1e-2, 0.70, 0.5), row(1e-1, 0.80, 0.4)]
    best, warnings = select_step(rows, chance=0.5, n_val=400)
    assert best["lr"] == 1e-1 and len(warnings) == 1 and "largest of the grid" in warnings[0]
    with pytest.raises(ValueError, match="at least one"):
        select_step([], chance=0.5, n_val=10)


def test_select_step_agrees_with_the_rule_written_again():
    """Random grids (ties, divergences, near-chance steps): select_step's choice is the rule's."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 6))
        lrs = sorted(rng.choice([1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 1.0], size=n, replace=False).tolist())
        rows = []
        for lr in lrs:
            diverged = bool(rng.random() < 0.2)
            acc = 0.0 if diverged else float(rng.choice([0.5, 0.52, 0.6, 0.62, 0.64, 0.7]))
            loss = None if diverged else float(rng.choice([0.4, 0.5]))
            rows.append({"lr": lr, "val_acc_best": acc, "val_loss_best": loss, "diverged": diverged})
        best, _ = select_step(rows, chance=0.5, n_val=400)
        assert best["lr"] == _expected_choice(rows, 0.5, 400), rows


def test_old_names_stay_importable_from_text():
    from mirrorattn.experiments import text

    # (text.select_step, a re-export kept only for this test, was removed: issue 13 item 7)
    assert callable(text.run_lr_sweep) and callable(vx.run_vision_sweep)
    assert text.SWEEP.train_one is text.train_one and vx.SWEEP.train_one is vx.train_one


# ------------------------------------------------------------------ the machinery on a fake experiment

class _Prepared:
    def __init__(self, data: TrainData) -> None:
        self.data, self.summary = data, {"name": "fake"}


_CAPS: list[int | None] = []
_SEEN_TEST: list[object] = []
#: the fake experiment's outcome per step: validation accuracy per epoch and loss, "record" (diverged,
#: recorded as vision does) or "raise" (NonFiniteLossError, as text does)
_OUTCOME = {1e-3: ([0.5, 0.6], 0.7), 1e-2: ([0.7, 0.8], 0.5), 1e-1: "record", 1.0: "raise"}


def _fake_prepare(config, max_train, progress=True):
    _CAPS.append(max_train)
    x, y = torch.zeros(8, 2), torch.tensor([0, 0, 0, 1, 0, 1, 0, 0])
    return _Prepared(TrainData(Split(x, y), Split(x, y), Split(x[:2], y[:2])))


def _fake_train_one(config, prepared, optimizer, seed, out_dir, *, lr, epochs, analyse, progress, overwrite=False):
    _SEEN_TEST.append(prepared.data.test)
    assert seed == 0 and epochs == config.sweep_epochs and analyse is False
    outcome = _OUTCOME[lr]
    if outcome == "record":
        return {"diverged": True, "error": "loss is nan at epoch 1", "test_acc": None}
    if outcome == "raise":
        raise NonFiniteLossError("loss is inf at epoch 1, batch 3")
    accs, loss = outcome
    hist = [{"epoch": i + 1, "val_acc": a, "val_loss": loss + 0.1 * (len(accs) - 1 - i), "train_acc": a}
            for i, a in enumerate(accs)]
    best = max(range(len(accs)), key=lambda i: accs[i])
    return {"val_acc_best": accs[best], "best_epoch": best + 1, "train_seconds": 0.5, "diverged": False,
            "val_loss_best": hist[best]["val_loss"], "train_acc_last": hist[-1]["train_acc"]}


def test_run_sweep_on_a_fake_experiment(tmp_path: Path) -> None:
    target = SweepTarget(prepare=_fake_prepare, train_one=_fake_train_one, command="fake")
    cfg = VisionExperimentConfig(optimizers=("adam", "sgd"), sweep_lrs=(1e-3, 1e-2, 1e-1, 1.0),
                                 sweep_grids={"adam": (1e-3, 1e-2)}, sweep_epochs=2, sweep_max_train=6)
    _CAPS.clear(), _SEEN_TEST.clear()
    result = run_sweep(target, cfg, tmp_path, progress=False)
    assert _CAPS == [6] and len(_SEEN_TEST) == 6 and all(t is None for t in _SEEN_TEST)  # no test split, ever
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert (tmp_path / "sweep.png").stat().st_size > 1000
    assert saved["n_val"] == 8 and saved["chance"] == pytest.approx(6 / 8)  # majority class 0: 6 of 8
    assert saved["lrs"] == {"adam": 1e-2, "sgd": 1e-2} == result["lrs"]
    grid = saved["sweep"]["sgd"]["grid"]
    assert [r["lr"] for r in grid] == [1e-3, 1e-2, 1e-1, 1.0]
    assert grid[1]["val_acc_best"] == 0.8 and grid[1]["best_epoch"] == 2 and grid[1]["val_loss_best"] == 0.5
    assert grid[0]["val_loss_best"] == pytest.approx(0.7) and grid[1]["train_acc_last"] == 0.8
    assert [r["diverged"] for r in grid] == [False, False, True, True]
    assert grid[2]["val_acc_best"] == 0.0 and "nan" in grid[2]["error"] and "inf" in grid[3]["error"]
    for opt, row in saved["sweep"].items():  # the choice is the rule's (written again in this test)
        assert row["best_lr"] == _expected_choice(row["grid"], saved["chance"], saved["n_val"]), opt
    assert saved["sweep"]["adam"]["best_val_acc"] == 0.8 and saved["sweep"]["adam"]["backed_off_from"] is None
    assert isinstance(saved["warnings"], list) and saved["config"]["sweep_epochs"] == 2
    with pytest.raises(ValueError, match="workers"):
        run_sweep(target, cfg, tmp_path, progress=False, workers=0)


# ------------------------------------------------------------------ config fields, presets and options

def test_sweep_fields_are_shared_and_validated() -> None:
    from mirrorattn.experiments.text import TextExperimentConfig
    from mirrorattn.experiments.text_presets import PRESETS as TEXT_PRESETS

    default = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
    assert VisionExperimentConfig().sweep_lrs == TextExperimentConfig().sweep_lrs == default
    quick = TEXT_PRESETS["quick"]
    assert quick["sweep_lrs"] == (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1) and quick["sweep_epochs"] == 2
    assert quick["sweep_max_train"] == 4000 and quick["sweep_grids"]["adam"] == (3e-4, 1e-3, 3e-3, 1e-2)
    cfg = VisionExperimentConfig(sweep_lrs=(0.1, 1.0), sweep_grids={"adam": (1e-3,)})
    assert cfg.sweep_grid("adam") == (1e-3,) and cfg.sweep_grid("sgd") == (0.1, 1.0)
    for bad, match in (({"sweep_grids": {"sgd": ()}}, "sweep grid of sgd"),
                       ({"sweep_lrs": (0.1, -1.0)}, "sweep grid of .* positive steps"),
                       ({"sweep_epochs": 0}, "sweep_epochs"), ({"sweep_max_train": 1}, "sweep_max_train")):
        with pytest.raises(ValueError, match=match):
            VisionExperimentConfig(**bad).validate()
        with pytest.raises(ValueError, match=match):
            TextExperimentConfig(**bad).validate()


def test_vision_quick_presets_sweep_defaults() -> None:
    quick = vx.PRESETS["quick"]
    assert (quick["cifar10"]["sweep_epochs"], quick["cifar10"]["sweep_max_train"]) == (1, None)
    assert (quick["fashion-mnist"]["sweep_epochs"], quick["fashion-mnist"]["sweep_max_train"]) == (1, None)
    assert (quick["digits"]["sweep_epochs"], quick["digits"]["sweep_max_train"]) == (5, None)
    for ds in ("cifar10", "fashion-mnist", "digits"):
        cfg = VisionExperimentConfig(**vx.preset_values("quick", ds))
        assert cfg.sweep_grid("adam") == (3e-4, 1e-3, 3e-3)
        assert cfg.sweep_grid("lp-md:1.1") == cfg.sweep_grid("sgd") == (0.03, 0.1, 0.3, 1.0, 3.0)
        cfg.validate()


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    vision_cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(list(argv))


def test_vision_sweep_options_and_lr_from(tmp_path: Path) -> None:
    args = _parse("vision-sweep", "--out", "o", "--sweep-lrs", "1e-3,1e-2", "--sweep-epochs", "2", "--workers", "2",
                  "--sweep-max-train", "none")
    cfg = vision_cli.build_vision_config(args)
    assert cfg.sweep_grid("adam") == cfg.sweep_grid("sgd") == (1e-3, 1e-2) and cfg.sweep_epochs == 2
    assert cfg.sweep_max_train is None and args.workers == 2 and not hasattr(args, "lr_from")
    with pytest.raises(ValueError, match="--sweep-lrs"):
        vision_cli.build_vision_config(_parse("vision-sweep", "--out", "o", "--sweep-lrs", "1e-3,fast"))
    assert _parse("vision", "--out", "o", "--workers", "2").workers == 2  # the comparison's runs in parallel too
    sweep = tmp_path / "sweep.json"
    write_json(sweep, {"lrs": {"adam": 3e-3, "sgd": 0.3, "lp-md:1.1": 1.0}})
    cfg = vision_cli.build_vision_config(_parse("vision", "--out", "o", "--optimizers", "adam,sgd",
                                                "--lr-from", str(sweep)))
    assert cfg.lrs == {"adam": 3e-3, "sgd": 0.3}  # a step of an optimizer not run is dropped
    cfg = vision_cli.build_vision_config(_parse("vision", "--out", "o", "--lr-from", str(sweep), "--lr", "sgd=0.5"))
    assert cfg.lr_for("sgd") == 0.5 and cfg.lr_for("adam") == 3e-3  # --lr wins over --lr-from


@pytest.mark.parametrize("content, what", [
    (None, "cannot read it"),
    ("{not json", "not a JSON file"),
    ('{"sweep": {}}', "no 'lrs' table"),
    ('{"lrs": {"adam": "fast"}}', "the step of adam is 'fast'"),
    ('{"lrs": {"sgd": -1}}', "the step of sgd is -1"),
])
@pytest.mark.parametrize("command", ["vision", "text"])
def test_a_bad_lr_from_file_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture, content, what,
                                              command) -> None:
    path = tmp_path / "sweep.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    assert main([command, "--out", str(tmp_path / "o"), "--lr-from", str(path), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--lr-from {path}" in err[0] and what in err[0]
    assert f"mirrorattn {command}-sweep" in err[0] and not (tmp_path / "o").exists()


# ------------------------------------------------------------------ end to end on digits

@pytest.mark.slow
def test_vision_sweep_then_lr_from_on_digits(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen_tests: list[object] = []
    real = vx.SWEEP

    def recording_train_one(config, prepared, *a, **k):
        seen_tests.append(prepared.data.test)
        return real.train_one(config, prepared, *a, **k)

    monkeypatch.setattr(vx, "SWEEP", SweepTarget(real.prepare, recording_train_one, real.command))
    out = tmp_path / "sweep"
    common = ["--dataset", "digits", "--preset", "quick", "--max-train", "200", *TINY, "--patch", "4",
              "--batch-size", "8"]
    # per-optimizer grids (a TOML file) that avoid the preset's steps (adam 1e-3, sgd 3e-1): --lr-from matters below
    grids = tmp_path / "grids.toml"
    grids.write_text("[sweep_grids]\nadam = [3e-3, 3e-2]\nsgd = [0.1, 1.0]\n", encoding="utf-8")
    assert main(["vision-sweep", *common, "--optimizers", "adam,sgd", "--config", str(grids), "--sweep-epochs", "1",
                 "--out", str(out)]) == 0
    assert len(seen_tests) == 4 and all(t is None for t in seen_tests)  # the sweep's data has no test split
    saved = json.loads((out / "sweep.json").read_text())
    assert (out / "sweep.png").is_file() and set(saved["lrs"]) == {"adam", "sgd"}
    # n_val and chance, from the data: the validation split of the 200-image pool (val_fraction 0.1)
    from mirrorattn.data.vision import load_vision_dataset

    val = load_vision_dataset("digits", max_train=200, val_fraction=0.1, split_seed=0).val
    labels = np.asarray(val.labels)
    assert saved["n_val"] == len(labels) == 20
    assert saved["chance"] == pytest.approx(np.bincount(labels).max() / len(labels))
    for opt, row in saved["sweep"].items():
        assert [r["lr"] for r in row["grid"]] == {"adam": [3e-3, 3e-2], "sgd": [0.1, 1.0]}[opt]
        for r in row["grid"]:  # each row's accuracy is its run's best validation epoch
            hist = json.loads((out / "runs" / run_name(opt, 0, r["lr"]) / "history.json").read_text())
            assert len(hist) == 1 and r["val_acc_best"] == max(h["val_acc"] for h in hist)
        assert row["best_lr"] == saved["lrs"][opt] == _expected_choice(row["grid"], saved["chance"], saved["n_val"])
    run_out = tmp_path / "run"
    assert main(["vision", *common, "--optimizers", "adam,sgd", "--seeds", "1", "--epochs", "1",
                 "--lr-from", str(out / "sweep.json"), "--out", str(run_out)]) == 0
    for opt in ("adam", "sgd"):
        run_config = json.loads((run_out / "runs" / run_name(opt, 0) / "run_config.json").read_text())
        assert run_config["lr"] == saved["lrs"][opt] and run_config["train"]["lr"] == saved["lrs"][opt]


@dataclass
class _ToyModel:
    features: int = 2


def _fake_spec(config, prepared, optimizer, seed, out_dir, *, lr, epochs, analyse):
    return config.run_spec(optimizer, seed, _ToyModel(), lr=lr, epochs=epochs, build_model=lambda: None,
                           data=prepared.data)


def test_a_sweep_checks_every_run_folder_before_its_first_run(tmp_path: Path) -> None:
    """A finished sweep run of other settings (here: another sweep_epochs) is refused before any sweep run."""
    from mirrorattn.experiments.classification import RunConflictError

    target = SweepTarget(prepare=_fake_prepare, train_one=_fake_train_one, command="fake", make_spec=_fake_spec)
    old = VisionExperimentConfig(optimizers=("adam",), sweep_grids={"adam": (1e-3, 1e-2)}, sweep_epochs=1)
    prepared = _fake_prepare(old, None)
    folder = tmp_path / "runs" / run_name("adam", 0, 1e-2)
    spec = _fake_spec(old, prepared, "adam", 0, folder, lr=1e-2, epochs=1, analyse=False)
    write_json(folder / "run_config.json", {"config_hash": config_hash(spec.identity), **spec.identity})
    write_json(folder / "summary.json", {"config_hash": config_hash(spec.identity), "val_acc_best": 0.7})
    new = VisionExperimentConfig(optimizers=("adam",), sweep_grids={"adam": (1e-3, 1e-2)}, sweep_epochs=2)
    _SEEN_TEST.clear()
    with pytest.raises(RunConflictError, match=f"run folder {folder} holds a finished run .*epochs 1 -> 2"):
        run_sweep(target, new, tmp_path, progress=False)
    assert _SEEN_TEST == [] and not (tmp_path / "sweep.json").exists()  # not even the first step ran
    assert run_sweep(target, new, tmp_path, progress=False, overwrite=True)["lrs"] == {"adam": 1e-2}
