"""The text transformer: shapes, padding invariance, pooling against a hand computation."""

from __future__ import annotations

import pytest
import torch

from mirrorattn.models.layers import record_attention
from mirrorattn.models.transformer import TextTransformer, TextTransformerConfig


def tiny(**kw) -> TextTransformer:
    cfg = dict(vocab_size=50, max_length=16, width=8, blocks=2, heads=2, dropout=0.0)
    cfg.update(kw)
    torch.manual_seed(0)
    return TextTransformer(TextTransformerConfig(**cfg)).double().eval()


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 50, (3, 10), generator=g)
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[1, 6:] = False
    ids[1, 6:] = 0
    return ids, mask


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("num_classes", [2, 5])
def test_shapes_backward_and_padding_invariance(pooling, num_classes):
    model = tiny(pooling=pooling, num_classes=num_classes, bias=True)
    ids, mask = _batch()
    out = model(ids, mask)
    assert out.shape == ((3,) if num_classes == 2 else (3, num_classes))
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    # the padded sample gives the same output without its padding
    short = model(ids[1:2, :6], mask[1:2, :6])
    torch.testing.assert_close(out[1:2], short, rtol=1e-12, atol=1e-12)
    # changing the padded ids changes nothing
    ids2 = ids.clone()
    ids2[1, 6:] = 7
    torch.testing.assert_close(model(ids2, mask), out, rtol=1e-12, atol=1e-12)


def test_pooling_against_hand_computation():
    ids, mask = _batch()
    for pooling in ("cls", "mean"):
        model = tiny(pooling=pooling, bias=True)
        with torch.no_grad():
            model.head.bias.fill_(0.3)
            h = model.encode(ids, mask)
            if pooling == "cls":
                pooled = h[:, 0]
            else:
                pooled = torch.stack([h[i, mask[i]].mean(0) for i in range(3)])
            ref = pooled @ model.head.weight[0] + 0.3
            torch.testing.assert_close(model(ids, mask), ref, rtol=1e-12, atol=1e-12)


def test_no_bias_option_and_records_every_block():
    model = tiny(bias=False, blocks=3, heads=2)
    assert not any(n.endswith("bias") for n, _ in model.named_parameters())
    ids, mask = _batch()
    with torch.no_grad(), record_attention(model) as maps:
        model(ids, mask)
    assert len(maps) == 3 and maps[-1].shape == (3, 2, 10, 10)


def test_paper_config_size():
    """The paper's 3-block model: 30522*384 + 512*384 embeddings, 12 d^2 per block (Q,K,V,O,MLP 4x), 2d LN."""
    c = TextTransformerConfig()
    model = TextTransformer(c)
    d = 384
    expected = 30522 * d + 512 * d + 3 * (12 * d * d + 2 * d) + d
    assert sum(p.numel() for p in model.parameters()) == expected


def test_bad_config_is_clear():
    with pytest.raises(ValueError, match="pooling"):
        TextTransformer(TextTransformerConfig(pooling="max"))
    with pytest.raises(ValueError, match="multiple of heads"):
        TextTransformer(TextTransformerConfig(width=10, heads=3))
    model = tiny()
    with pytest.raises(ValueError, match="exceeds max_length"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_init_std_sets_the_weight_scale():
    model = tiny(init_std=0.1, vocab_size=2000)
    w = model.tok_emb.weight.detach()
    assert abs(float(w.std()) - 0.1) < 0.005  # 16,000 draws: the sample std is within ~0.6 % of 0.1
    assert torch.all(model.blocks[0].norm1.weight == 1.0)  # layer-norm gains are not drawn
    with pytest.raises(ValueError, match="init_std"):
        TextTransformer(TextTransformerConfig(init_std=0.0))
