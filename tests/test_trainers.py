"""LpMirrorDescent inside Hugging Face ``transformers.Trainer`` and PyTorch Lightning (examples/hf_trainer.py,
examples/lightning_trainer.py): the loss falls, and the optimizer state (the dual variables) survives the trainer's
checkpoint/resume - a run interrupted after N steps and resumed for M more ends on the weights of an
uninterrupted N + M-step run, bit for bit (both trainers are deterministic on CPU with fixed seeds).

Skipped, with the reason, when the ``trainers`` extra is not installed (``pip install -e '.[trainers]'``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from mirrorattn.mirror import mirror_map
from mirrorattn.optim import LpMirrorDescent

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _example(name: str) -> Any:
    """Import examples/<name>.py as a module (the examples folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"mirrorattn_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _lp(optimizer: Any) -> LpMirrorDescent:
    """The LpMirrorDescent inside a trainer's wrapper (accelerate's AcceleratedOptimizer, Lightning's)."""
    while not isinstance(optimizer, LpMirrorDescent):
        optimizer = optimizer.optimizer
    return optimizer


def _duals(optimizer: Any) -> dict[int, torch.Tensor]:
    """A copy of the dual variables, keyed by the parameter's index in the state dict."""
    state = _lp(optimizer).state_dict()["state"]
    return {k: v["dual"].clone() for k, v in state.items() if "dual" in v}


def _assert_same_duals(got: dict[int, torch.Tensor], want: dict[int, torch.Tensor]) -> None:
    assert got.keys() == want.keys() and want
    for k in want:
        assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), f"dual of parameter {k} differs"


def _assert_same_weights(got: torch.nn.Module, want: torch.nn.Module) -> None:
    g, w = got.state_dict(), want.state_dict()
    assert g.keys() == w.keys()
    for name in w:
        assert torch.equal(g[name], w[name]), f"{name} differs"


def _assert_dual_holds_more_than_weights(optimizer: Any) -> None:
    """The restored duals are not what the weights would give (sign(w)|w|^(p-1)): a trainer that dropped
    the optimizer state and rebuilt it from the weights would not pass the bit-for-bit comparison."""
    opt = _lp(optimizer)
    params = [t for g in opt.param_groups for t in g["params"] if "dual" in opt.state.get(t, {})]
    assert any(not torch.equal(opt.state[t]["dual"], mirror_map(t.detach().float(), 1.1)) for t in params)


def _assert_loss_falls(losses: dict[str, float], capsys: pytest.CaptureFixture[str]) -> None:
    """An example's main() printed and returned a first loss near chance and a last one far below it."""
    out = capsys.readouterr().out
    assert f"first training loss: {losses['first']:.4f}" in out and f"last training loss: {losses['last']:.4f}" in out
    assert losses["first"] > 0.6  # chance level is log 2 = 0.69
    assert losses["last"] < 0.3 * losses["first"]


# -- Hugging Face transformers.Trainer --------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf() -> Any:
    pytest.importorskip("transformers", reason="transformers is not installed (the 'trainers' extra)")
    pytest.importorskip("accelerate", reason="accelerate (needed by transformers.Trainer) is not installed")
    return _example("hf_trainer")


