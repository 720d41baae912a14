"""The training loop: closed-form first step, parameter groups, resume, errors, model selection."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from mirrorattn.models.transformer import TextTransformer, TextTransformerConfig
from mirrorattn.train import (
    NonFiniteLossError,
    Split,
    TrainConfig,
    TrainData,
    build_optimizers,
    fit,
    seeded_init,
    split_md_scope,
)


def token_task(n: int, seed: int, length: int = 8, vocab: int = 20) -> Split:
    """Label 1 iff token 3 occurs among the real tokens; variable lengths with padding (id 0)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (n, length), generator=g)
    ids[:, 0] = 1  # [CLS]
    lengths = torch.randint(3, length + 1, (n,), generator=g)
    mask = torch.arange(length)[None] < lengths[:, None]
    labels = torch.randint(0, 2, (n,), generator=g)
    pos = (torch.rand(n, generator=g) * (lengths - 1).float()).long() + 1
    ids[labels.bool(), pos[labels.bool()]] = 3
    ids[~mask] = 0
    return Split((ids, mask), labels)


def tiny_model(seed: int = 0, dtype=torch.float32, dropout: float = 0.1) -> TextTransformer:
    cfg = TextTransformerConfig(
        vocab_size=20, max_length=8, width=16, blocks=1, heads=2, dropout=dropout, pooling="mean"
    )
    with seeded_init(seed):
        return TextTransformer(cfg).to(dtype)


@pytest.fixture(scope="module")
def data() -> TrainData:
    return TrainData(token_task(192, 1), token_task(64, 2), token_task(64, 3))


def cfg(**kw) -> TrainConfig:
    base = dict(optimizer="adam", lr=3e-3, epochs=2, batch_size=32, seed=0, stop_train_acc=None, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


class Logistic(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d, 1, bias=False, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x).squeeze(-1)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_one_full_batch_sgd_step_matches_closed_form(tmp_path, reduction):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10, 3))
    y = (rng.random(10) > 0.5).astype(np.int64)
    split = Split((torch.tensor(X),), torch.tensor(y))
    model = Logistic(3)
    with torch.no_grad():
        model.lin.weight.copy_(torch.tensor([[0.3, -0.2, 0.1]], dtype=torch.float64))
    w0 = np.array([0.3, -0.2, 0.1])
    fit(model, TrainData(split, split), cfg(optimizer="sgd", lr=0.1, epochs=1, batch_size=10, loss_reduction=reduction),
        tmp_path, progress=False)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    w1 = ckpt["model"]["lin.weight"].numpy()[0]
    grad = X.T @ (1 / (1 + np.exp(-X @ w0)) - y)  # d/dw sum_i BCE
    if reduction == "mean":
        grad /= 10
    np.testing.assert_allclose(w1, w0 - 0.1 * grad, rtol=1e-12)


