"""The IMDb / sentence-polarity experiment: l_p-MD against SGD and Adam on a text transformer.

:func:`run_text_experiment` trains every (optimizer, seed) pair in its own run folder
``OUT/runs/<optimizer>-seed<k>/`` (reused when finished with the same config hash, resumed
from its checkpoint when interrupted), analyses each trained model
(:mod:`mirrorattn.experiments.text_analysis`) and writes ``results.json``, ``results.md`` and the
figures at the top of ``OUT``. :func:`run_lr_sweep` picks each optimizer's step size on the
validation split (:mod:`mirrorattn.experiments.sweep`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from mirrorattn.checks import check_choice, check_finite, check_fraction, check_int
from mirrorattn.experiments.classification import (
    ClassificationConfig,
    RunSpec,
    run_name,
    run_one,
)
from mirrorattn.experiments.comparison import Comparison, run_comparison
from mirrorattn.experiments.run_analysis import analyse_run, write_report
from mirrorattn.experiments.sweep import SweepTarget, run_sweep
from mirrorattn.experiments.text_analysis import TEXT
from mirrorattn.models.transformer import TextTransformer, TextTransformerConfig
from mirrorattn.train import Split, TrainConfig, TrainData

__all__ = [
    "SWEEP",
    "PreparedText",
    "TextExperimentConfig",
    "make_spec",
    "prepare_text_data",
    "run_lr_sweep",
    "run_name",
    "run_text_experiment",
    "train_one",
]


@dataclass
class TextExperimentConfig(ClassificationConfig):
    """Everything that defines a text experiment (TOML-loadable; see ``text_presets`` for presets).

    Data, tokenizer and transformer fields; optimizers, seeds, step-size sweep, training and analysis
    are :class:`~mirrorattn.experiments.classification.ClassificationConfig`'s, with this
    experiment's default optimizers, epochs, stopping accuracy and analysis sample count.
    """

    # data
    dataset: str = "polarity"  #: "imdb", "polarity", a .jsonl/.csv/.tsv file or a folder of train/dev/test files
    test_fraction: float = 0.2  #: for data sets without an official test split
    text_column: str = "text"  #: column of the text in a data file of your own
    label_column: str = "label"  #: column of the label in a data file of your own
    # tokenizer
    tokenizer: str = "wordpiece"  #: tokenizer trained on the training split: "wordpiece" or "bpe"
    vocab_size: int = 16000  #: tokenizer vocabulary, special tokens included
    min_frequency: int = 2  #: tokens seen fewer times in the training split are not in the vocabulary
    max_length: int = 256  #: tokens per sequence, [CLS] included
    # model
    width: int = 64  #: model width (embedding and residual stream)
    blocks: int = 1  #: transformer blocks
    heads: int = 2  #: attention heads per block (width / heads each)
    mlp_ratio: float = 4.0  #: MLP hidden width / model width
    dropout: float = 0.1  #: dropout on attention probabilities and residual branches, in [0, 1)
    bias: bool = False  #: biases in the linear layers (the authors' text model has none)
    pooling: str = "mean"  #: "mean" (masked mean of the states) or "cls" (the first token's state, the authors')
    init: str = "normal"  #: "normal" (N(0, init_std) everywhere) or "torch" (PyTorch's defaults, the authors')
    init_std: float = 0.02  #: std of the normal init of embeddings and linear weights (init = "normal")
    attention_mask: str = "keys"  #: "keys" (padded keys masked) or "paper" (the authors' mask, paper.md section 7)
    # this experiment's defaults of ClassificationConfig fields
    optimizers: tuple[str, ...] = ("lp-md:1.1", "lp-md:2", "lp-md:3", "sgd", "adam")
    #: how every run trains (mirrorattn.train.TrainConfig): here at most 4 epochs, stopping at 99.5 % training accuracy
    train: TrainConfig = field(default_factory=partial(TrainConfig, epochs=4, stop_train_acc=0.995))
    analysis_samples: int = 2000  #: test samples used for the attention-sparsity statistics

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field (``lrs`` may name optimizers not run: a sweep's choices)."""
        from mirrorattn.data.tokenize import SPECIAL_TOKENS, TOKENIZER_KINDS

        self.check_runs("lp-md:1.1,sgd,adam", unrun_steps=True)
        check_choice(self.tokenizer, "tokenizer", TOKENIZER_KINDS)
        if self.vocab_size <= len(SPECIAL_TOKENS):
            raise ValueError(f"vocab_size must be larger than {len(SPECIAL_TOKENS)} (the special tokens), "
                             f"got {self.vocab_size}")
        for name in ("min_frequency", "analysis_samples", "topk"):
            check_int(getattr(self, name), name)
        check_fraction(self.test_fraction, "test_fraction")
        check_finite(self.weight_threshold, "weight_threshold", low=0.0)
        if not (self.dataset and self.text_column and self.label_column):
            raise ValueError("dataset, text_column and label_column must be non-empty strings")
        self.model_config(num_classes=2).validate()

    def model_config(self, num_classes: int, vocab_size: int | None = None) -> TextTransformerConfig:
        """The transformer's config (``vocab_size``: the trained tokenizer's actual size)."""
        shape = self.field_values(("max_length", "width", "blocks", "heads", "mlp_ratio", "dropout", "bias", "pooling",
                                   "init", "init_std", "attention_mask"))
        return TextTransformerConfig(vocab_size=int(vocab_size or self.vocab_size), num_classes=num_classes, **shape)

    def data_identity(self) -> dict[str, Any]:
        """The fields that define the data and tokenisation (for run hashes)."""
        return self.field_values(("dataset", "val_fraction", "test_fraction", "split_seed", "max_train", "max_test",
                                  "text_column", "label_column", "tokenizer", "vocab_size", "min_frequency",
                                  "max_length"))


