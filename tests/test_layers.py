"""Attention layer, encoder blocks and the attention recorder against a NumPy float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mirrorattn.models.layers import (
    EncoderBlock,
    MultiHeadSelfAttention,
    attention_layers,
    qk_parameters,
    record_attention,
)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def numpy_attention(x: np.ndarray, layer: MultiHeadSelfAttention, mask: np.ndarray | None):
    """Independent float64 multi-head attention: returns (output (B,T,D), probs (B,H,T,T))."""
    B, T, D = x.shape
    H, Dh = layer.heads, layer.head_dim

    def lin(m, a):
        out = a @ _np(m.weight).T
        return out + _np(m.bias) if m.bias is not None else out

    def split(a):
        return a.reshape(B, T, H, Dh).transpose(0, 2, 1, 3)

    q, k, v = split(lin(layer.q_proj, x)), split(lin(layer.k_proj, x)), split(lin(layer.v_proj, x))
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(Dh)
    if mask is not None:
        s = np.where(mask[:, None, None, :], s, -np.inf)
    s = s - s.max(-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(-1, keepdims=True)
    o = (p @ v).transpose(0, 2, 1, 3).reshape(B, T, D)
    return lin(layer.out_proj, o), p


@pytest.fixture()
def batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 12, generator=g, dtype=torch.float64)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2, 2:] = False
    return x, mask


@pytest.mark.parametrize("bias", [True, False])
def test_attention_matches_numpy_reference_and_recording_path(batch, bias):
    x, mask = batch
    torch.manual_seed(1)
    layer = MultiHeadSelfAttention(12, 3, bias=bias).double().eval()
    ref_out, ref_p = numpy_attention(_np(x), layer, _np(mask).astype(bool))
    fused = layer(x, mask)  # F.scaled_dot_product_attention path
    with record_attention(layer) as maps:
        explicit = layer(x, mask)
    np.testing.assert_allclose(_np(fused), ref_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(_np(explicit), ref_out, rtol=1e-10, atol=1e-12)
    assert len(maps) == 1 and maps[0].shape == (3, 3, 7, 7)
    np.testing.assert_allclose(_np(maps[0]), ref_p, rtol=1e-10, atol=1e-14)


def test_padded_keys_get_zero_probability_and_padding_does_not_change_real_outputs(batch):
    x, mask = batch
    layer = MultiHeadSelfAttention(12, 4).double().eval()
    with record_attention(layer) as maps:
        out = layer(x, mask)
    p = maps[0]
    assert torch.all(p[2, :, :, 2:] == 0) and torch.all(p[1, :, :, 4:] == 0)
    torch.testing.assert_close(p.sum(-1), torch.ones_like(p.sum(-1)))
    # the real tokens of sample 2 give the same output when the padding is cut off
    short = layer(x[2:3, :2], mask[2:3, :2])
    torch.testing.assert_close(out[2:3, :2], short, rtol=1e-12, atol=1e-12)


def test_recorder_is_off_by_default_restored_after_and_collects_every_layer(batch):
    x, mask = batch
    model = torch.nn.ModuleList(EncoderBlock(12, 3, 24) for _ in range(3)).double().eval()

    def run(h):
        for blk in model:
            h = blk(h, mask)
        return h

    assert all(layer._record is None for layer in attention_layers(model))
    out_plain = run(x)
    with record_attention(model) as maps:
        out_rec = run(x)
        run(x)
    assert all(layer._record is None for layer in attention_layers(model))
    assert len(maps) == 6 and all(m.shape == (3, 3, 7, 7) and not m.requires_grad for m in maps)
    torch.testing.assert_close(out_plain, out_rec, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="no MultiHeadSelfAttention"):
        with record_attention(torch.nn.Linear(2, 2)):
            pass


@pytest.mark.parametrize("pre_norm", [False, True])
def test_encoder_block_matches_formula(batch, pre_norm):
    x, mask = batch
    torch.manual_seed(2)
    blk = EncoderBlock(12, 3, 20, bias=True, pre_norm=pre_norm).double().eval()
    with torch.no_grad():
        for ln in (blk.norm1, blk.norm2):
            ln.weight.uniform_(0.5, 1.5)
            ln.bias.uniform_(-0.5, 0.5)
    xn = _np(x)
    m = _np(mask).astype(bool)

    def ln(mod, a):
        mu = a.mean(-1, keepdims=True)
        var = a.var(-1, keepdims=True)
        return (a - mu) / np.sqrt(var + mod.eps) * _np(mod.weight) + _np(mod.bias)

    def mlp(a):
        h = a @ _np(blk.mlp.fc1.weight).T + _np(blk.mlp.fc1.bias)
        from scipy.special import erf

        h = 0.5 * h * (1 + erf(h / np.sqrt(2)))  # exact GELU
        return h @ _np(blk.mlp.fc2.weight).T + _np(blk.mlp.fc2.bias)

    if pre_norm:
        h = xn + numpy_attention(ln(blk.norm1, xn), blk.attn, m)[0]
        ref = h + mlp(ln(blk.norm2, h))
    else:
        h = ln(blk.norm1, xn + numpy_attention(xn, blk.attn, m)[0])
        ref = ln(blk.norm2, h + mlp(h))
    np.testing.assert_allclose(_np(blk(x, mask)), ref, rtol=1e-9, atol=1e-10)


def test_qk_parameters_selects_query_and_key_weights_only():
    model = torch.nn.Sequential(EncoderBlock(8, 2, 16), EncoderBlock(8, 2, 16))
    got = {id(p) for p in qk_parameters(model)}
    names = {n for n, p in model.named_parameters() if id(p) in got}
    assert names == {f"{i}.attn.{w}_proj.weight" for i in (0, 1) for w in ("q", "k")}


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="multiple of heads"):
        MultiHeadSelfAttention(10, 3)
    layer = MultiHeadSelfAttention(8, 2)
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape"):
        layer(torch.zeros(2, 3, 8), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="expected input of shape"):
        layer(torch.zeros(2, 3, 7))


def test_attention_gradients_match_finite_differences():
    torch.manual_seed(3)
    layer = MultiHeadSelfAttention(6, 2).double()
    x = torch.randn(2, 4, 6, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda a: layer(a, mask), (x,))
    with record_attention(layer):
        assert torch.autograd.gradcheck(lambda a: layer(a, mask), (x,))


def _text(blocks: int, mask_kind: str, dropout: float = 0.0, dtype=torch.float32):
    from mirrorattn.models.transformer import TextTransformer, TextTransformerConfig

    torch.manual_seed(0)
    cfg = TextTransformerConfig(vocab_size=50, max_length=12, width=16, blocks=blocks, heads=2, mlp_ratio=2.0,
                                dropout=dropout, init="torch", attention_mask=mask_kind)
    model = TextTransformer(cfg).to(dtype)
    ids = torch.randint(4, 50, (7, 12))
    mask = torch.arange(12)[None] < torch.tensor([12, 3, 7, 1, 12, 5, 9])[:, None]
    return model, ids, mask


def _full_forward(model, ids, mask):
    """The authors' forward: every row of every block, then the [CLS] row."""
    return model.head(model.encode(ids, mask)[:, 0]).squeeze(-1)


