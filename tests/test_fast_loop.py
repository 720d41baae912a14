"""The training loop's speed measures (issue 14 item 4): sparse embedding updates, trimmed padding,
fused QKV, length buckets - each equal to the plain computation where the arithmetic is the same."""

from __future__ import annotations

import json

import pytest
import torch

from mirrorattn.models.layers import MultiHeadSelfAttention
from mirrorattn.models.transformer import TextTransformer, TextTransformerConfig
from mirrorattn.optim import LpMirrorDescent
from mirrorattn.optim.lpmd import coalesce_rows
from mirrorattn.train import TrainConfig, TrainData, fit, seeded_init
from mirrorattn.train.fast import bucketed_batches, enable_sparse_gradients, sparse_update_is_exact
from mirrorattn.train.loop import Split
from mirrorattn.train.param_groups import build_optimizers


def _embedding_steps(sparse: bool, make_opt, steps: int = 3, dtype=torch.float64):
    """A float64 embedding (40 rows) trained a few steps on batches that touch rows 0..19 only."""
    g = torch.Generator().manual_seed(0)
    with seeded_init(0):
        emb = torch.nn.Embedding(40, 6, sparse=sparse).to(dtype)
    opt = make_opt(emb.parameters())
    for _ in range(steps):
        ids = torch.randint(0, 20, (8, 5), generator=g)  # repeats within the batch: duplicates summed
        up = torch.randn(8, 5, 6, generator=g, dtype=dtype)
        opt.zero_grad(set_to_none=True)
        (emb(ids) * up).sum().backward()
        if sparse:
            emb.weight.grad = coalesce_rows(emb.weight.grad)
        opt.step()
    return emb.weight.detach(), opt


OPTIMIZERS = {
    "lp-md:1.1": lambda ps: LpMirrorDescent(ps, lr=0.05, p=1.1),
    "lp-md:2": lambda ps: LpMirrorDescent(ps, lr=0.05, p=2.0),
    "lp-md:3": lambda ps: LpMirrorDescent(ps, lr=0.05, p=3.0),
    "lp-md:3-max": lambda ps: LpMirrorDescent(ps, lr=0.05, p=3.0, maximize=True),
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.05),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_sparse_update_equals_dense_and_leaves_untouched_rows_bit_identical(name):
    with seeded_init(0):
        w0 = torch.nn.Embedding(40, 6).to(torch.float64).weight.detach().clone()
    dense, _ = _embedding_steps(False, OPTIMIZERS[name])
    sparse, opt = _embedding_steps(True, OPTIMIZERS[name])
    torch.testing.assert_close(sparse, dense, rtol=1e-13, atol=1e-15)
    assert torch.equal(sparse[20:], w0[20:])  # rows never in a batch: not touched at all
    # the dense step rewrites them as sign(u)|u|^(1/(p-1)) of their unchanged u: w0 up to rounding (p = 2: exact)
    torch.testing.assert_close(dense[20:], w0[20:], rtol=1e-14, atol=0.0)
    if name in ("sgd", "lp-md:2"):
        assert torch.equal(sparse, dense)
    if isinstance(opt, LpMirrorDescent):
        assert opt.last_step_paths == {"sparse": 1}


def test_sparse_update_through_the_compiled_kernel_and_fallbacks():
    # a tensor above compile_min_numel takes the compiled kernel on its rows (as the dense step would)
    def make(ps):
        return LpMirrorDescent(ps, lr=0.05, p=1.1, compile_min_numel=16)
    dense, _ = _embedding_steps(False, make, dtype=torch.float32)
    sparse, _ = _embedding_steps(True, make, dtype=torch.float32)
    torch.testing.assert_close(sparse, dense, rtol=1e-6, atol=1e-7)
    # weight decay or normalisation move every row: the sparse gradient is made dense (same result)
    for kw in ({"weight_decay": 0.1}, {"normalized": True}):
        d, _ = _embedding_steps(False, lambda ps, kw=kw: LpMirrorDescent(ps, lr=0.05, p=1.5, **kw))
        s, opt = _embedding_steps(True, lambda ps, kw=kw: LpMirrorDescent(ps, lr=0.05, p=1.5, **kw))
        torch.testing.assert_close(s, d, rtol=1e-13, atol=1e-15)
        assert "sparse" not in opt.last_step_paths


def test_coalesce_rows_sums_like_the_dense_gradient():
    ids = torch.randint(0, 30, (16, 12), generator=torch.Generator().manual_seed(1))
    up = torch.randn(16, 12, 8, generator=torch.Generator().manual_seed(2))
    grads = []
    for sparse in (False, True):
        emb = torch.nn.Embedding(30, 8, sparse=sparse)
        (emb(ids) * up).sum().backward()
        g = emb.weight.grad
        grads.append(coalesce_rows(g).to_dense() if sparse else g)
    assert torch.equal(grads[0], grads[1])  # bit for bit, which Tensor.coalesce() is not


