"""DDP: 2 CPU processes (gloo, launched by torchrun) follow the path of 1 process on the same global batch."""

from __future__ import annotations

import textwrap

import pytest
import torch

from toy_runs import torchrun_job

SCRIPT = textwrap.dedent(
    '''
    import sys
    import torch
    from mirrorattn.models.transformer import TextTransformer, TextTransformerConfig
    from mirrorattn.train import Split, TrainConfig, TrainData, fit, seeded_init
    from mirrorattn.train.distributed import exit_process

    def make(optimizer):
        g = torch.Generator().manual_seed(0)
        def split(n):
            ids = torch.randint(1, 30, (n, 6), generator=g)
            mask = torch.ones(n, 6, dtype=torch.bool)
            mask[: n // 2, 4:] = False
            return Split((ids, mask), torch.randint(0, 2, (n,), generator=g))
        data = TrainData(split(91), split(20), split(20))  # 91 = 5 x 16 + 11: the last batch splits 6 / 5
        cfg = TextTransformerConfig(vocab_size=30, max_length=6, width=8, blocks=2, heads=2, dropout=0.0,
                                    pooling="cls", bias=True)
        with seeded_init(0):
            model = TextTransformer(cfg).double()
        lr = {"adam": 1e-2, "lp-md:1.5": 1e-2}[optimizer]
        config = TrainConfig(optimizer=optimizer, lr=lr, epochs=2, batch_size=16, stop_train_acc=None,
                             device="cpu", loss_reduction="sum", grad_clip=0.5)
        return model, data, config

    if __name__ == "__main__":
        torch.set_num_threads(1)
        optimizer, out = sys.argv[1], sys.argv[2]
        model, data, config = make(optimizer)
        fit(model, data, config, out, progress=False)
        exit_process(0)  # leave the group, no interpreter teardown (gloo threads aborted one there under load)
    '''
)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["lp-md:1.5"])  # not Adam: it is blind to a gradient scale error
def test_two_gloo_processes_match_one_process(tmp_path, optimizer):
    _, namespace = torchrun_job(tmp_path, "ddp_job", SCRIPT, optimizer, str(tmp_path / "ddp"))
    model, data, config = namespace["make"](optimizer)
    from mirrorattn.train import fit

    single = fit(model, data, config, tmp_path / "single", progress=False)
    a = torch.load(tmp_path / "single" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=False)["model"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-10, atol=1e-12, msg=k)
    ddp = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=False)["history"]
    for r1, r2 in zip(single["history"], ddp):
        assert r1["train_acc"] == r2["train_acc"] and r1["val_acc"] == r2["val_acc"]
        assert r1["train_loss"] == pytest.approx(r2["train_loss"], rel=1e-10)
    # the parameters moved (the comparison is not between two untouched inits)
    with torch.no_grad():
        assert max((a[k] - namespace["make"](optimizer)[0].state_dict()[k]).abs().max().item() for k in a) > 1e-3


def test_exit_process_flushes_and_exits_with_its_code(tmp_path):
    """``exit_process`` ends the process with the given code, after what was printed (unflushed, to a pipe) and
    logged has been written - also with no process group."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout to a pipe: block-buffered
    script = ("import logging, sys\nlogging.basicConfig(stream=sys.stderr)\n"
              "from mirrorattn.train.distributed import exit_process\n"
              "print('written', end='')\nlogging.getLogger('x').warning('logged')\nexit_process(3)\n"
              "print('not reached')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env=env)
    assert (proc.returncode, proc.stdout) == (3, "written"), proc.stderr
    assert "logged" in proc.stderr
