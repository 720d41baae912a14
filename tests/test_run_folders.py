"""Run folders: a finished run is never deleted implicitly, every run of a command is checked before any
trains, damaged records of a run count as missing, unfinished runs of other settings are moved aside, and a
second process on the same run folder exits with one line (two real processes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from torch import nn

import mirrorattn.experiments.classification as cl
from mirrorattn.experiments import vision as vx
from mirrorattn.experiments.vision import VisionExperimentConfig
from mirrorattn.io import FolderInUseError, config_hash, lock_folder
from mirrorattn.train import TrainData
from toy_runs import ToyModel, record_resume, toy_data

_data = toy_data


def _config(**kw) -> VisionExperimentConfig:
    return VisionExperimentConfig(**{"epochs": 2, "batch_size": 16, "device": "cpu", "stop_train_acc": None, **kw})


def _spec(data: TrainData, lr: float = 0.05, **kw) -> cl.RunSpec:
    return _config(**kw).run_spec("adam", 0, ToyModel(), lr=lr, build_model=lambda: nn.Linear(4, 2), data=data)


_record_fit = record_resume


# ------------------------------------------------------------------ what differs, in one line

def test_identity_diff_names_the_changed_settings() -> None:
    old = {"config_hash": "abc", "lr": 0.001, "train": {"lr": 0.001, "optimizer": "adam"}, "epochs": 4,
           "data": {"max_train": None}, "gone": 1}
    new = {"train": {"lr": 0.003, "optimizer": "adam"}, "epochs": 4, "data": {"max_train": 500}, "analysis": (1, 2)}
    assert cl.identity_diff(old, new) == ('train.lr 0.001 -> 0.003; data.max_train null -> 500; '
                                          'analysis (unset) -> [1, 2]; gone 1 -> (unset)')
    assert cl.identity_diff({"config_hash": "abc", "a": 1}, {"a": 1}).startswith("config hash abc -> ")
    many = cl.identity_diff({f"k{i}": i for i in range(9)}, {f"k{i}": -i for i in range(1, 9)}, limit=3)
    assert many.endswith("; and 6 more") and many.count("->") == 3


# ------------------------------------------------------------------ finished runs are kept

def test_a_comparison_checks_every_run_before_training_any(tmp_path: Path, monkeypatch) -> None:
    """Rerunning into the same --out with another step for the second optimizer: refused before the first,
    new, optimizer trains (no folder of it is made); --overwrite replaces only that run."""
    small = dict(dataset="digits", patch=2, width=16, depth=1, heads=2, mlp_hidden=16, epochs=1, seeds=1,
                 batch_size=128, max_train=200, max_test=60, analysis_samples=10, attention_images=1, device="cpu")
    first = vx.run_vision_experiment(VisionExperimentConfig(optimizers=("adam", "sgd"), **small), tmp_path,
                                     progress=False)
    sgd = tmp_path / "runs" / "sgd-seed0" / "summary.json"
    before = sgd.read_text()

    def no_fit(*args, **kwargs):
        raise AssertionError("a run trained before the check of every run folder")

    monkeypatch.setattr(cl, "fit", no_fit)
    changed = VisionExperimentConfig(optimizers=("lp-md:1.1", "sgd"), lrs={"sgd": 0.5}, **small)
    with pytest.raises(cl.RunConflictError) as err:
        vx.run_vision_experiment(changed, tmp_path, progress=False)
    msg = str(err.value)
    assert f"run folder {tmp_path / 'runs' / 'sgd-seed0'} holds a finished run" in msg and "\n" not in msg
    assert "train.lr 0.001 -> 0.5" in msg and "--overwrite" in msg
    assert sgd.read_text() == before and not (tmp_path / "runs" / "lp-md-1.1-seed0").exists()
    monkeypatch.undo()
    replaced = vx.run_vision_experiment(changed, tmp_path, progress=False, overwrite=True)
    assert replaced["runs"]["sgd"][0]["lr"] == 0.5 and first["runs"]["sgd"][0]["lr"] == 0.001
    assert json.loads(sgd.read_text())["lr"] == 0.5 and (tmp_path / "runs" / "adam-seed0" / "summary.json").is_file()


def test_preflight_counts_the_other_conflicts_and_changes_nothing(tmp_path: Path) -> None:
    data = _data()
    for name in ("a", "b", "c"):
        cl.run_one(_spec(data), tmp_path / name, progress=False)
    listing = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(cl.RunConflictError, match=r"train.lr 0.05 -> 0.1.*\(and 2 more run folder"):
        cl.preflight([(_spec(data, lr=0.1), tmp_path / name) for name in ("a", "b", "c")])
    assert sorted(str(p) for p in tmp_path.rglob("*")) == listing
    cl.preflight([(_spec(data, lr=0.1), tmp_path / name) for name in ("a", "b", "c")], overwrite=True)
    cl.preflight([(_spec(data), tmp_path / name) for name in ("a", "b", "c")])  # the same runs: reused


def test_two_runs_of_one_command_may_not_share_a_folder(tmp_path: Path) -> None:
    """Sweep folders name the step with one digit: 1e-3 and 1.2e-3 would be one folder."""
    assert cl.run_name("adam", 0, 1e-3) == cl.run_name("adam", 0, 1.2e-3)
    data = _data()
    folder = tmp_path / cl.run_name("adam", 0, 1e-3)
    with pytest.raises(ValueError, match="would share the run folder .*lr 0.001 -> 0.0012"):
        cl.preflight([(_spec(data, lr=1e-3), folder), (_spec(data, lr=1.2e-3), folder)])
    cl.preflight([(_spec(data), folder), (_spec(data), folder)])  # the same run twice is no conflict


def test_an_unfinished_run_of_other_settings_is_moved_aside(tmp_path: Path, capsys, monkeypatch) -> None:
    data = _data()
    folder = tmp_path / "adam-seed0"
    cl.run_one(_spec(data), folder, progress=False)
    (folder / "summary.json").unlink()  # interrupted after its last checkpoint: not finished
    kept = {p.name: p.read_bytes() for p in folder.iterdir() if p.name != ".lock"}
    capsys.readouterr()
    calls = _record_fit(monkeypatch)
    new = cl.run_one(_spec(data, lr=0.1), folder, progress=False)
    aside = tmp_path / "adam-seed0.old-1"
    assert calls == [False] and new["lr"] == 0.1 and new["epochs_run"] == 2
    assert {p.name: p.read_bytes() for p in aside.iterdir()} == kept  # everything of the old run, unchanged
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"moved to {aside}" in err[0] and "train.lr 0.05 -> 0.1" in err[0]
    (folder / "summary.json").unlink()
    cl.run_one(_spec(data), folder, progress=False)  # and back: a second aside folder, the first one kept
    assert (tmp_path / "adam-seed0.old-2" / "checkpoint.pt").is_file() and aside.is_dir()


# ------------------------------------------------------------------ damaged records of the run itself

@pytest.mark.parametrize("summary, run_config, resumed", [
    ("", None, True), ("[1, 2]", None, True), ('{"no": "hash"}', None, True),
    ("{trunc", "", False), (None, "\x00\x00", True),
])
def test_damaged_records_of_the_run_count_as_missing(tmp_path: Path, capsys, monkeypatch, summary, run_config,
                                                     resumed) -> None:
    data = _data()
    folder = tmp_path / "run"
    first = cl.run_one(_spec(data), folder, progress=False)
    if summary is None:  # a summary without analysis (analysis now asked): the run is resumed to add it
        (folder / "summary.json").write_text(json.dumps({**first, "analysis": None}))
    else:
        (folder / "summary.json").write_text(summary)
    if run_config is not None:
        (folder / "run_config.json").write_text(run_config)
    history = (folder / "history.json").read_text()
    calls = _record_fit(monkeypatch)
    capsys.readouterr()
    spec = _spec(data)
    if summary is None:
        spec.analyse = lambda model, write: {"norm": float(model.weight.detach().norm())}
    again = cl.run_one(spec, folder, progress=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"run folder {folder}: damaged ") and "treated as missing" in err[0]
    if resumed:  # from the checkpoint of the last epoch: nothing is trained again
        assert calls == [True] and "resuming the run from its checkpoint" in err[0]
        assert (folder / "history.json").read_text() == history
    else:  # nothing says whose the folder's run is: it is moved aside and trained from the start
        assert calls == [False] and "moved to" in err[0] and (tmp_path / "run.old-1" / "checkpoint.pt").is_file()
    assert again["test_acc"] == first["test_acc"] and json.loads((folder / "summary.json").read_text()) == again
    assert json.loads((folder / "run_config.json").read_text())["config_hash"] == config_hash(spec.identity)


def test_a_damaged_run_config_beside_a_finished_summary_is_reused(tmp_path: Path, monkeypatch) -> None:
    data = _data()
    first = cl.run_one(_spec(data), tmp_path, progress=False)
    (tmp_path / "run_config.json").write_text("{")
    monkeypatch.setattr(cl, "fit", lambda *a, **k: pytest.fail("a finished run was trained again"))
    assert cl.run_one(_spec(data), tmp_path, progress=False) == first


# ------------------------------------------------------------------ one process per run folder

_BLOCKED_RUN = """
import sys, time
from pathlib import Path
from dataclasses import dataclass
import torch
from torch import nn
import mirrorattn.experiments.classification as cl
from mirrorattn.experiments.vision import VisionExperimentConfig
from mirrorattn.train import Split, TrainData

