"""The vision experiment: a ViT on CIFAR-10, Fashion-MNIST or digits, l_p-MD against Adam and SGD.

:func:`run_vision_experiment` trains every (optimizer, seed) pair in its own run folder
``OUT/runs/<optimizer>-seed<k>/`` with the shared loop :func:`mirrorattn.train.fit` (reused when
finished with the same config hash, resumed from its checkpoint when interrupted), analyses each
trained model (:mod:`mirrorattn.experiments.vision_analysis`) and writes ``results.json``,
``results.md`` and the figures at the top of ``OUT``. :func:`run_vision_sweep` picks each
optimizer's step size on the validation split (:mod:`mirrorattn.experiments.sweep`). The
conventions (run folders, hashes, ``test_acc`` / ``test_acc_last`` as fractions, aggregation over
seeds) are those of the text experiment, shared in :mod:`mirrorattn.experiments.classification`.

Presets: :mod:`mirrorattn.experiments.vision_presets` (``--preset paper`` or ``quick``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from mirrorattn.checks import check_finite, check_fraction, check_int
from mirrorattn.data.vision import (
    RandomCropFlip,
    VisionDataset,
    default_augmentation,
    load_vision_dataset,
    resize_dataset,
)
from mirrorattn.experiments.classification import (
    ClassificationConfig,
    RunSpec,
    run_one,
)
from mirrorattn.experiments.comparison import Comparison, run_comparison
from mirrorattn.experiments.run_analysis import analyse_run, write_report
from mirrorattn.experiments.sweep import SweepTarget, run_sweep
from mirrorattn.experiments.vision_analysis import VISION
from mirrorattn.experiments.vision_presets import PRESETS, preset_values
from mirrorattn.models.vit import ViT, ViTConfig
from mirrorattn.train import Split, TrainConfig, TrainData

__all__ = [
    "PRESETS",
    "SWEEP",
    "PreparedVision",
    "VisionExperimentConfig",
    "auto_patch",
    "make_spec",
    "preset_values",
    "prepare_vision_data",
    "run_vision_experiment",
    "run_vision_sweep",
    "train_one",
]


@dataclass
class VisionExperimentConfig(ClassificationConfig):
    """Everything that defines a vision experiment (TOML-loadable; presets in :mod:`.vision_presets`).

    Data, augmentation and ViT fields, and the attention images drawn; optimizers, seeds, training and
    analysis are :class:`~mirrorattn.experiments.classification.ClassificationConfig`'s (evaluation
    batch 500 here).
    """

    # data (the training pool cap max_train draws a seeded, stratified subset)
    dataset: str = "digits"  #: "cifar10", "fashion-mnist", "digits", or an image folder / archive path
    image_size: int | None = None  #: resize every image to this side (None: native size)
    test_fraction: float = 0.2  #: image folders without test/: the share of every class held out as test
    # augmentation (defaults: mirrorattn.data.vision.default_augmentation)
    augment: bool = True  #: random crops (and flips) of the training images
    crop_padding: int | None = None  #: padding of the random crop in pixels (None: the data set's default)
    flip: bool | None = None  #: random horizontal flips (None: the data set's default)
    # model (mirrorattn.models.vit.ViTConfig)
    patch: int = 2  #: patch side in pixels (the image side must be a multiple; 0: chosen from it, auto_patch)
    width: int = 64  #: model width
    depth: int = 2  #: transformer blocks
    heads: int = 4  #: attention heads per block
    mlp_hidden: int = 128  #: MLP hidden width
    dropout: float = 0.1  #: dropout in the blocks, in [0, 1)
    bias: bool = True  #: biases in the linear layers
    init: str = "normal"  #: "normal" (N(0, 0.02)) or "torch" (PyTorch's defaults, [CLS] and positions N(0, 1))
    # evaluation and analysis
    #: how every run trains (mirrorattn.train.TrainConfig): here evaluation batches of 500 images
    train: TrainConfig = field(default_factory=partial(TrainConfig, stop_train_acc=None, eval_batch_size=500))
    analysis_samples: int = 1000  #: test images for the attention-sparsity statistics
    attention_images: int = 4  #: test images drawn with their [CLS] attention maps

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field."""
        from mirrorattn.data.vision import DATASETS, dataset_kind

        try:
            dataset_kind(self.dataset, self.data_root)
        except ValueError:
            raise ValueError(f"dataset must be one of {', '.join(DATASETS)} or the path of an image folder / archive, "
                             f"got {self.dataset!r}") from None
        check_fraction(self.test_fraction, "test_fraction")
        self.check_runs("adam,lp-md:1.1,sgd", unrun_steps=False)
        check_finite(self.weight_threshold, "weight_threshold", low=0.0)
        check_int(self.image_size, "image_size", optional=True)
        check_int(self.crop_padding, "crop_padding", 0, optional=True)
        for name in ("analysis_samples", "attention_images", "topk"):
            check_int(getattr(self, name), name)
        check_int(self.patch, "patch (0: chosen from the image side)", 0)
        side = self.patch or 8
        self.model_config((1, side, side), 10).validate()  # image-size checks come with the data

    def model_config(
        self, image_shape: tuple[int, int, int], num_classes: int, mean: tuple = (), std: tuple = ()
    ) -> ViTConfig:
        """The ViT's config for images of ``image_shape`` (C, S, S) after any resize."""
        c, h, w = image_shape
        if h != w:
            raise ValueError(f"the ViT needs square images, got {h} x {w}; set image_size to resize them")
        patch = self.patch or auto_patch(h)
        if h % patch:
            raise ValueError(f"image side {h} is not a multiple of patch {patch}; change patch or image_size")
        shape = self.field_values(("width", "depth", "heads", "mlp_hidden", "dropout", "bias", "init"))
        return ViTConfig(image_size=h, channels=c, num_classes=num_classes, mean=tuple(float(m) for m in mean),
                         std=tuple(float(s) for s in std), patch=patch, **shape)

    def augmentation(self, image_size: int) -> dict[str, Any] | None:
        """``{"padding", "flip"}`` of the run, or None when augmentation is off."""
        if not self.augment:
            return None
        aug = default_augmentation(self.dataset, image_size)
        if self.crop_padding is not None:
            aug["padding"] = int(self.crop_padding)
        if self.flip is not None:
            aug["flip"] = bool(self.flip)
        return aug

    def data_identity(self) -> dict[str, Any]:
        """The fields that define the data (for run hashes; test_fraction only for image folders)."""
        from mirrorattn.data.vision import DATASETS

        folder = () if self.dataset in DATASETS else ("test_fraction",)
        return self.field_values(("dataset", "val_fraction", "split_seed", "max_train", "max_test", "image_size",
                                  *folder))

    def analysis_identity(self) -> dict[str, Any]:
        """The analysis settings a run's summary depends on, the drawn attention maps included."""
        return {**super().analysis_identity(), "images": self.attention_images}


