"""Length groups inside a batch (issue 14 item 4): the grouped forward equals the one-batch forward (logits and
every gradient, float64), padded positions change nothing, and the chosen groups are the best plan."""

from __future__ import annotations

import itertools

import pytest
import torch

import mirrorattn.models.length_groups as lg
from mirrorattn.models.layers import record_attention
from mirrorattn.models.length_groups import GroupCost, group_seconds, length_groups
from mirrorattn.models.transformer import TextTransformer, TextTransformerConfig
from mirrorattn.train import TrainConfig, TrainData, fit, seeded_init
from mirrorattn.train.fast import enable_length_groups
from mirrorattn.train.loop import Split

#: a cost under which every split pays: the forward is computed in as many groups as there are lengths (<= 8)
ALWAYS = GroupCost(token=1.0, pair=0.1, group=0.0)


def _brute_force(lengths: list[int], cost: GroupCost) -> float:
    """The least summed group time over every split of the sorted lengths into at most MAX_GROUPS runs."""
    s = sorted(lengths)
    best = group_seconds(len(s), s[-1], cost)
    for g in range(1, min(lg.MAX_GROUPS, len(s))):
        for cuts in itertools.combinations(range(1, len(s)), g):
            bounds = (0, *cuts, len(s))
            best = min(best, sum(group_seconds(b - a, s[b - 1], cost) for a, b in zip(bounds, bounds[1:])))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_length_groups_are_the_best_plan(seed):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 40, (9,), generator=g)
    cost = GroupCost(token=1.0, pair=0.05, group=float(torch.randint(0, 60, (1,), generator=g)))
    groups = length_groups(lengths, cost)
    got = group_seconds(len(lengths), int(lengths.max()), cost) if groups is None else \
        sum(group_seconds(len(idx), m, cost) for idx, m in groups)
    assert got == pytest.approx(_brute_force(lengths.tolist(), cost), rel=1e-12)
    if groups is not None:
        assert sorted(torch.cat([idx for idx, _ in groups]).tolist()) == list(range(len(lengths)))
        for idx, m in groups:
            assert int(lengths[idx].max()) == m
        assert [m for _, m in groups] == sorted(m for _, m in groups)


def test_length_groups_keep_one_batch_when_splitting_does_not_pay():
    lengths = torch.tensor([10, 12, 30, 31])
    assert length_groups(lengths, GroupCost(token=1.0, pair=0.0, group=1e9)) is None
    assert length_groups(torch.full((5,), 7), ALWAYS) is None  # one length: nothing to split
    # the quick IMDb model's estimate splits a batch with short and long reviews; a tiny model's keeps it whole
    quick = GroupCost.for_model(64, 2, 128, 1, 0.1, False)
    assert length_groups(torch.tensor([40] * 32 + [256] * 32), quick) is not None
    tiny = GroupCost.for_model(8, 2, 16, 1, 0.0, False)
    assert length_groups(torch.tensor([3] * 8 + [12] * 8), tiny) is None


def _batch(n: int = 7, T: int = 12, vocab: int = 30, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, T + 1, (n,), generator=g)
    lengths[0] = T  # one full sample: its group needs no mask
    lengths[3] = 0  # and one of padding only (as in the one-batch forward: zero attention, pooled 0)
    ids = torch.randint(4, vocab, (n, T), generator=g)
    mask = torch.arange(T)[None] < lengths[:, None]
    ids[~mask] = 0
    return ids, mask


def _model(pooling: str, attention_mask: str, num_classes: int = 2, blocks: int = 2) -> TextTransformer:
    cfg = TextTransformerConfig(vocab_size=30, max_length=12, width=8, blocks=blocks, heads=2, dropout=0.0,
                                pooling=pooling, attention_mask=attention_mask, init="torch", num_classes=num_classes)
    with seeded_init(0):
        return TextTransformer(cfg).double()


def _logits_and_grads(model: TextTransformer, ids, mask):
    model.zero_grad(set_to_none=True)
    out = model(ids, mask)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return out.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("pooling,attention_mask,num_classes", [("cls", "paper", 2), ("cls", "keys", 3),
                                                                 ("mean", "keys", 2), ("mean", "paper", 3)])
