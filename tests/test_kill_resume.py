"""kill -9 at random batches, and inside checkpoint writes, then resume: every run ends bit-identical.

A tiny text transformer (with dropout) and a tiny ViT (with crop/flip augmentation) are trained through
:func:`mirrorattn.experiments.classification.run_one` in a child process (``sys.executable -c``) that
SIGKILLs itself at a chosen point: at the K-th forward pass of its model (mid-epoch or during
evaluation, K drawn at random from a seeded generator), right before ``checkpoint.pt`` is renamed into
place (its temporary file is written, the old checkpoint still there) and right after ``history.json``
is renamed but before the checkpoint is (the epoch boundary). Each killed child is followed by one that
resumes the run (and is killed at the next point); the last one finishes. Weights, history (except
timings) and the summary's accuracies must equal those of an uninterrupted run in another folder.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

_CHILD = r"""
import os, signal, sys
from dataclasses import dataclass
import torch
torch.set_num_threads(1)
import mirrorattn.experiments.classification as cl
from mirrorattn.experiments.text import TextExperimentConfig
from mirrorattn.experiments.vision import VisionExperimentConfig
from mirrorattn.data.vision import RandomCropFlip
from mirrorattn.models.transformer import TextTransformer, TextTransformerConfig
from mirrorattn.models.vit import ViT, ViTConfig
from mirrorattn.train import Split, TrainData

kind, folder, kill = sys.argv[1], sys.argv[2], sys.argv[3]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if kill.startswith(("before:", "after:")):  # around the N-th atomic rename of one file (mirrorattn.io)
    when, name, nth = kill.split(":")
    real_replace, renames = os.replace, [0]
    def replace(src, dst, *a, **k):
        last = os.path.basename(dst) == name and renames[0] + 1 == int(nth)
        renames[0] += os.path.basename(dst) == name
        if when == "before" and last:
            die()
        real_replace(src, dst, *a, **k)
        if when == "after" and last:
            die()
    os.replace = replace

g = torch.Generator().manual_seed(0)
if kind == "text":
    def split(n):
        ids = torch.randint(4, 20, (n, 8), generator=g)
        ids[:, 0] = 1
        labels = torch.randint(0, 2, (n,), generator=g)
        ids[labels.bool(), 3] = 3
        return Split((ids, torch.ones(n, 8, dtype=torch.bool)), labels)
    model_cfg = TextTransformerConfig(vocab_size=20, max_length=8, width=16, blocks=1, heads=2, dropout=0.1)
    build, config, options = (lambda: TextTransformer(model_cfg)), TextExperimentConfig(), {}
else:
    def split(n):
        labels = torch.randint(0, 3, (n,), generator=g)
        images = torch.rand(n, 1, 8, 8, generator=g) + labels[:, None, None, None].float()
        return Split(images, labels)
    model_cfg = ViTConfig(image_size=8, channels=1, num_classes=3, patch=4, width=16, depth=1, heads=2,
                          mlp_hidden=16, dropout=0.1)
    build, config = (lambda: ViT(model_cfg)), VisionExperimentConfig()
    options = {"fit_options": {"augment": RandomCropFlip(padding=1, flip=True)}}
config.epochs, config.batch_size, config.device, config.stop_train_acc, config.lr = 3, 16, "cpu", None, 3e-3
data = TrainData(split(64), split(24), split(24))
count = [0]
def counting(module, inputs):
    count[0] += 1
    if kill == f"forward:{count[0]}":
        die()
def build_counted():
    model = build()
    model.register_forward_pre_hook(counting)
    return model
spec = config.run_spec("adam", 0, model_cfg, build_model=build_counted, data=data, **options)
summary = cl.run_one(spec, cl.Path(folder), progress=False)
print(summary["epochs_run"])
"""

#: forward passes per uninterrupted run: 3 epochs of 4 training batches and 1 validation batch, then the test
_FORWARDS = 3 * (4 + 1)


def _child(kind: str, folder: Path, kill: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _CHILD, kind, str(folder), kill], capture_output=True, text=True,
                          timeout=120, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
                                            "MIRRORATTN_CACHE": str(folder.parent / "cache")})


def _state(folder: Path) -> tuple[dict, dict, list, dict]:
    ckpt = torch.load(folder / "checkpoint.pt", weights_only=True)
    best = torch.load(folder / "best_model.pt", weights_only=True)
    timing = ("train_seconds", "samples_per_second")
    history = [{k: v for k, v in row.items() if k not in timing} for row in ckpt["history"]]
    summary = json.loads((folder / "summary.json").read_text())
    keys = ("test_acc", "test_acc_last", "test_loss", "val_acc_best", "val_acc_last", "best_epoch", "epochs_run")
    return ckpt["model"], best, history, {k: summary[k] for k in keys}


def _kills(kind: str) -> list[str]:
    """The kill points of ``kind``'s chain of children, the random ones drawn from a seeded generator."""
    draw = random.Random(f"kill-{kind}")  # random, yet the same points on every test run
    return [f"forward:{draw.randint(2, 5)}",  # in epoch 1 (no checkpoint yet): mid-epoch or in validation
            "before:checkpoint.pt:2",  # epoch 2's checkpoint written to its temporary file, not renamed
            "after:history.json:1",  # resumed at epoch 2: its history.json is newer than checkpoint.pt
            f"forward:{draw.randint(2, 2 * _FORWARDS // 3)}"]  # resumed at epoch 2: anywhere in epochs 2-3


def _chain(kind: str, folder: Path) -> list[tuple[str, int, str]]:
    """Run ``kind``'s children on ``folder``: one killed at each point, then one that finishes."""
    return [(kill, (done := _child(kind, folder, kill)).returncode, done.stderr)
            for kill in [*_kills(kind), "none"]]


def test_kill_9_anywhere_then_resume_ends_bit_identical(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    kinds = ("text", "vision")
    with ThreadPoolExecutor(max_workers=2) as pool:  # the children of text and vision side by side
        chains = {kind: pool.submit(_chain, kind, tmp_path / f"cut-{kind}") for kind in kinds}
        fulls = {kind: pool.submit(_child, kind, tmp_path / f"full-{kind}", "none") for kind in kinds}
    for kind in kinds:
        full = fulls[kind].result()
        assert full.returncode == 0 and full.stdout.strip() == "3", full.stderr
        *killed, (_, last_rc, last_err) = chains[kind].result()
        for kill, rc, err in killed:
            assert rc == -signal.SIGKILL, (kind, kill, rc, err)
        assert last_rc == 0, last_err
        a_model, a_best, a_hist, a_summary = _state(tmp_path / f"full-{kind}")
        b_model, b_best, b_hist, b_summary = _state(tmp_path / f"cut-{kind}")
        assert a_model.keys() == b_model.keys() and all(torch.equal(a_model[k], b_model[k]) for k in a_model), kind
        assert all(torch.equal(a_best[k], b_best[k]) for k in a_best), kind
        assert a_hist == b_hist and len(a_hist) == 3, kind
        assert a_summary == b_summary, kind
