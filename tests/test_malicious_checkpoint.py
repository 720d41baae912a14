"""Crafted ``checkpoint.pt`` / ``best_model.pt`` in a copied run folder: resuming never runs their code.

Each file is a pickle whose ``__reduce__`` writes a marker file when unpickled (built here in a few
lines). Resuming the run must not write the marker, must say so in one line on stderr and must train
the run cleanly from the start; the loaders raise one-line :class:`CheckpointError` for them.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

import mirrorattn.experiments.classification as cl
from mirrorattn.experiments.vision import VisionExperimentConfig
from mirrorattn.train import TrainData
from mirrorattn.train.checkpoint import CheckpointError, load_checkpoint, load_weights
from toy_runs import ToyModel, toy_data


class Payload:
    """Unpickling this writes ``marker`` (what a hostile pickle could do with any code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


_data = toy_data


def _spec(data: TrainData) -> cl.RunSpec:
    config = VisionExperimentConfig(epochs=2, batch_size=16, device="cpu", stop_train_acc=None)
    return config.run_spec("adam", 0, ToyModel(), lr=0.05, build_model=lambda: nn.Linear(4, 2), data=data)


def _craft(path: Path, marker: Path, fmt: str) -> None:
    """Replace ``path`` by a hostile pickle: torch's zip format (a checkpoint-like dict) or a bare pickle."""
    if fmt == "torch":
        torch.save({"version": 2, "identity": {}, "model": Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps({"version": 2, "model": Payload(marker)}))


@pytest.fixture
def copied_run(tmp_path: Path) -> tuple[Path, dict, TrainData]:
    """A finished toy run whose summary is gone: the next run_one resumes it from its checkpoint."""
    data = _data()
    folder = tmp_path / "runs" / "adam-seed0"
    clean = cl.run_one(_spec(data), folder, progress=False)
    (folder / "summary.json").unlink()
    return folder, clean, data


@pytest.mark.parametrize("fmt", ["torch", "pickle"])
@pytest.mark.parametrize("name", ["checkpoint.pt", "best_model.pt"])
def test_resuming_a_crafted_file_runs_no_code_and_trains_cleanly(copied_run, tmp_path, capsys, name, fmt) -> None:
    folder, clean, data = copied_run
    marker = tmp_path / "marker"
    _craft(folder / name, marker, fmt)
    capsys.readouterr()
    again = cl.run_one(_spec(data), folder, progress=False)
    assert not marker.exists(), "unpickling the crafted file ran its code"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(folder / name) in err[0] and "starts over" in err[0], err
    assert again["epochs_run"] == 2 and again["test_acc"] == clean["test_acc"]  # trained again from the start
    assert (folder / "summary.json").is_file()


@pytest.mark.parametrize("fmt", ["torch", "pickle"])
def test_the_loaders_refuse_crafted_files_in_one_line(tmp_path: Path, fmt: str) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "file.pt"
    _craft(path, marker, fmt)
    for load in (load_checkpoint, load_weights):
        with pytest.raises(CheckpointError, match="cannot be read safely") as err:
            load(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


def test_plain_but_wrong_files_are_refused(tmp_path: Path) -> None:
    torch.save([1, 2, 3], tmp_path / "list.pt")
    torch.save({"version": 2}, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="not a version-2"):
        load_checkpoint(tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="lacks rng"):
        load_checkpoint(tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="state_dict"):
        load_weights(tmp_path / "list.pt")