@pytest.mark.parametrize("train", [False, True])
def test_grouped_forward_equals_the_one_batch_forward(monkeypatch, pooling, attention_mask, num_classes, train):
    monkeypatch.setattr(GroupCost, "for_model", classmethod(lambda cls, *a: ALWAYS))
    model = _model(pooling, attention_mask, num_classes).train(train)
    ids, mask = _batch()
    ref, ref_grads = _logits_and_grads(model, ids, mask)
    model.group_lengths = True
    groups = model.batch_groups(ids, mask)
    assert groups is not None and len(groups) >= 3
    got, grads = _logits_and_grads(model, ids, mask)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-13)
    for k, g in ref_grads.items():
        torch.testing.assert_close(grads[k], g, rtol=1e-11, atol=1e-13, msg=k)
    # padded positions change nothing: other ids there, the same logits and gradients (but in the sample of
    # padding only, whose [CLS] output is its padded first token's)
    other, pad = ids.clone(), ~mask
    pad[3] = False
    other[pad] = torch.randint(4, 30, (int(pad.sum()),), generator=torch.Generator().manual_seed(9))
    got2, grads2 = _logits_and_grads(model, other, mask)
    torch.testing.assert_close(got2, got, rtol=1e-12, atol=1e-13)
    for k, g in grads.items():
        torch.testing.assert_close(grads2[k], g, rtol=1e-11, atol=1e-13, msg=k)


def test_grouped_forward_is_off_without_a_mask_and_while_attention_is_recorded(monkeypatch):
    monkeypatch.setattr(GroupCost, "for_model", classmethod(lambda cls, *a: ALWAYS))
    model = _model("mean", "keys").eval()
    ids, mask = _batch()
    assert model.batch_groups(ids, mask) is None  # off by default
    model.group_lengths = True
    assert model.batch_groups(ids, None) is None and model.batch_groups(ids, mask) is not None
    with torch.no_grad(), record_attention(model) as maps:
        model(ids, mask)
    assert model.batch_groups(ids, mask) is not None
    assert [tuple(m.shape) for m in maps] == [(7, 2, 12, 12)] * 2  # one map per block, the whole batch


def _task(n: int, seed: int) -> Split:
    ids, mask = _batch(n, 12, 30, seed)
    mask[3, 0], ids[3, 0] = True, 5
    return Split((ids, mask), (ids[:, 1] % 2).long())


def test_fit_with_length_groups_equals_fit_without(monkeypatch, tmp_path):
    monkeypatch.setattr(GroupCost, "for_model", classmethod(lambda cls, *a: ALWAYS))
    data = TrainData(_task(64, 1), _task(32, 2), _task(32, 3))
    models = {}
    for name, trim in (("plain", False), ("grouped", True)):
        model = _model("mean", "keys", blocks=1)
        calls = []
        original = model.batch_groups
        def spy(*a, orig=original, calls=calls):
            calls.append(orig(*a))
            return calls[-1]
        monkeypatch.setattr(model, "batch_groups", spy)
        tc = TrainConfig(optimizer="lp-md:1.1", lr=0.05, epochs=2, batch_size=16, loss_reduction="sum",
                         stop_train_acc=None, device="cpu", trim_padding=trim, sparse_embedding=False)
        fit(model, data, tc, tmp_path / name, progress=False)
        assert model.group_lengths is False  # switched back after training
        models[name] = (model, calls)
    grouped = [g is not None for g in models["grouped"][1]]
    assert not any(models["plain"][1]) and all(grouped[:10])  # 2 x 4 training batches and 2 validations grouped
    for (k, a), b in zip(models["plain"][0].state_dict().items(), models["grouped"][0].state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12, msg=k)


def test_enable_length_groups_only_in_one_process():
    model = _model("mean", "keys")
    assert enable_length_groups(model, enabled=True, world_size=2) == []
    assert enable_length_groups(model, enabled=False, world_size=1) == []
    assert enable_length_groups(model, enabled=True, world_size=1) == [model] and model.group_lengths
    assert enable_length_groups(model, enabled=True, world_size=1) == []  # already on: not switched again
