"""LpMirrorDescent on FSDP2 (``fully_shard``) DTensor parameters: 2 gloo CPU processes equal 1 process.

The two larger weights are above the compile threshold (the compiled kernel runs on the local shards),
the last layer below it (eager), and its p = 2 group takes the SGD form. Checked against a plain
1-process run on the global batch: the weights after 6 steps, in plain and normalised mode; a sharded
``torch.distributed.checkpoint`` save after 3 steps, loaded into a fresh model and optimizer, continues
bit for bit; a NaN in one process's shard makes both processes skip (or both raise).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mirrorattn.optim import LpMirrorDescent, NonFiniteGradientError
from mirrorattn.optim import _kernels as K
from test_optim_ddp import _free_port, gloo_worker

STEPS, N_GLOBAL, WIDTH = 6, 16, 24
THRESHOLD = 256  # compile_min_numel: the 16 x 24 and 24 x 24 weights are above it, the rest below


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(N_GLOBAL, 16, generator=g, dtype=torch.float64),
            torch.randn(N_GLOBAL, 1, generator=g, dtype=torch.float64))


def _model() -> torch.nn.Sequential:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(16, WIDTH), torch.nn.Tanh(), torch.nn.Linear(WIDTH, WIDTH),
                               torch.nn.Tanh(), torch.nn.Linear(WIDTH, 1)).double()


def _optimizer(model: torch.nn.Sequential, normalized: bool, nonfinite: str = "raise") -> LpMirrorDescent:
    groups = [{"params": model[0].parameters(), "p": 1.75 if normalized else 1.1, "weight_decay": 0.01},
              {"params": model[2].parameters(), "p": 3.0},
              {"params": model[4].parameters(), "p": 2.0, "weight_decay": 0.01}]
    return LpMirrorDescent(groups, lr=0.05, p=2.0, normalized=normalized, compile_min_numel=THRESHOLD,
                           nonfinite=nonfinite)


def _train(model: torch.nn.Module, opt: LpMirrorDescent, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    for _ in range(steps):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()


def _sharded(normalized: bool, nonfinite: str = "raise") -> tuple[torch.nn.Module, LpMirrorDescent]:
    from torch.distributed.fsdp import fully_shard

    model = _model()
    for i in (0, 2, 4):
        fully_shard(model[i])
    fully_shard(model)
    return model, _optimizer(model, normalized, nonfinite)


def _full(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))


def _nonfinite_checks(normalized: bool, x: torch.Tensor, y: torch.Tensor, rank: int) -> dict[str, object]:
    """A NaN in rank 1's shard of the first weight's gradient: both processes skip, then both raise."""
    found: dict[str, object] = {}
    for mode in ("skip", "raise"):
        model, opt = _sharded(normalized, mode)
        before = _full(model)
        ((model(x) - y) ** 2).mean().backward()
        if rank == 1:
            model[0].weight.grad.to_local()[0, 0] = float("nan")
        try:
            opt.step()
            found[mode] = opt.skipped_steps
        except NonFiniteGradientError as exc:
            found[mode] = str(exc)
        found[mode + "_unchanged"] = all(torch.equal(v, before[k]) for k, v in _full(model).items())
    return found


def _worker(rank: int, world: int, port: int, out: str, normalized: bool) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    with gloo_worker(rank, world, port):
        x, y = _data()
        shard = slice(rank * N_GLOBAL // world, (rank + 1) * N_GLOBAL // world)
        x, y = x[shard], y[shard]
        model, opt = _sharded(normalized)
        _train(model, opt, x, y, STEPS // 2)
        msd, osd = get_state_dict(model, opt)
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=Path(out) / "dcp")
        _train(model, opt, x, y, STEPS - STEPS // 2)
        result = {"weights": _full(model), "paths": dict(opt.last_step_paths),
                  "dual_type": type(opt.state[model[0].weight]["dual"]).__name__}
        model2, opt2 = _sharded(normalized)  # a fresh process's model and optimizer, loaded from the checkpoint
        msd, osd = get_state_dict(model2, opt2)
        sd = {"model": msd, "optim": osd}
        dcp.load(sd, checkpoint_id=Path(out) / "dcp")
        set_state_dict(model2, opt2, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
        _train(model2, opt2, x, y, STEPS - STEPS // 2)
        result.update(resumed=_full(model2), failed=dict(K._FAILED), **_nonfinite_checks(normalized, x, y, rank))
        torch.save(result, Path(out) / f"rank{rank}.pt")


@pytest.mark.slow
@pytest.mark.parametrize("normalized", [False, True], ids=["plain", "normalized"])
def test_two_process_fsdp_equals_one_process(tmp_path, normalized):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), normalized), nprocs=2, join=True)

    x, y = _data()
    model = _model()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    _train(model, _optimizer(model, normalized), x, y, STEPS)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for r in ranks:
        assert r["failed"] == {}  # no compilation failed, so no eager fallback and no warning
        assert r["paths"] == {"compiled": 2, "foreach": 2, "direct": 2}, r["paths"]
        assert r["dual_type"] == "DTensor"
        for name, ref in model.state_dict().items():
            if ref.ndim == 2:  # training moved it (a normalised 1-element bias may step back and forth)
                assert not torch.allclose(ref, before[name], rtol=0, atol=1e-4), name
            torch.testing.assert_close(r["weights"][name], ref, rtol=1e-12, atol=1e-14, msg=name)
            assert torch.equal(r["resumed"][name], r["weights"][name]), name  # the resume is bit-exact
        assert r["skip"] == 1 and r["skip_unchanged"] and r["raise_unchanged"]
        assert "'0.weight'" in r["raise"] or "param_groups[0]['params'][0]" in r["raise"], r["raise"]
