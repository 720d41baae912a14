"""Process-group setup for ``torchrun`` (DDP) and the few collectives the loop needs.

A process started by ``torchrun`` has ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in its
environment; :func:`init_distributed` then joins the process group (``nccl`` on CUDA, ``gloo``
on CPU). Without them everything runs as a single process and the collectives are no-ops.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "all_reduce_sum", "dist_info", "exit_process", "init_distributed", "resolve_device",
           "shutdown_distributed"]


@dataclass(frozen=True)
class DistInfo:
    """Rank of this process, number of processes and whether a process group is active."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    active: bool = False

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and shows progress bars (rank 0)."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when RANK and WORLD_SIZE are set (torchrun, or a hand-made launch)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"`` -> ``cuda:LOCAL_RANK`` if CUDA is available else ``cpu``; other strings as given."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available; use --device cpu")
    return dev


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun process group if launched by torchrun (idempotent); else single process."""
    if dist.is_available() and dist.is_initialized():
        return dist_info()
    if not launched_by_torchrun():
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend=backend)
    return dist_info()


def dist_info() -> DistInfo:
    """The current process's rank and world size (single process if no group is active)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            active=True,
        )
    return DistInfo()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over processes in place (no-op for a single process); returns ``t``."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    """Wait for every process (no-op for a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def shutdown_distributed() -> None:
    """Leave the process group if one is active."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit_process(code: int = 0) -> NoReturn:
    """Wait for the other processes, leave the process group and end this process with ``code`` - without the
    interpreter's teardown.

    Once FSDP2 (``fully_shard``) has run, torch (2.13) keeps the process group alive after
    ``destroy_process_group`` (references held on its C++ side, also with ``torch.optim.SGD``), so the group is
    destroyed during the interpreter's teardown, where its gloo threads can abort a process whose work is done
    (``terminate called without an active exception``, SIGABRT - seen once in CI). So every process waits at a
    barrier (an error there, e.g. a peer that has already failed, is ignored), leaves the group, flushes the
    logs and the standard streams and ends with ``os._exit``. Results are written (atomically) before this.
    """
    if dist.is_available() and dist.is_initialized():
        try:
            barrier()
        except Exception:  # noqa: BLE001 - a peer that failed: nothing left to wait for
            pass
        shutdown_distributed()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: nothing more to write
            pass
    os._exit(code)
