"""The vision experiment: a ViT on CIFAR-10, Fashion-MNIST or digits, l_p-MD against Adam and SGD.

:func:`run_vision_experiment` trains every (optimizer, seed) pair in its own run folder
``OUT/runs/<optimizer>-seed<k>/`` with the shared loop :func:`mirrorattn.train.fit` (reused when
finished with the same config hash, resumed from its checkpoint when interrupted), analyses each
trained model (:mod:`mirrorattn.experiments.vision_analysis`) and writes ``results.json``,
``results.md`` and the figures at the top of ``OUT``. The conventions (run folders, hashes,
``test_acc`` / ``test_acc_last`` as fractions, aggregation over seeds) are those of
:mod:`mirrorattn.experiments.text`, whose helpers are used here.

Presets (:data:`PRESETS`, ``--preset NAME``; any field can then be overridden):

``paper`` - the authors' CIFAR-10 configuration (paper.md section 5.6), for a GPU: images resized
to 48 x 48, patch 4 (144 patches), width 512, depth 6, 8 heads of 64, MLP 512, dropout 0.1,
[CLS] head, cross-entropy, random crop (padding 4) + horizontal flip, batch 100, Adam 1e-4
against l_1.1-MD 5e-2 (SGD, not in the paper, at 1e-2), every parameter updated by the
optimizer. The paper gives no epoch count; we use 100 with model selection on validation. On
other data sets the same model and training are used (images resized to 48).

``quick`` - CPU configurations (2 shared cores) per data set, chosen by measurement; see
:data:`QUICK_NOTES` for the measurements and the learning-rate probe behind them.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mirrorattn.data.vision import (
    RandomCropFlip,
    VisionDataset,
    default_augmentation,
    load_vision_dataset,
    resize_dataset,
)
from mirrorattn.experiments.text import aggregate, run_name
from mirrorattn.io import config_hash, read_json, write_json
from mirrorattn.models.vit import ViT, ViTConfig
from mirrorattn.train import NonFiniteLossError, Split, TrainConfig, TrainData, dist_info, fit, seeded_init
from mirrorattn.train.distributed import barrier

__all__ = [
    "PRESETS",
    "QUICK_NOTES",
    "PreparedVision",
    "VisionExperimentConfig",
    "preset_values",
    "prepare_vision_data",
    "run_vision_experiment",
    "train_one",
]


@dataclass
class VisionExperimentConfig:
    """Everything that defines a vision experiment (TOML-loadable; presets in :data:`PRESETS`)."""

    # data
    dataset: str = "digits"  #: "cifar10", "fashion-mnist" or "digits"
    data_root: str | None = None
    download: bool = False
    val_fraction: float = 0.1
    split_seed: int = 0
    max_train: int | None = None  #: cap on the training pool (train + validation), seeded and stratified
    max_test: int | None = None
    image_size: int | None = None  #: resize every image to this side (None: native size)
    # augmentation (defaults: mirrorattn.data.vision.default_augmentation)
    augment: bool = True
    crop_padding: int | None = None
    flip: bool | None = None
    # model (mirrorattn.models.vit.ViTConfig)
    patch: int = 2
    width: int = 64
    depth: int = 2
    heads: int = 4
    mlp_hidden: int = 128
    dropout: float = 0.1
    bias: bool = True
    # optimizers and seeds
    optimizers: tuple[str, ...] = ("adam", "lp-md:1.1", "sgd")
    seeds: int = 3
    lrs: dict[str, float] = field(default_factory=dict)  #: optimizer -> step size (else ``lr``)
    lr: float = 1e-3
    # training (see mirrorattn.train.TrainConfig)
    md_scope: str = "all"
    other_optimizer: str = "adamw"
    other_lr: float | None = None
    weight_decay: float = 0.0
    epochs: int = 10
    batch_size: int = 64
    eval_batch_size: int = 500
    grad_clip: float | None = None
    lr_schedule: str = "constant"  #: "constant" or "cosine" (mirrorattn.train.TrainConfig)
    warmup_epochs: float = 0.0  #: linear warm-up epochs (fractions allowed)
    amp: bool = False
    loss_reduction: str = "mean"
    stop_train_acc: float | None = None
    patience: int | None = None
    device: str = "auto"
    # analysis
    analysis_samples: int = 1000  #: test images for the attention-sparsity statistics
    topk: int = 5  #: k of the top-k attention mass
    weight_threshold: float = 0.06  #: |w| above this counts as a non-zero weight (the paper)
    attention_images: int = 4  #: test images drawn with their [CLS] attention maps

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field."""
        if not self.optimizers:
            raise ValueError("optimizers must name at least one optimizer, e.g. adam,lp-md:1.1,sgd")
        if self.seeds < 1:
            raise ValueError(f"seeds must be a positive integer, got {self.seeds}")
        unknown = sorted(set(self.lrs) - set(self.optimizers))
        if unknown:
            raise ValueError(f"step sizes given for optimizers that are not run: {', '.join(unknown)}")
        for name, lr in self.lrs.items():
            if not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0):
                raise ValueError(f"step size of {name} must be a positive number, got {lr!r}")
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"image_size must be a positive integer or None, got {self.image_size}")
        if self.crop_padding is not None and self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")
        for name in ("analysis_samples", "attention_images", "topk"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.patch < 1:
            raise ValueError(f"patch must be a positive integer, got {self.patch}")
        self.model_config((1, self.patch, self.patch), 10).validate()  # image-size checks come with the data
        self.train_config("adam", 1e-3, 0).validate()

    def lr_for(self, optimizer: str) -> float:
        """Step size of ``optimizer``: its entry in ``lrs`` or the default ``lr``."""
        return float(self.lrs.get(optimizer, self.lr))

    def model_config(
        self, image_shape: tuple[int, int, int], num_classes: int, mean: tuple = (), std: tuple = ()
    ) -> ViTConfig:
        """The ViT's config for images of ``image_shape`` (C, S, S) after any resize."""
        c, h, w = image_shape
        if h != w:
            raise ValueError(f"the ViT needs square images, got {h} x {w}; set image_size to resize them")
        if h % self.patch:
            raise ValueError(f"image side {h} is not a multiple of patch {self.patch}; change patch or image_size")
        return ViTConfig(
            image_size=h,
            channels=c,
            num_classes=num_classes,
            patch=self.patch,
            width=self.width,
            depth=self.depth,
            heads=self.heads,
            mlp_hidden=self.mlp_hidden,
            dropout=self.dropout,
            bias=self.bias,
            mean=tuple(float(m) for m in mean),
            std=tuple(float(s) for s in std),
        )

    def train_config(self, optimizer: str, lr: float, seed: int, epochs: int | None = None) -> TrainConfig:
        """The training config of one run."""
        return TrainConfig(
            optimizer=optimizer,
            lr=lr,
            md_scope=self.md_scope,
            other_optimizer=self.other_optimizer,
            other_lr=self.other_lr,
            weight_decay=self.weight_decay,
            epochs=int(epochs or self.epochs),
            batch_size=self.batch_size,
            eval_batch_size=self.eval_batch_size,
            grad_clip=self.grad_clip,
            lr_schedule=self.lr_schedule,
            warmup_epochs=self.warmup_epochs,
            amp=self.amp,
            loss_reduction=self.loss_reduction,
            seed=seed,
            stop_train_acc=self.stop_train_acc,
            patience=self.patience,
            device=self.device,
        )

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
        """The fields that define the data (for run hashes)."""
        keys = ("dataset", "val_fraction", "split_seed", "max_train", "max_test", "image_size")
        return {k: getattr(self, k) for k in keys}


# ----------------------------------------------------------------------------------- presets

#: measurements behind the quick presets (see the module docstring)
QUICK_NOTES = """\
All timings: the shared 2-core CPU while four other engineers' jobs ran (load average 7-10), torch 1 thread,
nice 10 - pessimistic, several times slower than an idle machine; epoch times of the same work varied 1-12 s.

digits (1,294 train / 144 val / 359 test, 8x8): a ViT with patch 2 (16 tokens) learned slowly (Adam 3e-3,
batch 32, no dropout/augmentation: 95 % val only after 25 epochs); patch 4 (4 tokens + [CLS]) reached
95 % val by epoch 7 at about 1 s/epoch when the machine was quiet. Step-size probe (12 epochs, seed 0,
best validation accuracy, test never looked at): adam 1e-3 0.965 / 3e-3 0.958; lp-md:1.1 2e-2 0.826 /
5e-2 0.896 / 1e-1 0.868 / 2e-1 0.938 / 5e-1 diverged (NaN loss in epoch 1); sgd 3e-2 0.813 / 1e-1 0.882 /
3e-1 0.889 / 1.0 diverged. Chosen by that rule: adam 1e-3, lp-md:1.1 2e-1, sgd 3e-1; but lp-md:1.1 at 2e-1
diverged (NaN) at epoch 16 of a 20-epoch comparison run, so the preset takes the next step, 1e-1. (A first comparison
with lp-md:1.1 at 5e-2 gave 94.6 +- 0.7 % test and left the [CLS] attention uniform: l_1.1-MD moves weights
initialised at std 0.02 very little per step, since w = |u|^10.) No augmentation in this preset (a 1-pixel
crop of an 8x8 digit is a 12 % shift; not compared - chosen to converge within the minute).

cifar10 (45,000 / 5,000 / 10,000, 32x32): throughput of one training step, batch 128, 1 thread under
that load: patch 4 width 128 depth 4 MLP 256 8.3 s; width 96 4.4 s; width 64 depth 4 MLP 128 2.8 s;
patch 8 width 128 1.5 s; patch 4 width 128 depth 2 2.8 s. The preset takes patch 4, width 64, depth 4
(65 tokens), 4 epochs, the paper's augmentation (crop padding 4 + flip). Steps: adam 1e-3 and sgd 3e-1
from the digits probe, lp-md:1.1 the paper's 5e-2 (none probed on CIFAR-10 for lack of CPU time).
fashion-mnist: the same model at 28x28 (patch 4, 49 patches), depth 2, 3 epochs, digits steps; not measured.
"""

_PAPER: dict[str, Any] = {
    "image_size": 48,
    "patch": 4,
    "width": 512,
    "depth": 6,
    "heads": 8,
    "mlp_hidden": 512,
    "dropout": 0.1,
    "bias": True,
    "augment": True,
    "crop_padding": 4,
    "optimizers": ("adam", "lp-md:1.1", "sgd"),
    "lrs": {"adam": 1e-4, "lp-md:1.1": 5e-2, "sgd": 1e-2},
    "seeds": 3,
    "epochs": 100,
    "batch_size": 100,
    "md_scope": "all",
    "loss_reduction": "mean",
    "stop_train_acc": None,
}

#: ``PRESETS[preset][dataset]``: field values applied before a TOML file and command-line overrides
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {"cifar10": dict(_PAPER), "fashion-mnist": dict(_PAPER, flip=False), "digits": dict(_PAPER, flip=False)},
    "quick": {
        "digits": {
            "augment": False,
            "patch": 4,
            "width": 64,
            "depth": 2,
            "heads": 4,
            "mlp_hidden": 128,
            "dropout": 0.0,
            "epochs": 20,
            "batch_size": 32,
            "lrs": {"adam": 1e-3, "lp-md:1.1": 1e-1, "sgd": 3e-1},
        },
        "fashion-mnist": {
            "patch": 4,
            "width": 64,
            "depth": 2,
            "heads": 4,
            "mlp_hidden": 128,
            "dropout": 0.0,
            "epochs": 3,
            "batch_size": 128,
            "lrs": {"adam": 1e-3, "lp-md:1.1": 1e-1, "sgd": 3e-1},
        },
        "cifar10": {
            "patch": 4,
            "width": 64,
            "depth": 4,
            "heads": 4,
            "mlp_hidden": 128,
            "dropout": 0.0,
            "epochs": 4,
            "batch_size": 128,
            "lrs": {"adam": 1e-3, "lp-md:1.1": 5e-2, "sgd": 3e-1},
        },
    },
}