def test_hf_trainer_loss_falls(hf: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _assert_loss_falls(hf.main(["--out", str(tmp_path), "--steps", "60", "--p", "1.1"]), capsys)
    assert (tmp_path / "checkpoint-60" / "optimizer.pt").is_file()


def test_hf_trainer_resume_restores_optimizer_state(hf: Any, tmp_path: Path) -> None:
    from transformers import TrainerCallback

    n, m = 10, 10  # 16 samples a batch, 256 samples: the resumed run starts mid-epoch

    class Snapshot(TrainerCallback):
        """Copies the dual variables at the start of training (after a resume has loaded them) and at step n,
        and stops at step ``stop`` (an interruption)."""

        def __init__(self, stop: int | None = None) -> None:
            self.stop, self.begin, self.at_n = stop, None, None

        def on_train_begin(self, args, state, control, optimizer=None, **kwargs):  # noqa: ANN001, ANN201
            self.begin = _duals(optimizer) if state.global_step else None

        def on_step_end(self, args, state, control, optimizer=None, **kwargs):  # noqa: ANN001, ANN201
            if state.global_step == n:
                self.at_n = _duals(optimizer)
            if state.global_step == self.stop:
                control.should_training_stop = True

    whole = Snapshot()
    straight = hf.make_trainer(tmp_path / "straight", n + m, 1.1, lr=0.3, save_steps=n, callbacks=[whole])
    straight.train()
    cut = Snapshot(stop=n)
    hf.make_trainer(tmp_path / "cut", n + m, 1.1, lr=0.3, save_steps=n, callbacks=[cut]).train()
    resumed_cb = Snapshot()
    resumed = hf.make_trainer(tmp_path / "cut", n + m, 1.1, lr=0.3, save_steps=n, callbacks=[resumed_cb])
    resumed.train(resume_from_checkpoint=str(tmp_path / "cut" / f"checkpoint-{n}"))

    _assert_same_duals(cut.at_n, whole.at_n)  # the interrupted run is the same run up to the checkpoint
    _assert_same_duals(resumed_cb.begin, cut.at_n)  # what the checkpoint restored is the state at step n
    assert resumed.state.global_step == n + m
    _assert_same_weights(resumed.model, straight.model)
    _assert_same_duals(_duals(resumed.optimizer), _duals(straight.optimizer))
    _assert_dual_holds_more_than_weights(resumed.optimizer)


# -- PyTorch Lightning ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lit() -> Any:
    pytest.importorskip("lightning", reason="lightning is not installed (the 'trainers' extra)")
    return _example("lightning_trainer")


def test_lightning_loss_falls(lit: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _assert_loss_falls(lit.main(["--out", str(tmp_path), "--steps", "64", "--p", "1.1"]), capsys)
    assert (tmp_path / "epoch=7-step=64.ckpt").is_file()


def test_lightning_resume_restores_optimizer_state(lit: Any, tmp_path: Path) -> None:
    import lightning as L

    n, m = 16, 16  # two epochs of 8 steps, then two more: the checkpoint is the one written at the end of epoch 2

    class Snapshot(L.Callback):
        """Copies the dual variables when training starts (after a resume has loaded them) and at step n."""

        def __init__(self) -> None:
            self.begin, self.at_n = None, None

        def on_train_start(self, trainer, pl_module):  # noqa: ANN001, ANN201
            self.begin = _duals(trainer.optimizers[0]) if trainer.global_step else None

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: ANN001, ANN201
            if trainer.global_step == n:
                self.at_n = _duals(trainer.optimizers[0])

    whole, cut, resumed_cb = Snapshot(), Snapshot(), Snapshot()
    straight = lit.MirrorClassifier(n + m)
    lit.make_trainer(tmp_path / "straight", n + m, callbacks=[whole]).fit(straight)
    lit.make_trainer(tmp_path / "cut", n, callbacks=[cut]).fit(lit.MirrorClassifier(n + m))  # stopped after n
    resumed = lit.MirrorClassifier(n + m)
    trainer = lit.make_trainer(tmp_path / "cut", n + m, callbacks=[resumed_cb])
    trainer.fit(resumed, ckpt_path=str(tmp_path / "cut" / f"epoch=1-step={n}.ckpt"))

    _assert_same_duals(cut.at_n, whole.at_n)
    _assert_same_duals(resumed_cb.begin, cut.at_n)  # what the checkpoint restored is the state at step n
    assert trainer.global_step == n + m and len(resumed.losses) == m
    _assert_same_weights(resumed, straight)
    _assert_same_duals(_duals(trainer.optimizers[0]), _duals(straight.trainer.optimizers[0]))
    _assert_dual_holds_more_than_weights(trainer.optimizers[0])
