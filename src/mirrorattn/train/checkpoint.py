"""Per-epoch checkpoints (written atomically) and the seeds derived from a run's seed.

A checkpoint holds only tensors and plain containers (dict, list, tuple, str, int, float, bool,
None) and is read with ``torch.load(weights_only=True)``: a crafted ``checkpoint.pt`` in a copied
run folder cannot run code. The NumPy RNG state (a tuple with an ndarray) is stored as a dict of
a str, an int64 tensor and numbers (:func:`rng_state`).
"""

from __future__ import annotations

import random
import warnings
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from mirrorattn.io import torch_save

__all__ = ["CHECKPOINT_VERSION", "SNAPSHOT_DIR", "CheckpointError", "derive_seed", "is_state_dict", "list_snapshots",
           "load_checkpoint", "load_weights", "rng_state", "save_checkpoint", "save_snapshot", "seeded_init",
           "set_rng_state", "snapshot_due"]

#: 2: read with weights_only=True (version 1 pickled NumPy's RNG state and cannot be read so)
CHECKPOINT_VERSION = 2


class CheckpointError(ValueError):
    """A checkpoint or weights file that cannot be read safely, or is not ours (the message names it)."""


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed that depends only on ``parts`` (ints and strings), e.g. (seed, epoch, "order")."""
    ints = [p if isinstance(p, int) else zlib.crc32(str(p).encode("utf-8")) for p in parts]
    if any(i < 0 for i in ints):
        raise ValueError(f"seed parts must be non-negative, got {parts}")
    state = np.random.SeedSequence(ints).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def rng_state() -> dict[str, Any]:
    """The global RNG states of torch (CPU and CUDA), NumPy and Python."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": numpy_state,
        "python": [int(version), [int(v) for v in internal], gauss],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, **payload: Any) -> Path:
    """Write ``payload`` (model/optimizer state dicts, epoch, history, ...) atomically."""
    payload = {"version": CHECKPOINT_VERSION, **payload, "rng": rng_state()}
    return torch_save(path, payload)


def _safe_load(path: Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; :class:`CheckpointError` (one line) if that fails."""
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the failure, if any, says enough
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated, not a torch file, or types weights_only refuses
        why = " ".join(str(exc).split())
        if "weights_only" in why or "Unsupported global" in why or "Weights only" in why:
            why = "it holds objects other than tensors and plain containers, which are not loaded (code could run)"
        why = why.split(". ")[0][:160]  # torch's first sentence
        raise CheckpointError(f"{what} {path} cannot be read safely ({why})") from None


def load_checkpoint(path: str | Path, required: tuple[str, ...] = ("rng",)) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors on the CPU), with ``weights_only=True``.

    Raises :class:`CheckpointError` (a ``ValueError``, one line) if the file is unreadable, holds
    anything but tensors and plain containers (e.g. a crafted pickle, or a version-1 checkpoint), is
    of another version or lacks one of the ``required`` keys.
    """
    path = Path(path)
    ckpt = _safe_load(path, "checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint {path} is not a version-{CHECKPOINT_VERSION} mirrorattn checkpoint")
    missing = [k for k in required if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    return ckpt


def is_state_dict(obj: Any) -> bool:
    """Whether ``obj`` (read from disk) is a model's ``state_dict``: a dict of tensors."""
    return isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values())


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A model's ``state_dict`` saved by the training loop (``best_model.pt``), read with ``weights_only=True``.

    Raises :class:`CheckpointError` (one line) unless the file holds a dict of tensors.
    """
    path = Path(path)
    state = _safe_load(path, "weights file")
    if not is_state_dict(state):
        raise CheckpointError(f"weights file {path} does not hold a model's state_dict (names -> tensors)")
    return state


#: folder of a run's weight snapshots (``TrainConfig.snapshots``), one ``epoch_NNNN.pt`` per kept epoch
SNAPSHOT_DIR = "snapshots"


def snapshot_due(mode: str, epoch: int, last: bool) -> bool:
    """Whether the weights after ``epoch`` completed epochs (0: the initial weights) are kept under ``mode``.

    "none": never; "every": always; "log": epochs 0-4, every 2^k and 3 * 2^k (6, 8, 12, 16, 24 ...) and the
    run's ``last`` epoch - about 2 log2(epochs) files, dense early where the attention changes fastest.
    """
    if mode == "none":
        return False
    if mode == "every" or last or epoch <= 4:
        return True
    if mode != "log":
        raise ValueError(f"unknown snapshot mode {mode!r}; use none, log or every")
    odd = epoch
    while odd % 2 == 0:
        odd //= 2
    return odd in (1, 3)


def save_snapshot(run_dir: str | Path, epoch: int, state: dict[str, torch.Tensor]) -> Path:
    """Write the model ``state`` after ``epoch`` epochs to ``run_dir/snapshots/epoch_NNNN.pt`` (atomically)."""
    return torch_save(Path(run_dir) / SNAPSHOT_DIR / f"epoch_{int(epoch):04d}.pt", state)


def list_snapshots(run_dir: str | Path) -> list[tuple[int, Path]]:
    """The run's weight snapshots as (epoch, path), by epoch; [] when it kept none. Read them with
    :func:`load_weights`."""
    found = []
    for path in (Path(run_dir) / SNAPSHOT_DIR).glob("epoch_*.pt"):
        digits = path.stem.removeprefix("epoch_")
        if digits.isdigit():
            found.append((int(digits), path))
    return sorted(found)


@contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Seed the global torch RNG for building a model (each seed its own init), then restore it.

    Example: ``with seeded_init(seed): model = TextTransformer(cfg)``.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(int(seed), "init"))
        yield