folder, ready, release = (Path(a) for a in sys.argv[1:4])

@dataclass
class ToyModel:
    features: int = 4

class Waiting(nn.Linear):
    def forward(self, x):
        ready.touch()
        while not release.exists():
            time.sleep(0.02)
        return super().forward(x)

g = torch.Generator().manual_seed(0)
def split(n):
    x = torch.randn(n, 4, generator=g)
    return Split(x, (x[:, 0] > 0).long())
data = TrainData(split(64), split(32), split(32))
config = VisionExperimentConfig(epochs=2, batch_size=16, device="cpu", stop_train_acc=None)
spec = config.run_spec("adam", 0, ToyModel(), lr=0.05, build_model=lambda: Waiting(4, 2), data=data)
print(cl.run_one(spec, folder, progress=False)["epochs_run"])
"""


def test_a_second_process_on_the_same_run_exits_with_one_line(tmp_path: Path, monkeypatch) -> None:
    folder, ready, release = tmp_path / "runs" / "adam-seed0", tmp_path / "ready", tmp_path / "release"
    first = subprocess.Popen([sys.executable, "-c", _BLOCKED_RUN, str(folder), str(ready), str(release)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(3000):  # the first process trains (holds the lock) once its model runs
            if ready.exists() or first.poll() is not None:
                break
            subprocess.run(["sleep", "0.02"])
        assert ready.exists(), first.communicate()
        with pytest.raises(FolderInUseError) as err:
            cl.run_one(_spec(_data()), folder, progress=False)
        assert str(err.value) == (f"run folder {folder} is in use by another process (pid {first.pid}); "
                                  "wait for it to finish or use another --out")
    finally:
        release.touch()
        out, errs = first.communicate(timeout=60)
    assert first.returncode == 0 and out.strip() == "2", errs
    monkeypatch.setattr(cl, "fit", lambda *a, **k: pytest.fail("the finished run was trained again"))
    assert cl.run_one(_spec(_data()), folder, progress=False)["epochs_run"] == 2  # the first one's result


def test_the_cli_refuses_a_run_folder_in_use_in_one_line(tmp_path: Path) -> None:
    """The CLI in a second, real process, while this process holds the lock of one of its run folders."""
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "mirrorattn", "vision", "--dataset", "digits", "--out", str(out), "--seeds", "1",
            "--epochs", "1", "--optimizers", "adam,sgd", "--max-train", "100", "--no-progress", "--device", "cpu"]
    with lock_folder(out / "runs" / "sgd-seed0"):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(err) == 1, done.stderr
    assert f"run folder {out / 'runs' / 'sgd-seed0'} is in use by another process (pid " in err[0]
    assert not (out / "runs" / "adam-seed0").exists()  # refused before the first run trained


_DDP_JOB = """
import json
import sys
from dataclasses import dataclass
from pathlib import Path
import torch
from torch import nn
import mirrorattn.experiments.classification as cl
from mirrorattn.experiments.vision import VisionExperimentConfig
from mirrorattn.io import FolderInUseError
from mirrorattn.train import Split, TrainData, init_distributed
from mirrorattn.train.distributed import exit_process