def auto_patch(side: int) -> int:
    """The patch of ``patch = 0``: the divisor p of ``side`` whose grid side / p is closest to 8 (larger p on ties).

    About 64 patches, as the quick presets' patch 4 on 32-pixel CIFAR-10 (28 -> 4, 12 -> 2, 8 -> 1, 64 -> 8).
    """
    return min((p for p in range(1, side + 1) if side % p == 0), key=lambda p: (abs(side / p - 8), -p))


# ----------------------------------------------------------------------------------- data


@dataclass
class PreparedVision:
    """The loaded (and resized) data set and the tensors the training loop takes."""

    dataset: VisionDataset
    data: TrainData
    summary: dict[str, Any]


def prepare_vision_data(config: VisionExperimentConfig, max_train: int | None = None, *,
                        progress: bool = True) -> PreparedVision:
    """Load (from the cache after the first time), split and resize the data set of ``config``.

    ``max_train``: cap on the training pool (train + validation) instead of ``config.max_train`` (a sweep's).
    """
    ds = load_vision_dataset(config.dataset, progress=progress, image_size=config.image_size,
                             test_fraction=config.test_fraction, **config.load_options(max_train))
    if len(ds.val) == 0:
        raise ValueError("the validation split is empty: set val_fraction > 0 (model selection needs it)")
    if config.image_size is not None:
        ds = resize_dataset(ds, config.image_size)
    data = TrainData(Split(*ds.train.tensors()), Split(*ds.val.tensors()), Split(*ds.test.tensors()))
    return PreparedVision(ds, data, ds.summary())


