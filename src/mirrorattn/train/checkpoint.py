"""Per-epoch checkpoints (written atomically) and the seeds derived from a run's seed."""

from __future__ import annotations

import random
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from mirrorattn.io import torch_save

__all__ = ["CHECKPOINT_VERSION", "derive_seed", "load_checkpoint", "rng_state", "save_checkpoint", "seeded_init",
           "set_rng_state"]

CHECKPOINT_VERSION = 1


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed that depends only on ``parts`` (ints and strings), e.g. (seed, epoch, "order")."""
    ints = [p if isinstance(p, int) else zlib.crc32(str(p).encode("utf-8")) for p in parts]
    if any(i < 0 for i in ints):
        raise ValueError(f"seed parts must be non-negative, got {parts}")
    state = np.random.SeedSequence(ints).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def rng_state() -> dict[str, Any]:
    """The global RNG states of torch (CPU and CUDA), NumPy and Python."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, **payload: Any) -> Path:
    """Write ``payload`` (model/optimizer state dicts, epoch, history, ...) atomically."""
    payload = {"version": CHECKPOINT_VERSION, **payload, "rng": rng_state()}
    return torch_save(path, payload)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors on the CPU).

    Raises ``ValueError`` with a clear message if the file is unreadable or of another version.
    """
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise ValueError(f"checkpoint {path} cannot be read ({exc}); delete it to start the run over") from None
    if not isinstance(ckpt, dict) or ckpt.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint {path} is not a version-{CHECKPOINT_VERSION} mirrorattn checkpoint; delete it")
    return ckpt


@contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Seed the global torch RNG for building a model (each seed its own init), then restore it.

    Example: ``with seeded_init(seed): model = TextTransformer(cfg)``.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(int(seed), "init"))
        yield