def test_sparse_only_where_the_update_is_exact():
    def model():
        with seeded_init(0):
            return TextTransformer(TextTransformerConfig(vocab_size=20, max_length=8, width=8, blocks=1, heads=2))
    for spec, ok in (("sgd", True), ("lp-md:1.1", True), ("adam", False), ("sgd:0.9", False)):
        m = model()
        opt = build_optimizers(m, TrainConfig(optimizer=spec, lr=0.1))
        assert sparse_update_is_exact(opt, m.tok_emb.weight) is ok, spec
        switched = enable_sparse_gradients(m, opt, enabled=True, world_size=1, grad_clip=None)
        assert (switched == [m.tok_emb]) is ok and m.tok_emb.sparse is ok and not m.pos_emb.sparse
    m = model()
    opt = build_optimizers(m, TrainConfig(optimizer="sgd", lr=0.1))
    assert enable_sparse_gradients(m, opt, enabled=True, world_size=2, grad_clip=None) == []  # DDP: dense
    assert enable_sparse_gradients(m, opt, enabled=True, world_size=1, grad_clip=1.0) == []  # clipping
    assert enable_sparse_gradients(m, opt, enabled=False, world_size=1, grad_clip=None) == []


def _batch(n: int = 6, T: int = 12, vocab: int = 30, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, T - 3, (n,), generator=g)  # every sample shorter than T: trimming cuts
    ids = torch.randint(4, vocab, (n, T), generator=g)
    mask = torch.arange(T)[None] < lengths[:, None]
    ids[~mask] = 0
    return ids, mask


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("attention_mask", ["paper", "keys"])
def test_trimmed_padding_gives_the_full_padding_logits(pooling, attention_mask):
    cfg = TextTransformerConfig(vocab_size=30, max_length=12, width=8, blocks=2, heads=2, dropout=0.0,
                                pooling=pooling, attention_mask=attention_mask, init="torch")
    with seeded_init(0):
        model = TextTransformer(cfg).double().eval()
    ids, mask = _batch()
    t_ids, t_mask = model.trim_padding(ids, mask)
    assert t_ids.shape[1] == int(mask.sum(1).max()) < ids.shape[1]
    torch.testing.assert_close(model(t_ids, t_mask), model(ids, mask), rtol=1e-12, atol=1e-13)
    assert TextTransformer.sequence_lengths(ids, mask).tolist() == mask.sum(1).tolist()
    full = torch.ones_like(mask)
    assert model.trim_padding(ids, full)[0].shape == ids.shape and model.trim_padding(ids)[0] is ids


def test_fused_qkv_equals_three_projections():
    for bias in (False, True):
        with seeded_init(0):
            att = MultiHeadSelfAttention(12, 3, bias=bias).double()
        x = torch.randn(4, 7, 12, dtype=torch.float64)
        q, k, v = att._qkv(x)
        for got, lin in ((q, att.q_proj), (k, att.k_proj), (v, att.v_proj)):
            torch.testing.assert_close(got, att._split(lin(x)), rtol=1e-13, atol=1e-14)
        # the gradients reach the three parameters, as with separate products
        att._qkv(x)[0].sum().backward()
        assert att.q_proj.weight.grad.abs().sum() > 0 and float(att.k_proj.weight.grad.abs().sum()) == 0.0


def _task(n: int, seed: int) -> Split:
    ids, mask = _batch(n, 12, 30, seed)
    return Split((ids, mask), (ids[:, 1] % 2).long())


@pytest.mark.parametrize("optimizer", ["sgd", "lp-md:1.1"])
def test_fit_fast_path_equals_the_old_path(tmp_path, optimizer):
    data = TrainData(_task(96, 1), _task(32, 2), _task(32, 3))
    results = {}
    for name, kw in (("old", dict(trim_padding=False, sparse_embedding=False)), ("fast", {})):
        with seeded_init(0):
            model = TextTransformer(TextTransformerConfig(vocab_size=30, max_length=12, width=8, blocks=1, heads=2,
                                                          dropout=0.0, pooling="cls", attention_mask="paper"))
        model.double()
        tc = TrainConfig(optimizer=optimizer, lr=0.05, epochs=2, batch_size=16, loss_reduction="sum",
                         stop_train_acc=None, device="cpu", **kw)
        results[name] = (fit(model, data, tc, tmp_path / name, progress=False), model)
        assert not model.tok_emb.sparse  # switched back after training
    (old, m_old), (new, m_new) = results["old"], results["fast"]
    for a, b in zip(old["history"], new["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-10)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-10)
    for (k, a), b in zip(m_old.state_dict().items(), m_new.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=k)


def test_fast_path_fields_keep_old_identities_and_length_buckets_enter_it(tmp_path):
    base = TrainConfig()
    assert not {"trim_padding", "sparse_embedding", "length_buckets"} & set(base.identity())
    assert TrainConfig(length_buckets=4).identity()["length_buckets"] == 4
    assert TrainConfig(sparse_embedding=False).identity()["sparse_embedding"] is False
    for bad in (1, -1, 2.5, True):
        with pytest.raises(ValueError, match="length_buckets"):
            TrainConfig(length_buckets=bad).validate()
    json.dumps(TrainConfig(length_buckets=4).identity())


def test_bucketed_batches_cover_every_sample_once_with_similar_lengths():
    lengths = torch.randint(1, 100, (250,), generator=torch.Generator().manual_seed(0))
    order = torch.randperm(250, generator=torch.Generator().manual_seed(1))
    batches = bucketed_batches(order, 16, lengths, 4, torch.Generator().manual_seed(2))
    assert len(batches) == 16 and sorted(torch.cat(batches).tolist()) == list(range(250))
    assert sorted(len(b) for b in batches)[1:] == [16] * 15
    spread = sum(int(lengths[b].max() - lengths[b].min()) for b in batches) / len(batches)
    plain = sum(int(lengths[b].max() - lengths[b].min()) for b in order.split(16)) / 16
    assert spread < plain / 2