def preset_values(preset: str, dataset: str) -> dict[str, Any]:
    """The field values of ``preset`` for ``dataset`` (``dataset`` included); ``ValueError`` if unknown."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if dataset not in PRESETS[preset]:
        raise ValueError(f"preset {preset!r} has no values for data set {dataset!r}; choose one of "
                         f"{', '.join(PRESETS[preset])}")
    return {"dataset": dataset, **PRESETS[preset][dataset]}


# ----------------------------------------------------------------------------------- data


@dataclass
class PreparedVision:
    """The loaded (and resized) data set and the tensors the training loop takes."""

    dataset: VisionDataset
    data: TrainData
    summary: dict[str, Any]


def prepare_vision_data(config: VisionExperimentConfig) -> PreparedVision:
    """Load (from the cache after the first time), split and resize the data set of ``config``."""
    ds = load_vision_dataset(
        config.dataset,
        data_root=config.data_root,
        val_fraction=config.val_fraction,
        split_seed=config.split_seed,
        download=config.download,
        max_train=config.max_train,
        max_test=config.max_test,
    )
    if len(ds.val) == 0:
        raise ValueError("the validation split is empty: set val_fraction > 0 (model selection needs it)")
    if config.image_size is not None:
        ds = resize_dataset(ds, config.image_size)
    data = TrainData(Split(*ds.train.tensors()), Split(*ds.val.tensors()), Split(*ds.test.tensors()))
    return PreparedVision(ds, data, ds.summary())


# ----------------------------------------------------------------------------------- runs


def _run_identity(config: VisionExperimentConfig, train_cfg: TrainConfig, model_cfg: ViTConfig,
                  augmentation: dict[str, Any] | None) -> dict[str, Any]:
    return {"data": config.data_identity(), "model": dataclasses.asdict(model_cfg), "train": train_cfg.identity(),
            "augmentation": augmentation, "epochs": train_cfg.epochs, "stop_train_acc": train_cfg.stop_train_acc,
            "patience": train_cfg.patience,
            "analysis": {"samples": config.analysis_samples, "topk": config.topk,
                         "threshold": config.weight_threshold, "images": config.attention_images}}


def build_model(config: VisionExperimentConfig, prepared: PreparedVision, seed: int) -> ViT:
    """A freshly initialised ViT for ``prepared`` (seed ``seed``'s own initialisation)."""
    ds = prepared.dataset
    with seeded_init(seed):
        return ViT(config.model_config(ds.image_shape, ds.num_classes, ds.mean, ds.std))


def train_one(
    config: VisionExperimentConfig,
    prepared: PreparedVision,
    optimizer: str,
    seed: int,
    out_dir: Path,
    *,
    lr: float | None = None,
    epochs: int | None = None,
    analyse: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or reuse / resume) one run and return its summary (also written to ``summary.json``).

    The summary holds ``test_acc`` (validation-best epoch, fraction), ``test_acc_last``,
    ``val_acc_best``, ``best_epoch``, ``epochs_run``, ``train_seconds``, ``seconds_per_epoch``,
    ``samples_per_second`` and, with ``analyse``, the attention / weight sparsity. A run whose
    loss becomes NaN/inf is recorded with ``diverged: True`` and ``test_acc: None`` (and reused as
    such) instead of stopping the whole comparison.
    """
    lr = config.lr_for(optimizer) if lr is None else float(lr)
    train_cfg = config.train_config(optimizer, lr, seed, epochs)
    ds = prepared.dataset
    model_cfg = config.model_config(ds.image_shape, ds.num_classes, ds.mean, ds.std)
    aug = config.augmentation(ds.image_shape[-1])
    identity = _run_identity(config, train_cfg, model_cfg, aug)
    digest = config_hash(identity)
    info = dist_info()
    summary_path = out_dir / "summary.json"
    if summary_path.is_file():
        old = read_json(summary_path)
        if old.get("config_hash") == digest and (old.get("analysis") is not None or not analyse or old.get("diverged")):
            return old
    cfg_path = out_dir / "run_config.json"
    resume = cfg_path.is_file() and read_json(cfg_path).get("config_hash") == digest
    barrier()  # every process has decided before rank 0 changes the folder
    if info.is_main:
        if not resume and out_dir.exists():
            shutil.rmtree(out_dir)  # a run of other settings: start over
        write_json(cfg_path, {"config_hash": digest, "optimizer": optimizer, "lr": lr, "seed": seed, **identity})
    barrier()
    model = build_model(config, prepared, seed)
    augment = RandomCropFlip(**aug) if aug is not None else None
    start = time.time()
    try:
        result = fit(model, prepared.data, train_cfg, out_dir, resume=resume, augment=augment, progress=progress)
    except NonFiniteLossError as exc:  # recorded (and counted in the table), not hidden; the other runs go on
        summary = {"config_hash": digest, "dataset": config.dataset, "optimizer": optimizer, "lr": lr, "seed": seed,
                   "diverged": True, "error": str(exc), "test_acc": None, "test_acc_last": None,
                   "wall_seconds": time.time() - start, "augmentation": aug, "analysis": None}
        if info.is_main:
            write_json(summary_path, summary)
        return summary
    epochs_run = max(1, int(result["epochs_run"] or 0))
    summary: dict[str, Any] = {
        "config_hash": digest,
        "dataset": config.dataset,
        "optimizer": optimizer,
        "lr": lr,
        "seed": seed,
        **{k: v for k, v in result.items() if k != "history"},
        "seconds_per_epoch": result["train_seconds"] / epochs_run,
        "wall_seconds": time.time() - start,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "augmentation": aug,
        "diverged": False,
        "analysis": None,
    }
    if analyse:
        from mirrorattn.experiments.vision_analysis import analyse_run

        summary["analysis"] = analyse_run(model, prepared, config, out_dir, write=info.is_main)
    if info.is_main:
        write_json(summary_path, summary)
    return summary


def run_vision_experiment(config: VisionExperimentConfig, out: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Run every (optimizer, seed) and write results.json, results.md and the figures in ``out``."""
    config.validate()
    out = Path(out)
    info = dist_info()
    prepared = prepare_vision_data(config)
    summaries: dict[str, list[dict[str, Any]]] = {}
    for optimizer in config.optimizers:
        for seed in range(config.seeds):
            if info.is_main and progress:
                print(f"== {config.dataset}: {optimizer} (lr {config.lr_for(optimizer):g}), seed {seed}", flush=True)
            run_dir = out / "runs" / run_name(optimizer, seed)
            summaries.setdefault(optimizer, []).append(
                train_one(config, prepared, optimizer, seed, run_dir, progress=progress)
            )
    results = {"config": config, "data": prepared.summary, "aggregate": aggregate(summaries), "runs": summaries}
    if info.is_main:
        from mirrorattn.experiments.vision_analysis import write_report

        write_json(out / "results.json", results)
        write_report(out, config, results)
    return results