# ----------------------------------------------------------------------------------- runs


def make_spec(config: VisionExperimentConfig, prepared: PreparedVision, optimizer: str, seed: int, out_dir: Path,
              *, lr: float | None = None, epochs: int | None = None, analyse: bool = True,
              on_diverged: str = "record") -> RunSpec:
    """The :class:`~mirrorattn.experiments.classification.RunSpec` of one run (see :func:`train_one`)."""
    ds = prepared.dataset
    model_cfg = config.model_config(ds.image_shape, ds.num_classes, ds.mean, ds.std)
    aug = config.augmentation(ds.image_shape[-1])
    return config.run_spec(
        optimizer, seed, model_cfg, lr=lr, epochs=epochs, identity_extra={"augmentation": aug},
        build_model=lambda: ViT(model_cfg), data=prepared.data, on_diverged=on_diverged,
        analyse=(partial(analyse_run, prepared=prepared, config=config, out_dir=out_dir, domain=VISION)
                 if analyse else None),
        fit_options={"augment": RandomCropFlip(**aug) if aug is not None else None},
        summary_head={"dataset": config.dataset}, summary_tail={"augmentation": aug}, seconds_per_epoch=True,
    )


def train_one(config: VisionExperimentConfig, prepared: PreparedVision, optimizer: str, seed: int, out_dir: Path,
              *, lr: float | None = None, epochs: int | None = None, analyse: bool = True,
              progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Train (or reuse / resume) one run and return its summary (also written to ``summary.json``).

    The summary holds ``test_acc`` (validation-best epoch, fraction), ``test_acc_last``,
    ``val_acc_best``, ``best_epoch``, ``epochs_run``, ``train_seconds``, ``seconds_per_epoch``,
    ``samples_per_second`` and, with ``analyse``, the attention / weight sparsity. A run whose
    loss becomes NaN/inf is recorded with ``diverged: True`` and ``test_acc: None`` (and reused as
    such) instead of stopping the whole comparison. A finished run of other settings in ``out_dir``
    is refused unless ``overwrite``.
    """
    spec = make_spec(config, prepared, optimizer, seed, out_dir, lr=lr, epochs=epochs, analyse=analyse)
    return run_one(spec, out_dir, progress=progress, overwrite=overwrite)


def run_vision_experiment(config: VisionExperimentConfig, out: str | Path, *, progress: bool = True,
                          workers: int = 1, overwrite: bool = False) -> dict[str, Any]:
    """Run every (optimizer, seed) and write results.json, results.md and the figures in ``out``.

    :func:`mirrorattn.experiments.comparison.run_comparison` on this experiment (order, ``workers``,
    the check of every run folder before the first run, ``overwrite``); a run whose loss becomes NaN/inf
    is recorded as diverged, without accuracy (policy "record").
    """
    comparison = Comparison("vision", prepare_vision_data, make_spec, partial(write_report, domain=VISION),
                            on_diverged="record")
    return run_comparison(comparison, config, out, progress=progress, workers=workers, overwrite=overwrite)


#: the vision experiment's part in a step-size sweep (:func:`mirrorattn.experiments.sweep.run_sweep`)
SWEEP = SweepTarget(prepare=prepare_vision_data, train_one=train_one, command="vision", make_spec=make_spec)


def run_vision_sweep(
    config: VisionExperimentConfig, out: str | Path, *, progress: bool = True, workers: int = 1, overwrite: bool = False
) -> dict[str, Any]:
    """Short runs over every optimizer's step grid; the step with the best validation accuracy is chosen.

    :func:`mirrorattn.experiments.sweep.run_sweep` on this experiment: writes ``sweep.json`` and
    ``sweep.png`` in ``out``; ``mirrorattn vision --lr-from OUT/sweep.json`` uses the chosen steps.
    The test split is never used.
    """
    return run_sweep(SWEEP, config, out, progress=progress, workers=workers, overwrite=overwrite)
