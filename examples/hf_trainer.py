"""``LpMirrorDescent`` inside Hugging Face ``transformers.Trainer`` (``python examples/hf_trainer.py --out DIR``).

A one-layer BERT built from a config (nothing is downloaded) learns a rule on synthetic token
sequences: the label is 1 when the first token is a "high" one (an id in the upper half of the
vocabulary). The optimizer and its learning-rate schedule are handed to the
Trainer with ``optimizers=(optimizer, scheduler)``; the Trainer saves the optimizer's state (the
dual variables) in each checkpoint's ``optimizer.pt`` and restores it with
``--resume CHECKPOINT`` (``Trainer.train(resume_from_checkpoint=...)``).

Needs the ``trainers`` extra: ``pip install -e '.[trainers]'``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

from mirrorattn.optim import LpMirrorDescent

VOCAB = 32  #: token ids: 0 [PAD], 2..16 "low", 17..31 "high" (1 unused)
LENGTH = 12  #: tokens per sequence


class FirstTokenRule(Dataset):
    """``n`` sequences of ``LENGTH`` random tokens (ids 2..VOCAB-1); label 1 when the first token is "high"
    (>= 17), else 0. BERT's classifier reads the first position, so the rule needs no attention: a rule that
    does (a majority over the sequence) is learnt by AdamW in 200 steps but by neither l_1.1 mirror descent
    nor SGD from BERT's N(0, 0.02) init (docs/guide/trainers.md)."""

    def __init__(self, n: int = 256, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(2, VOCAB, (n, LENGTH), generator=g)
        self.labels = (self.ids[:, 0] >= 17).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(LENGTH, dtype=torch.int64),
                "labels": self.labels[i]}


def tiny_bert(seed: int = 0) -> BertForSequenceClassification:
    """A 1-layer, width-32, 2-head BERT classifier with a seeded initialisation."""
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=LENGTH, num_labels=2)
    return BertForSequenceClassification(config)


def make_trainer(out: str | Path, steps: int, p: float, *, lr: float = 0.3, seed: int = 0,
                 save_steps: int | None = None, callbacks: Sequence[TrainerCallback] = ()) -> Trainer:
    """A ``Trainer`` of :func:`tiny_bert` with l_p mirror descent and a linear decay of lr over ``steps``.

    ``save_steps``: write ``out/checkpoint-<step>`` every that many steps (None: at the end only).
    Everything runs on the CPU in one process, seeded, so two runs with the same arguments agree bit for bit.
    """
    model = tiny_bert(seed)
    optimizer = LpMirrorDescent(model.parameters(), lr=lr, p=p)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / steps))
    args = TrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=16, logging_steps=max(1, steps // 10),
        save_strategy="steps", save_steps=save_steps or steps, seed=seed, data_seed=seed, use_cpu=True,
        dataloader_num_workers=0, report_to=[], disable_tqdm=True, log_level="error",
    )
    return Trainer(model=model, args=args, train_dataset=FirstTokenRule(seed=seed),
                   optimizers=(optimizer, scheduler), callbacks=list(callbacks))


def logged_losses(trainer: Trainer) -> list[float]:
    """The training losses the Trainer logged (each the mean over ``logging_steps`` steps), in order."""
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Train, print the first and last logged training loss and return them (``{"first": .., "last": ..}``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output folder (checkpoints go to OUT/checkpoint-<step>)")
    ap.add_argument("--steps", type=int, default=60, help="optimizer steps in all (default 60)")
    ap.add_argument("--p", type=float, default=1.1, help="the l_p geometry, > 1 (default 1.1)")
    ap.add_argument("--lr", type=float, default=0.3, help="initial step size, decayed linearly to 0 (default 0.3)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the data, the init and the data order (default 0)")
    ap.add_argument("--save-steps", type=int, default=None,
                    help="checkpoint every that many steps (default: only at the end)")
    ap.add_argument("--resume", default=None, help="a checkpoint folder (OUT/checkpoint-<step>) to resume from")
    a = ap.parse_args(argv)
    trainer = make_trainer(a.out, a.steps, a.p, lr=a.lr, seed=a.seed, save_steps=a.save_steps)
    trainer.train(resume_from_checkpoint=a.resume)
    losses = logged_losses(trainer)
    print(f"first training loss: {losses[0]:.4f}")
    print(f"last training loss: {losses[-1]:.4f}")
    return {"first": losses[0], "last": losses[-1]}


if __name__ == "__main__":
    main()
