"""LpMirrorDescent under DistributedDataParallel: 2 gloo CPU processes equal 1 process on the global batch."""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mirrorattn.optim import LpMirrorDescent
from mirrorattn.train.distributed import exit_process

STEPS = 6
N_GLOBAL = 24


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_GLOBAL, 5, generator=g, dtype=torch.float64)
    y = torch.randn(N_GLOBAL, 1, generator=g, dtype=torch.float64)
    return x, y


def _model() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()


def _optimizer(model: torch.nn.Module) -> LpMirrorDescent:
    first, second = list(model[0].parameters()), list(model[2].parameters())
    return LpMirrorDescent([{"params": first, "p": 1.1, "weight_decay": 0.01},
                            {"params": second, "p": 3.0, "normalized": True}], lr=0.05, p=2.0, compile=False)


def _train(model: torch.nn.Module, module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    opt = _optimizer(model)
    for _ in range(STEPS):
        opt.zero_grad()
        loss = ((module(x) - y) ** 2).mean()
        loss.backward()
        opt.step()


@contextmanager
def gloo_worker(rank: int, world: int, port: int) -> Iterator[None]:
    """A spawned worker's process group (gloo, one thread): an exception leaves it and propagates; a finished
    worker ends by ``exit_process`` - no interpreter teardown, where the group's threads can abort a process
    (torch keeps an FSDP2 group alive past ``destroy_process_group``; under load also DDP's)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        yield
    except BaseException:
        dist.destroy_process_group()
        raise
    exit_process(0)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    with gloo_worker(rank, world, port):
        x, y = _data()
        shard = slice(rank * N_GLOBAL // world, (rank + 1) * N_GLOBAL // world)
        model = _model()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        _train(model, ddp, x[shard], y[shard])
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, Path(out) / f"rank{rank}.pt")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_equals_one_process(tmp_path):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)

    x, y = _data()
    model = _model()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    _train(model, model, x, y)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for name, ref in model.state_dict().items():
        if ref.ndim == 2:
            assert not torch.allclose(ref, before[name], rtol=0, atol=1e-4), name  # training moved it
        for r in ranks:
            torch.testing.assert_close(r[name], ref, rtol=1e-12, atol=1e-14)