torch.set_num_threads(1)
rank = init_distributed("cpu").rank
folder, busy = Path(sys.argv[1]), Path(sys.argv[2])

@dataclass
class ToyModel:
    features: int = 4

g = torch.Generator().manual_seed(0)
def split(n):
    x = torch.randn(n, 4, generator=g)
    return Split(x, (x[:, 0] > 0).long())
data = TrainData(split(64), split(32), split(32))

def spec(lr):
    config = VisionExperimentConfig(epochs=2, batch_size=16, device="cpu", stop_train_acc=None)
    return config.run_spec("adam", 0, ToyModel(), lr=lr, build_model=lambda: nn.Linear(4, 2), data=data)

first = cl.run_one(spec(0.05), folder, progress=False)
reused = cl.run_one(spec(0.05), folder, progress=False)  # on every process: rank 0's summary.json
assert reused == json.loads((folder / "summary.json").read_text()) and reused["test_acc"] == first["test_acc"]
for what, lr, where, error in (("conflict", 0.1, folder, cl.RunConflictError), ("busy", 0.05, busy, FolderInUseError)):
    try:
        cl.run_one(spec(lr), where, progress=False)
    except error:
        print(f"rank {rank}: {what} refused", flush=True)
print(f"rank {rank}: epochs {first['epochs_run']}", flush=True)
exit_process(0)  # both processes wait for each other, leave the group and exit
"""


@pytest.mark.slow
def test_under_ddp_rank_0_decides_and_every_process_follows(tmp_path: Path) -> None:
    """Two gloo processes (torchrun): reuse, a refused conflict and a folder in use end both, none hangs."""
    import os

    script, busy = tmp_path / "job.py", tmp_path / "busy"
    script.write_text(_DDP_JOB)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(tmp_path / "run"), str(busy)]
    with lock_folder(busy):
        done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                              timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for rank in (0, 1):
        for line in ("conflict refused", "busy refused", "epochs 2"):
            assert f"rank {rank}: {line}" in done.stdout, done.stdout
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["lr"] == 0.05
