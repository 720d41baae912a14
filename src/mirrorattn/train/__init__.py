"""Training harness shared by the text and vision experiments.

``fit(model, data, config, out_dir)`` is the one loop (single process or DDP under torchrun);
``TrainConfig`` its settings; ``TrainData``/``Split`` the in-memory data it takes.
``torchrun --nproc_per_node N -m mirrorattn.torchrun text|vision ...`` runs an experiment under DDP
(the entry point is part of the command line, :mod:`mirrorattn.torchrun`, not of this layer).
"""

from mirrorattn.train.checkpoint import derive_seed, seeded_init
from mirrorattn.train.config import TrainConfig
from mirrorattn.train.distributed import DistInfo, dist_info, init_distributed, resolve_device
from mirrorattn.train.loop import Augment, NonFiniteLossError, Split, TrainData, evaluate, fit, loss_and_correct
from mirrorattn.train.param_groups import MultiOptimizer, build_optimizers, make_optimizer, split_md_scope

__all__ = [
    "Augment",
    "DistInfo",
    "MultiOptimizer",
    "NonFiniteLossError",
    "Split",
    "TrainConfig",
    "TrainData",
    "build_optimizers",
    "derive_seed",
    "dist_info",
    "evaluate",
    "fit",
    "init_distributed",
    "loss_and_correct",
    "make_optimizer",
    "resolve_device",
    "seeded_init",
    "split_md_scope",
]