def test_learns_and_reports_fractions_with_selection_on_validation(tmp_path, data):
    with seeded_init(0):
        model = tiny_model()
    res = fit(model, data, cfg(epochs=6), tmp_path, progress=False)
    for key in ("test_acc", "test_acc_last", "val_acc_best"):
        assert 0.0 <= res[key] <= 1.0
    assert res["test_acc"] > 0.8 and res["epochs_run"] == 6
    hist = json.loads((tmp_path / "history.json").read_text())
    val = [r["val_acc"] for r in hist]
    assert res["best_epoch"] == int(np.argmax(val)) + 1  # first best epoch on validation
    assert res["val_acc_best"] == max(val)
    # test_acc is the accuracy of best_model.pt, computed here independently
    best = tiny_model()
    best.load_state_dict(torch.load(tmp_path / "best_model.pt", weights_only=True))
    best.eval()
    with torch.no_grad():
        logits = best(*data.test.inputs)
    assert res["test_acc"] == pytest.approx(((logits > 0).long() == data.test.labels).double().mean().item(), abs=1e-12)
    last = tiny_model()
    last.load_state_dict(torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model"])
    last.eval()
    with torch.no_grad():
        acc_last = ((last(*data.test.inputs) > 0).long() == data.test.labels).double().mean().item()
    assert res["test_acc_last"] == pytest.approx(acc_last, abs=1e-12)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_resume_gives_exactly_the_uninterrupted_result(tmp_path, data, optimizer):
    c2 = cfg(epochs=3, optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 3e-3)
    full = fit(tiny_model(), data, c2, tmp_path / "full", progress=False)
    fit(tiny_model(), data, cfg(**{**c2.__dict__, "epochs": 1}), tmp_path / "part", progress=False)
    resumed_model = tiny_model(seed=99)  # a different init: everything must come from the checkpoint
    resumed = fit(resumed_model, data, c2, tmp_path / "part", resume=True, progress=False)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    strip = ("train_seconds", "samples_per_second")
    assert [{k: v for k, v in r.items() if k not in strip} for r in full["history"]] == [
        {k: v for k, v in r.items() if k not in strip} for r in resumed["history"]
    ]
    for key in ("test_acc", "test_acc_last", "val_acc_best", "best_epoch", "epochs_run"):
        assert full[key] == resumed[key], key


def test_resume_refuses_other_settings(tmp_path, data):
    fit(tiny_model(), data, cfg(epochs=1), tmp_path, progress=False)
    with pytest.raises(ValueError, match="cannot resume"):
        fit(tiny_model(), data, cfg(epochs=2, lr=1e-2), tmp_path, resume=True, progress=False)


def test_seeds_give_different_inits_and_same_seed_same_init():
    a, b, c = tiny_model(0), tiny_model(0), tiny_model(1)
    assert torch.equal(a.tok_emb.weight, b.tok_emb.weight)
    assert not torch.equal(a.tok_emb.weight, c.tok_emb.weight)


class NaNAfter(nn.Module):
    def __init__(self, inner: nn.Module, calls: int) -> None:
        super().__init__()
        self.inner, self.calls, self.n = inner, calls, 0

    def forward(self, *inputs):
        out = self.inner(*inputs)
        self.n += int(self.training)
        return out * float("nan") if self.training and self.n > self.calls else out


def test_nonfinite_loss_names_epoch_and_batch(tmp_path, data):
    model = NaNAfter(tiny_model(), calls=8)  # 6 batches per epoch: the 9th call is epoch 2, batch 3
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, batch 3"):
        fit(model, data, cfg(epochs=3), tmp_path, progress=False)


_TIMING = ("train_seconds", "samples_per_second")


def test_a_diverged_run_is_the_result_of_its_best_epoch(tmp_path, data):
    """keep_diverged: the NaN at epoch 2 ends the run; fit returns epoch 1's result, the same as a 1-epoch run."""
    model = NaNAfter(tiny_model(), calls=8)  # epoch 2, batch 3
    res = fit(model, data, cfg(epochs=3), tmp_path / "nan", progress=False, keep_diverged=True)
    ref_model = NaNAfter(tiny_model(), calls=10**9)
    ref = fit(ref_model, data, cfg(epochs=1), tmp_path / "ref", progress=False)
    assert res["diverged"] is True and ref["diverged"] is False and "error" not in ref
    assert "epoch 2, batch 3" in res["error"] and res["stop_reason"] == f"diverged: {res['error']}"
    assert (res["best_epoch"], res["epochs_run"], len(res["history"])) == (1, 1, 1)
    strip = [{k: v for k, v in row.items() if k not in _TIMING} for row in (res["history"][0], ref["history"][0])]
    assert strip[0] == strip[1]
    for a, b in zip(model.state_dict().values(), ref_model.state_dict().values()):
        assert torch.equal(a, b)  # the model holds epoch 1's (validation-best) weights
    assert res["test_acc"] == ref["test_acc"] == ref["test_acc_last"] and res["test_acc_last"] is None
    from mirrorattn.train import evaluate

    direct = evaluate(model, data.test, cfg(), torch.device("cpu"))  # measured again, outside fit
    assert (res["test_acc"], res["test_loss"]) == (direct["acc"], direct["loss"])
    row = ref["history"][0]
    assert (res["val_acc_best"], res["val_loss_best"], res["train_acc_last"]) == (
        row["val_acc"], row["val_loss"], row["train_acc"])


def test_a_run_diverged_in_its_first_epoch_has_no_accuracy_and_the_initial_weights(tmp_path, data):
    model = NaNAfter(tiny_model(), calls=3)  # three steps taken, the NaN at epoch 1, batch 4
    res = fit(model, data, cfg(epochs=2), tmp_path, progress=False, keep_diverged=True)
    assert res["diverged"] is True and "epoch 1, batch 4" in res["error"]
    assert res["best_epoch"] == 0 and res["history"] == [] and res["epochs_run"] == 0
    assert all(res[k] is None for k in ("test_acc", "test_acc_last", "test_loss", "val_acc_best", "val_loss_best"))
    for a, b in zip(model.inner.state_dict().values(), tiny_model().state_dict().values()):
        assert torch.equal(a, b)


def test_md_scope_attention_groups(data):
    model = tiny_model()
    main, other = split_md_scope(model, "attention")
    names = {n for n, p in model.named_parameters() if any(p is q for q in main)}
    assert names == {"blocks.0.attn.q_proj.weight", "blocks.0.attn.k_proj.weight"}
    assert len(main) + len(other) == len(list(model.parameters()))
    opt = build_optimizers(model, cfg(optimizer="sgd", md_scope="attention", other_optimizer="adamw", other_lr=1e-4))
    kinds = [type(o).__name__ for o in opt.optimizers]
    assert kinds[1] == "AdamW" and [g["lr"] for g in opt.param_groups] == [3e-3, 1e-4]
    all_main, none = split_md_scope(model, "all")
    assert len(all_main) == len(list(model.parameters())) and none == []
    with pytest.raises(ValueError, match="needs a model with MultiHeadSelfAttention"):
        split_md_scope(nn.Linear(2, 1), "attention")


def test_attention_scope_updates_only_qk_with_the_main_optimizer(tmp_path, data):
    """SGD (main) with lr 0 on q/k and AdamW elsewhere: q/k must not move, the rest must."""
    model = tiny_model(dropout=0.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    c = cfg(optimizer="sgd", lr=1e-30, md_scope="attention", other_optimizer="adamw", other_lr=1e-2, epochs=1)
    fit(model, data, c, tmp_path, progress=False)
    last = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model"]
    for n, p0 in before.items():
        moved = not torch.allclose(last[n], p0, rtol=0, atol=1e-20)
        assert moved == (n.split(".")[-2] not in ("q_proj", "k_proj")), n


def test_bad_config_and_data_are_clear(tmp_path, data):
    with pytest.raises(ValueError, match="md_scope"):
        fit(tiny_model(), data, cfg(md_scope="qk"), tmp_path)
    with pytest.raises(ValueError, match="first dimension"):
        Split((torch.zeros(3, 2),), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels in"):
        bad = Split(data.train.inputs, data.train.labels * 3)
        fit(tiny_model(), TrainData(bad, data.val), cfg(epochs=1), tmp_path, progress=False)


def test_lp_md_optimizer_trains_through_the_loop(tmp_path, data):
    pytest.importorskip("mirrorattn.optim")
    res = fit(tiny_model(), data, cfg(optimizer="lp-md:1.1", lr=3e-3, epochs=2, md_scope="attention"), tmp_path,
              progress=False)
    assert math.isfinite(res["history"][-1]["train_loss"])


def test_bf16_autocast_trains_and_keeps_float32_weights(tmp_path, data):
    model = tiny_model()
    res = fit(model, data, cfg(epochs=4, amp=True), tmp_path, progress=False)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    hist = res["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"] and res["val_acc_best"] > 0.7


# ---------------------------------------------------------------- step-size schedules


def test_lr_factor_warmup_and_cosine_closed_form():
    c = cfg(epochs=4, lr_schedule="cosine", warmup_epochs=1)
    steps = 10  # per epoch: warm-up = steps 0..9, cosine over the remaining 30
    assert [c.lr_factor(s, steps) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    for s in (10, 17, 25, 39):
        t = (s - 10) / 30
        assert c.lr_factor(s, steps) == pytest.approx(0.5 * (1 + math.cos(math.pi * t)), abs=1e-15)
    assert c.lr_factor(25, steps) == pytest.approx(0.5)
    const = cfg(epochs=4, warmup_epochs=0.5)
    assert const.lr_factor(0, steps) == pytest.approx(0.2) and const.lr_factor(5, steps) == 1.0
    assert cfg(epochs=4).lr_factor(0, steps) == 1.0
    with pytest.raises(ValueError, match="lr_schedule"):
        cfg(lr_schedule="step").validate()
    with pytest.raises(ValueError, match="warmup_epochs"):
        cfg(epochs=2, warmup_epochs=3).validate()
    # a schedule makes the number of epochs part of the identity; no schedule keeps old identities
    assert "epochs" in cfg(lr_schedule="cosine").identity()
    assert "epochs" not in cfg().identity() and "lr_schedule" not in cfg().identity()


class _Interrupt(nn.Module):
    """Raises KeyboardInterrupt at forward call ``stop`` (simulates a kill mid-epoch)."""

    def __init__(self, inner: nn.Module, stop: int) -> None:
        super().__init__()
        self.inner, self.stop, self.calls = inner, stop, 0

    def forward(self, *inputs):
        self.calls += 1
        if self.training and self.calls == self.stop:
            raise KeyboardInterrupt
        return self.inner(*inputs)

    def state_dict(self, *a, **k):
        return self.inner.state_dict(*a, **k)

    def load_state_dict(self, *a, **k):
        return self.inner.load_state_dict(*a, **k)


def test_cosine_schedule_applies_the_steps_and_resumes_exactly(tmp_path, data):
    c = cfg(epochs=3, optimizer="sgd", lr=0.05, lr_schedule="cosine", warmup_epochs=0.5)
    full = fit(tiny_model(), data, c, tmp_path / "full", progress=False)
    steps = math.ceil(len(data.train) / c.batch_size)
    # the last step of each epoch used lr * factor(its index): recorded in the history
    for r in full["history"]:
        assert r["lr_last"] == pytest.approx(0.05 * c.lr_factor(r["epoch"] * steps - 1, steps), rel=1e-12)
    assert full["history"][-1]["lr_last"] < 0.05 * 0.1
    # killed in the middle of epoch 2 (after epoch 1's checkpoint), then resumed with a fresh model
    with pytest.raises(KeyboardInterrupt):
        fit(_Interrupt(tiny_model(), stop=steps + 3 + 3), data, c, tmp_path / "part", progress=False)
    resumed = fit(tiny_model(seed=99), data, c, tmp_path / "part", resume=True, progress=False)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert full["test_acc"] == resumed["test_acc"] and full["best_epoch"] == resumed["best_epoch"]
    # the schedule changed the result (the test can fail): a constant step ends elsewhere
    fit(tiny_model(), data, cfg(epochs=3, optimizer="sgd", lr=0.05), tmp_path / "const", progress=False)
    ck = torch.load(tmp_path / "const" / "checkpoint.pt", weights_only=True)
    assert any(not torch.equal(a["model"][k], ck["model"][k]) for k in a["model"])


# ------------------------------------------------------------------ checkpoints read with weights_only=True

def _model_of(path) -> dict:
    return torch.load(path, weights_only=True)["model"]


def test_checkpoint_rng_states_round_trip_with_weights_only(tmp_path):
    import random

    from mirrorattn.train.checkpoint import load_checkpoint, save_checkpoint

    np.random.seed(3), random.seed(4), torch.manual_seed(5)
    np.random.normal()  # a cached gaussian in NumPy's state
    save_checkpoint(tmp_path / "c.pt", epoch=1)
    want = (np.random.random(4), random.random(), torch.rand(3), np.random.normal())
    np.random.seed(0), random.seed(0), torch.manual_seed(0)
    from mirrorattn.train.checkpoint import set_rng_state

    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    got = (np.random.random(4), random.random(), torch.rand(3), np.random.normal())
    assert np.array_equal(want[0], got[0]) and want[1] == got[1] and torch.equal(want[2], got[2]) and want[3] == got[3]


@pytest.mark.parametrize("damage", ["truncated checkpoint", "version-1 checkpoint", "truncated best model",
                                    "missing best model", "checkpoint of another model"])
def test_an_unreadable_checkpoint_is_one_line_and_the_run_starts_over(tmp_path, data, capsys, damage):
    c = cfg(epochs=2)
    fresh = fit(tiny_model(), data, c, tmp_path / "fresh", progress=False)
    out = tmp_path / "run"
    fit(tiny_model(), data, cfg(epochs=1), out, progress=False)
    ckpt, best = out / "checkpoint.pt", out / "best_model.pt"
    if damage == "truncated checkpoint":
        ckpt.write_bytes(ckpt.read_bytes()[:200])
    elif damage == "version-1 checkpoint":  # as written before: NumPy's RNG state pickled as a tuple with an ndarray
        old = torch.load(ckpt, weights_only=True)
        old.update(version=1, rng={**old["rng"], "numpy": np.random.get_state()})
        torch.save(old, ckpt)
    elif damage == "truncated best model":
        best.write_bytes(best.read_bytes()[:100])
    elif damage == "missing best model":
        best.unlink()
    else:
        old = torch.load(ckpt, weights_only=True)
        old["model"] = {"w": torch.zeros(2)}
        torch.save(old, ckpt)
    capsys.readouterr()
    resumed = fit(tiny_model(), data, c, out, resume=True, progress=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "starts over from epoch 1" in err[0] and str(out) in err[0], err
    assert [r["train_loss"] for r in resumed["history"]] == [r["train_loss"] for r in fresh["history"]]
    a, b = _model_of(tmp_path / "fresh" / "checkpoint.pt"), _model_of(ckpt)
    assert all(torch.equal(a[k], b[k]) for k in a) and resumed["test_acc"] == fresh["test_acc"]


def test_snapshot_schedule_log_every_none():
    from mirrorattn.train.checkpoint import snapshot_due

    log = [e for e in range(0, 101) if snapshot_due("log", e, last=False)]
    assert log == [0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96]
    assert snapshot_due("log", 37, last=True) and not snapshot_due("log", 37, last=False)
    assert all(snapshot_due("every", e, last=False) for e in range(50))
    assert not any(snapshot_due("none", e, last=True) for e in range(50))
    with pytest.raises(ValueError, match="snapshots must be one of none, log, every"):
        cfg(snapshots="all").validate()


def test_snapshots_hold_the_weights_of_their_epochs_and_survive_a_resume(tmp_path, data):
    """Epoch-0 snapshot = the initial weights; the last = the final checkpoint's; a resumed run keeps the same
    files, bit for bit; snapshots change nothing in the result or the run's identity."""
    from mirrorattn.train.checkpoint import list_snapshots, load_weights

    c5 = cfg(epochs=5, snapshots="log")
    initial = {k: v.clone() for k, v in tiny_model().state_dict().items()}
    full = fit(tiny_model(), data, c5, tmp_path / "full", progress=False)
    plain = fit(tiny_model(), data, cfg(epochs=5), tmp_path / "plain", progress=False)
    assert full["test_acc"] == plain["test_acc"] and c5.identity() == cfg(epochs=5).identity()
    kept = list_snapshots(tmp_path / "full")
    assert [e for e, _ in kept] == [0, 1, 2, 3, 4, 5]
    assert not list_snapshots(tmp_path / "plain")
    first, last = load_weights(kept[0][1]), load_weights(kept[-1][1])
    final = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(first[k], initial[k]) for k in initial)
    assert all(torch.equal(last[k], final[k]) for k in final)
    assert not all(torch.equal(first[k], last[k]) for k in final)
    fit(tiny_model(), data, cfg(epochs=2, snapshots="log"), tmp_path / "part", progress=False)
    fit(tiny_model(seed=7), data, c5, tmp_path / "part", resume=True, progress=False)
    resumed = list_snapshots(tmp_path / "part")
    assert [e for e, _ in resumed] == [0, 1, 2, 3, 4, 5]
    for (_, a), (_, b) in zip(kept, resumed):
        wa, wb = load_weights(a), load_weights(b)
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
