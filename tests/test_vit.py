"""The vision transformer: shapes, patch order, normalisation, [CLS] attention against a by-hand computation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mirrorattn.models.layers import record_attention
from mirrorattn.models.vit import ViT, ViTConfig


def _tiny(**kw) -> ViT:
    cfg = dict(image_size=8, channels=3, num_classes=5, patch=2, width=16, depth=2, heads=4, mlp_hidden=24, dropout=0.1)
    cfg.update(kw)
    torch.manual_seed(0)
    return ViT(ViTConfig(**cfg)).eval()


def test_forward_shapes_and_input_types() -> None:
    model = _tiny()
    x = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    logits = model(x)
    assert logits.shape == (3, 5) and logits.dtype == torch.float32
    # uint8 and the same image as float in [0, 1] give the same logits
    torch.testing.assert_close(model(x.float() / 255), logits)
    with pytest.raises(ValueError, match="expected images of shape"):
        model(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="expected images of shape"):
        model(torch.zeros(1, 1, 8, 8))


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="multiple of patch"):
        ViTConfig(image_size=10, patch=4).validate()
    with pytest.raises(ValueError, match="multiple of heads"):
        ViTConfig(width=10, heads=4).validate()
    with pytest.raises(ValueError, match="one per channel"):
        ViTConfig(channels=3, mean=(0.5,)).validate()
    with pytest.raises(ValueError, match="dropout"):
        ViTConfig(dropout=1.0).validate()


def test_patch_tokens_match_unfold_in_row_major_order() -> None:
    model = _tiny(mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 0.2))
    x = torch.rand(2, 3, 8, 8)
    tokens = model.tokens(x)  # eval: no dropout
    assert tokens.shape == (2, 1 + 16, 16)
    # independent: normalise by hand, cut 2x2 patches row by row, apply the conv as a linear map
    mean = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.25, 0.2]).view(1, 3, 1, 1)
    xn = (x - mean) / std
    patches = []
    for r in range(4):
        for c in range(4):
            patches.append(xn[:, :, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2].reshape(2, -1))  # (B, C*2*2)
    patches = torch.stack(patches, dim=1)  # (B, 16, 12)
    w = model.patch_embed.weight.reshape(16, -1)  # (width, C*p*p), same (c, i, j) order
    expected = patches @ w.T + model.patch_embed.bias + model.pos_emb[:, 1:]
    torch.testing.assert_close(tokens[:, 1:], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tokens[:, 0], (model.cls_token + model.pos_emb[:, :1]).expand(2, -1, -1)[:, 0])


def test_cls_attention_matches_a_by_hand_softmax() -> None:
    model = _tiny()
    x = torch.rand(3, 3, 8, 8)
    att = model.cls_attention(x)  # (B, H, 4, 4)
    assert att.shape == (3, 4, 4, 4)
    # by hand: run the blocks before the last one, then the last block's LN1 and q/k projections
    with torch.no_grad():
        h = model.tokens(x)
        for block in model.blocks[:-1]:
            h = block(h)
        last = model.blocks[-1]
        z = last.norm1(h)
        q = last.attn.q_proj(z).view(3, 17, 4, 4).transpose(1, 2)
        k = last.attn.k_proj(z).view(3, 17, 4, 4).transpose(1, 2)
        probs = torch.softmax(q[:, :, 0:1] @ k.transpose(-2, -1) / math.sqrt(4), dim=-1)[:, :, 0]  # (B, H, 17)
    torch.testing.assert_close(att.reshape(3, 4, 16), probs[:, :, 1:], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(att.sum((-2, -1)) + probs[:, :, 0], torch.ones(3, 4))
    first = model.cls_attention(x, layer=0)
    assert first.shape == (3, 4, 4, 4) and not torch.allclose(first, att)


def test_record_attention_hook_and_training_mode_restored() -> None:
    model = _tiny(depth=3)
    model.train()
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    with torch.no_grad(), record_attention(model) as maps:
        model.eval()
        logits = model(x)
    assert len(maps) == 3 and all(m.shape == (2, 4, 17, 17) for m in maps)
    torch.testing.assert_close(maps[-1].sum(-1), torch.ones(2, 4, 17))
    # recording does not change the output (fused path outside the context)
    torch.testing.assert_close(model(x), logits, rtol=1e-5, atol=1e-6)
    model.train()
    model.cls_attention(x)
    assert model.training


def test_gradients_reach_every_parameter_and_a_step_learns() -> None:
    model = _tiny(dropout=0.0)
    model.train()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 3, 8, 8, generator=g)
    y = torch.randint(0, 5, (20,), generator=g)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    assert F.cross_entropy(model(x), y).item() < 0.5 * loss.item()


def test_init_is_seeded() -> None:
    a, b = _tiny(), _tiny()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    torch.manual_seed(1)
    c = ViT(a.config)
    assert not torch.equal(c.pos_emb, a.pos_emb)
