"""``LpMirrorDescent`` inside PyTorch Lightning (``python examples/lightning_trainer.py --out DIR``).

The library's own :class:`~mirrorattn.models.transformer.TextTransformer` (one block, width 32, two
heads, mean pooling) learns a rule on synthetic token sequences: each sequence leans to one half of
the vocabulary (each token from the label's half with probability 0.8) and the label says which.
``configure_optimizers`` returns ``LpMirrorDescent`` with a per-step linear decay of lr; Lightning
saves the optimizer's state (the dual variables) and the scheduler's in every checkpoint
(``OUT/epoch=E-step=S.ckpt``, written after the last step of each epoch) and restores them with
``--resume CHECKPOINT`` (``Trainer.fit(ckpt_path=...)``).

Resume from those checkpoints: Lightning cannot fast-forward a plain ``DataLoader`` to the middle of
an epoch, and a checkpoint written by ``ModelCheckpoint(every_n_epochs=1)`` (at the epoch-end hook)
resumes one batch off: the epoch it closed is counted as unfinished and runs one more batch (measured
with lightning 2.6.6). ``every_n_train_steps`` = steps an epoch resumes exactly. The data order is a pure
function of (seed, epoch) (``DistributedSampler`` with one replica; Lightning calls its ``set_epoch``) and
the model has no dropout, so a resumed run retraces an uninterrupted one bit for bit (Lightning does
not restore the global RNG).

Needs the ``trainers`` extra: ``pip install -e '.[trainers]'``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mirrorattn.models.transformer import TextTransformer, TextTransformerConfig
from mirrorattn.optim import LpMirrorDescent

VOCAB = 32  #: token ids 0..31: "low" 0..15, "high" 16..31
LENGTH = 12  #: tokens per sequence
BATCH = 32
SAMPLES = 256
STEPS_PER_EPOCH = SAMPLES // BATCH  #: 8


class LeaningTokens(Dataset):
    """``n`` (ids (LENGTH,) int64, label float 0/1) pairs: each token is from the label's half of the vocabulary
    with probability ``lean``, else from the other half (uniform inside the half)."""

    def __init__(self, n: int = SAMPLES, seed: int = 0, lean: float = 0.8) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 2, (n,), generator=g)
        same = torch.rand(n, LENGTH, generator=g) < lean
        half = torch.where(same, self.labels[:, None], 1 - self.labels[:, None])
        self.ids = half * (VOCAB // 2) + torch.randint(0, VOCAB // 2, (n, LENGTH), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ids[i], self.labels[i].float()


class MirrorClassifier(L.LightningModule):
    """A tiny :class:`TextTransformer` trained with l_p mirror descent; ``losses`` holds every step's loss."""

    def __init__(self, steps: int, p: float = 1.1, lr: float = 0.3, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        torch.manual_seed(seed)
        self.model = TextTransformer(TextTransformerConfig(vocab_size=VOCAB, max_length=LENGTH, width=32, blocks=1,
                                                           heads=2, dropout=0.0, pooling="mean"))
        self.losses: list[float] = []

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        ids, labels = batch
        loss = torch.nn.functional.binary_cross_entropy_with_logits(self.model(ids), labels)
        self.losses.append(float(loss.detach()))
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = LpMirrorDescent(self.parameters(), lr=hp.lr, p=hp.p)
        decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / hp.steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": decay, "interval": "step"}}

    def train_dataloader(self) -> DataLoader:
        data = LeaningTokens(seed=self.hparams.seed)
        order = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=self.hparams.seed)
        return DataLoader(data, batch_size=BATCH, sampler=order, num_workers=0)


def make_trainer(out: str | Path, steps: int, callbacks: Sequence[L.Callback] = ()) -> L.Trainer:
    """A CPU ``Trainer`` for ``steps`` optimizer steps that writes a checkpoint after the last step of every epoch."""
    every_epoch = ModelCheckpoint(dirpath=str(out), every_n_train_steps=STEPS_PER_EPOCH, save_top_k=-1)
    return L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=True,
                     callbacks=[every_epoch, *callbacks], default_root_dir=str(out), deterministic=True,
                     enable_progress_bar=False, enable_model_summary=False)


def window_means(losses: Sequence[float]) -> tuple[float, float]:
    """Mean loss over the first and the last ``max(1, len // 10)`` steps."""
    w = max(1, len(losses) // 10)
    return sum(losses[:w]) / w, sum(losses[-w:]) / w


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Train, print the first and last training loss (means over a tenth of the steps) and return them."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output folder (checkpoints OUT/epoch=E-step=S.ckpt)")
    ap.add_argument("--steps", type=int, default=64, help="optimizer steps in all, 8 an epoch (default 64)")
    ap.add_argument("--p", type=float, default=1.1, help="the l_p geometry, > 1 (default 1.1)")
    ap.add_argument("--lr", type=float, default=0.3, help="initial step size, decayed linearly to 0 (default 0.3)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the data, the init and the data order (default 0)")
    ap.add_argument("--resume", default=None, help="a checkpoint OUT/epoch=E-step=S.ckpt to resume from")
    a = ap.parse_args(argv)
    module = MirrorClassifier(a.steps, p=a.p, lr=a.lr, seed=a.seed)
    make_trainer(a.out, a.steps).fit(module, ckpt_path=a.resume)
    first, last = window_means(module.losses)
    print(f"first training loss: {first:.4f}")
    print(f"last training loss: {last:.4f}")
    return {"first": first, "last": last}


if __name__ == "__main__":
    main()