@pytest.mark.parametrize("mask_kind", ["keys", "paper"])
@pytest.mark.parametrize("blocks", [1, 2])
def test_cls_pooling_computes_the_last_block_for_the_cls_row_only_with_the_same_result(mask_kind, blocks):
    model, ids, mask = _text(blocks, mask_kind, dtype=torch.float64)
    calls = []
    hook = model.blocks[-1].mlp.register_forward_hook(lambda m, a, out: calls.append(tuple(out.shape)))
    fast = model(ids, mask)
    hook.remove()
    assert calls == [(7, 1, 16)]  # the last block's MLP ran on the [CLS] row alone
    full = _full_forward(model, ids, mask)
    torch.testing.assert_close(fast, full, rtol=1e-13, atol=1e-13)
    g_fast = torch.autograd.grad(fast.sum(), list(model.parameters()))
    g_full = torch.autograd.grad(full.sum(), list(model.parameters()))
    for a, b in zip(g_fast, g_full):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)


def test_cls_row_only_forward_is_the_full_one_in_float32_to_rounding():
    """In float32 the [CLS]-row forward equals the full one to rounding: bit for bit on some CPUs, one ulp apart
    on others (the matrix-product kernels block a 2-row query differently from a 12-row one)."""
    model, ids, mask = _text(1, "paper")
    fast, full = model(ids, mask), _full_forward(model, ids, mask)
    torch.testing.assert_close(fast, full, rtol=4 * 2.0 ** -23, atol=4 * 2.0 ** -23)


def test_dropout_in_training_keeps_the_full_block_and_its_random_stream():
    model, ids, mask = _text(1, "keys", dropout=0.3)
    model.train()
    torch.manual_seed(5)
    got = model(ids, mask)
    torch.manual_seed(5)
    assert torch.equal(got, _full_forward(model, ids, mask))


def test_recording_attention_keeps_every_query_row():
    model, ids, mask = _text(2, "keys")
    with torch.no_grad(), record_attention(model) as maps:
        out = model(ids, mask)
    assert [tuple(m.shape) for m in maps] == [(7, 2, 12, 12)] * 2
    torch.testing.assert_close(out, _full_forward(model, ids, mask))


def test_vit_cls_row_only_equals_the_full_last_block():
    from mirrorattn.models.vit import ViT, ViTConfig

    torch.manual_seed(0)
    vit = ViT(ViTConfig(image_size=8, patch=4, width=16, depth=2, heads=2, mlp_hidden=32, dropout=0.0,
                        init="torch", num_classes=3)).double()
    images = torch.rand(5, 3, 8, 8, dtype=torch.float64)
    full = vit.head(vit.encode(images)[:, 0])
    torch.testing.assert_close(vit(images), full, rtol=1e-13, atol=1e-13)