@dataclass
class PreparedText:
    """Tokenised splits, the tokenizer and the data set's description."""

    data: TrainData
    tokenizer: Any
    num_classes: int
    label_names: list[str]
    summary: dict[str, Any]


def prepare_text_data(config: TextExperimentConfig, max_train: int | None = None, *,
                      progress: bool = True) -> PreparedText:
    """Load the data set, train (or load the cached) tokenizer on the training split, encode all splits."""
    from mirrorattn.data.text import build_tokenizer, encode_texts, load_text_dataset

    ds = load_text_dataset(config.dataset, test_fraction=config.test_fraction, text_column=config.text_column,
                           label_column=config.label_column, progress=progress, **config.load_options(max_train))
    if len(ds.val) == 0:
        raise ValueError("the validation split is empty: set val_fraction > 0 (model selection needs it)")
    tok = build_tokenizer(
        ds.train.texts, kind=config.tokenizer, vocab_size=config.vocab_size, min_frequency=config.min_frequency
    )

    def encode(split) -> Split:
        enc = encode_texts(tok, split.texts, config.max_length)
        return Split((enc.ids, enc.mask), torch.as_tensor(split.labels, dtype=torch.long))

    data = TrainData(encode(ds.train), encode(ds.val), encode(ds.test))
    summary = {**ds.summary(), "vocab_size": tok.get_vocab_size(),
               "mean_length": float(data.train.inputs[1].sum(1).float().mean())}
    return PreparedText(data, tok, ds.num_classes, list(ds.label_names), summary)


def make_spec(config: TextExperimentConfig, prepared: PreparedText, optimizer: str, seed: int, out_dir: Path, *,
              lr: float | None = None, epochs: int | None = None, analyse: bool = True,
              keep_diverged: bool = False, on_diverged: str | None = None) -> RunSpec:
    """The :class:`~mirrorattn.experiments.classification.RunSpec` of one run (see :func:`train_one`);
    ``on_diverged`` (a policy) instead of ``keep_diverged`` ("best-epoch", else "raise")."""
    model_cfg = config.model_config(prepared.num_classes, prepared.tokenizer.get_vocab_size())
    on_diverged = on_diverged or ("best-epoch" if keep_diverged else "raise")
    return config.run_spec(
        optimizer, seed, model_cfg, lr=lr, epochs=epochs, build_model=lambda: TextTransformer(model_cfg),
        data=prepared.data, resume_longer=True, on_diverged=on_diverged,
        analyse=(partial(analyse_run, prepared=prepared, config=config, out_dir=out_dir, domain=TEXT)
                 if analyse else None),
    )


def train_one(config: TextExperimentConfig, prepared: PreparedText, optimizer: str, seed: int, out_dir: Path, *,
              lr: float | None = None, epochs: int | None = None, analyse: bool = True, progress: bool = True,
              keep_diverged: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Train (or reuse / resume) one run and return its summary (also written to ``summary.json``).

    The summary holds ``test_acc`` (validation-best epoch, fraction), ``test_acc_last``,
    ``val_acc_best``, ``best_epoch``, ``epochs_run``, ``train_seconds``, ``samples_per_second``,
    ``diverged`` and, with ``analyse``, the attention / weight sparsity and the probe score
    (:func:`mirrorattn.experiments.classification.run_one`). A run differing only in its stopping
    rule (more epochs) continues from its checkpoint; a finished run of other settings in ``out_dir``
    is refused unless ``overwrite``.

    A run whose loss becomes NaN/inf raises :class:`~mirrorattn.train.NonFiniteLossError`, unless
    ``keep_diverged``: then it ends there, ``diverged`` is True, ``stop_reason`` holds the error and
    the model is the validation-best of the epochs completed before (``test_acc`` measured on it,
    ``test_acc_last`` None; everything None if no epoch completed).
    """
    spec = make_spec(config, prepared, optimizer, seed, out_dir, lr=lr, epochs=epochs, analyse=analyse,
                     keep_diverged=keep_diverged)
    return run_one(spec, out_dir, progress=progress, overwrite=overwrite)


def run_text_experiment(
    config: TextExperimentConfig, out: str | Path, *, progress: bool = True, workers: int = 1, overwrite: bool = False
) -> dict[str, Any]:
    """Run every (optimizer, seed) and write results.json, results.md and the figures in ``out``.

    :func:`mirrorattn.experiments.comparison.run_comparison` on this experiment (order, ``workers``,
    the check of every run folder before the first run, ``overwrite``); a run whose loss becomes NaN/inf
    keeps its validation-best epoch (``diverged`` True; policy "best-epoch").
    """
    comparison = Comparison("text", prepare_text_data, make_spec, partial(write_report, domain=TEXT),
                            on_diverged="best-epoch")
    return run_comparison(comparison, config, out, progress=progress, workers=workers, overwrite=overwrite)


#: the text experiment's part in a step-size sweep (:func:`mirrorattn.experiments.sweep.run_sweep`)
SWEEP = SweepTarget(prepare=prepare_text_data, train_one=train_one, command="text", make_spec=make_spec)


def run_lr_sweep(
    config: TextExperimentConfig, out: str | Path, *, progress: bool = True, workers: int = 1, overwrite: bool = False
) -> dict[str, Any]:
    """For every optimizer, short runs over its grid; pick the step with the best validation accuracy.

    :func:`mirrorattn.experiments.sweep.run_sweep` on this experiment: writes ``sweep.json`` and
    ``sweep.png``; ``mirrorattn text --lr-from OUT/sweep.json`` uses the chosen steps. Test
    accuracy is never used.
    """
    return run_sweep(SWEEP, config, out, progress=progress, workers=workers, overwrite=overwrite)
