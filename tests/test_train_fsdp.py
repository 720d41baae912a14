"""FSDP2 in the training loop: 2 CPU processes (gloo, torchrun) with ``fsdp=True`` follow the path of 1 process,
and a run resumed from its sharded (torch.distributed.checkpoint) checkpoint ends where an uninterrupted one ends."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from mirrorattn.train import TrainConfig
from test_train_ddp import SCRIPT as DDP_SCRIPT
from toy_runs import torchrun_job

# the DDP test's model, data and config (text transformer, l_1.5-MD, summed loss, gradient clipping), with fsdp
SCRIPT = DDP_SCRIPT.split('if __name__ == "__main__":')[0] + '''
if __name__ == "__main__":
    import dataclasses
    torch.set_num_threads(1)
    optimizer, out = sys.argv[1], sys.argv[2]
    model, data, config = make(optimizer)
    fit(model, data, dataclasses.replace(config, fsdp=True), out + "/whole", progress=False)
    model, data, config = make(optimizer)  # the same run, stopped after epoch 1 and resumed by a fresh fit
    first = fit(model, data, dataclasses.replace(config, fsdp=True, epochs=1), out + "/resumed", progress=False)
    if torch.distributed.get_rank() == 0:  # rank 0's history is the checkpoint's (each rank times its own epochs)
        torch.save(first["history"], out + "/first_history.pt")
    model, data, config = make(optimizer)
    fit(model, data, dataclasses.replace(config, fsdp=True), out + "/resumed", resume=True, progress=False)
    exit_process(0)  # torch keeps the FSDP2 group alive: its threads can abort the interpreter's teardown
'''


def _sharded_state(run_dir) -> dict:
    """The model and optimizer state of a run's current sharded checkpoint, gathered into one file."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    folder = run_dir / ckpt["model"]["sharded_checkpoint"]
    dcp_to_torch_save(folder, run_dir / "gathered.pt")
    return {"ckpt": ckpt, **torch.load(run_dir / "gathered.pt", weights_only=False)}


@pytest.mark.slow
def test_two_gloo_processes_with_fsdp_match_one_process_and_resume(tmp_path):
    optimizer = "lp-md:1.5"
    proc, namespace = torchrun_job(tmp_path, "fsdp_job", SCRIPT, optimizer, str(tmp_path / "fsdp"), timeout=300)
    assert "starts over" not in proc.stderr, proc.stderr[-3000:]
    model, data, config = namespace["make"](optimizer)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    from mirrorattn.train import fit

    single = fit(model, data, config, tmp_path / "single", progress=False)
    ref = torch.load(tmp_path / "single" / "checkpoint.pt", weights_only=True)
    whole, resumed = _sharded_state(tmp_path / "fsdp" / "whole"), _sharded_state(tmp_path / "fsdp" / "resumed")
    assert whole["model"].keys() == ref["model"].keys()
    for k, v in ref["model"].items():
        torch.testing.assert_close(whole["model"][k], v, rtol=1e-10, atol=1e-12, msg=k)
    assert max((ref["model"][k] - init[k]).abs().max().item() for k in init) > 1e-3  # training moved it
    for r1, r2 in zip(single["history"], whole["ckpt"]["history"], strict=True):
        assert r1["train_acc"] == r2["train_acc"] and r1["val_acc"] == r2["val_acc"]
        assert r1["train_loss"] == pytest.approx(r2["train_loss"], rel=1e-10)
    # the resumed run: the same weights and optimizer state (dual variables), bit for bit
    for part in ("model", "optim"):
        flat_w, flat_r = _flatten(whole[part]), _flatten(resumed[part])
        assert flat_w.keys() == flat_r.keys() and flat_w
        for k in flat_w:
            same = torch.equal if isinstance(flat_w[k], torch.Tensor) else (lambda a, b: a == b)
            assert same(flat_w[k], flat_r[k]), k
    assert [r["val_loss"] for r in whole["ckpt"]["history"]] == [r["val_loss"] for r in resumed["ckpt"]["history"]]
    first = torch.load(tmp_path / "fsdp" / "first_history.pt", weights_only=True)
    assert resumed["ckpt"]["history"][0] == first[0]  # epoch 1 was resumed (its timing kept), not trained again
    assert sorted(p.name for p in (tmp_path / "fsdp" / "whole" / "checkpoint_dcp").iterdir()) == ["epoch_0002"]
    best = torch.load(tmp_path / "fsdp" / "whole" / "best_model.pt", weights_only=True)  # gathered, as without FSDP
    assert best.keys() == ref["model"].keys()


def _flatten(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _flatten(sub, f"{prefix}/{key}").items()}
    if isinstance(tree, (list, tuple)):
        return {k: v for i, sub in enumerate(tree) for k, v in _flatten(sub, f"{prefix}/{i}").items()}
    return {prefix: tree}


def test_fsdp_without_torchrun_is_one_line_error(tmp_path):
    from mirrorattn.train import Split, TrainData, fit

    split = Split((torch.randn(4, 3),), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="torchrun") as err:
        fit(torch.nn.Linear(3, 2), TrainData(split, split), TrainConfig(fsdp=True, device="cpu"), tmp_path)
    assert "\n" not in str(err.value)


def test_fsdp_field_keeps_old_identities():
    assert "fsdp" not in TrainConfig().identity()  # the runs from before it keep their hashes
    assert TrainConfig(fsdp=True).identity()["fsdp"] is True  # an FSDP run resumes only its own checkpoint
    with pytest.raises(ValueError, match="fsdp"):
        TrainConfig(fsdp=1).validate()


def test_experiment_commands_take_fsdp():
    from mirrorattn.cli import build_parser

    parser = build_parser()
    for command in ("text", "vision"):
        args = parser.parse_args([command, "--out", "x", "--fsdp"])
        assert args.fsdp is True


@pytest.mark.slow
def test_text_command_with_fsdp_trains_and_analyses(tmp_path):
    """``torchrun ... -m mirrorattn.torchrun text --fsdp`` runs to its analysis (on whole weights) and gives the
    DDP command's validation-best weights (float32, to rounding) and test accuracy (the quick preset has dropout,
    whose masks are per process: a one-process run differs)."""
    import json
    import random

    rng = random.Random(0)
    words = ("good great fine nice lovely superb".split(), "bad awful poor sad ugly terrible".split())
    with open(tmp_path / "toy.jsonl", "w") as f:
        for i in range(160):
            text = rng.choices(words[i % 2], k=4) + rng.choices(words[0] + words[1], k=4)
            f.write(json.dumps({"text": " ".join(text), "label": i % 2}) + "\n")
    args = ["text", "--dataset", str(tmp_path / "toy.jsonl"), "--preset", "quick", "--optimizers", "lp-md:1.1",
            "--seeds", "1", "--epochs", "2", "--no-progress", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    for cmd in (torchrun + ["-m", "mirrorattn.torchrun", *args, "--fsdp", "--out", str(tmp_path / "fsdp")],
                torchrun + ["-m", "mirrorattn.torchrun", *args, "--out", str(tmp_path / "ddp")]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = [tmp_path / out / "runs" / "lp-md-1.1-seed0" for out in ("fsdp", "ddp")]
    summaries = [json.loads((run / "summary.json").read_text()) for run in runs]
    assert all(s["analysis"] for s in summaries) and summaries[0]["test_acc"] == summaries[1]["test_acc"]
    assert summaries[0]["config_hash"] != summaries[1]["config_hash"]  # an FSDP run has a checkpoint of its own
    a, b = (torch.load(run / "best_model.pt", weights_only=True) for run in runs)
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
