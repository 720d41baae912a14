"""The models' initialisations ("normal" and the authors' "torch") and the authors' attention mask."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mirrorattn.models.layers import record_attention
from mirrorattn.models.transformer import TextTransformer, TextTransformerConfig
from mirrorattn.models.vit import ViT, ViTConfig


def _text(init: str, **kw) -> TextTransformer:
    torch.manual_seed(0)
    cfg = dict(vocab_size=3000, max_length=256, width=64, blocks=2, heads=4, dropout=0.0, init=init)
    return TextTransformer(TextTransformerConfig(**{**cfg, **kw})).requires_grad_(False)


def _uniform_ok(w: torch.Tensor, fan_in: int) -> None:
    """Entries in +-1/sqrt(fan_in) and the std of that uniform law (bound / sqrt 3) to 5 %."""
    bound = 1.0 / math.sqrt(fan_in)
    assert float(w.abs().max()) <= bound + 1e-7
    assert float(w.abs().max()) > 0.95 * bound  # it fills the interval
    assert abs(float(w.std()) / (bound / math.sqrt(3.0)) - 1.0) < 0.05


def test_text_torch_init_is_pytorch_default() -> None:
    model = _text("torch")
    for emb in (model.tok_emb.weight, model.pos_emb.weight):  # nn.Embedding: N(0, 1)
        assert abs(float(emb.std()) - 1.0) < 0.02 and abs(float(emb.mean())) < 0.02
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 2 * (4 + 2) + 1
    for m in linears:
        _uniform_ok(m.weight.detach(), m.in_features)
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            assert torch.equal(m.weight, torch.ones_like(m.weight))


def test_text_normal_init_keeps_init_std() -> None:
    model = _text("normal", init_std=0.05)
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            assert abs(float(m.weight.std()) / 0.05 - 1.0) < 0.1, m


def test_text_torch_init_biases_are_uniform_when_present() -> None:
    model = _text("torch", bias=True)
    fc1 = model.blocks[0].mlp.fc1
    bound = 1.0 / math.sqrt(fc1.in_features)
    assert float(fc1.bias.abs().max()) <= bound and float(fc1.bias.abs().max()) > 0.5 * bound


def test_vit_torch_init() -> None:
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=32, channels=3, num_classes=10, patch=4, width=128, depth=2, heads=4, mlp_hidden=256,
                    dropout=0.0, init="torch")
    model = ViT(cfg).requires_grad_(False)
    for t in (model.cls_token, model.pos_emb):
        assert abs(float(t.std()) - 1.0) < (0.1 if t.numel() < 1000 else 0.02)
    _uniform_ok(model.patch_embed.weight.detach(), 3 * 4 * 4)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            _uniform_ok(m.weight.detach(), m.in_features)
    normal = ViT(ViTConfig(**{**cfg.__dict__, "init": "normal"})).requires_grad_(False)
    assert abs(float(normal.pos_emb.std()) / 0.02 - 1.0) < 0.05


def test_bad_init_and_mask_names_are_refused() -> None:
    with pytest.raises(ValueError, match="init must be one of normal, torch"):
        TextTransformerConfig(init="xavier").validate()
    with pytest.raises(ValueError, match="attention_mask must be one of keys, paper"):
        TextTransformerConfig(attention_mask="causal").validate()
    with pytest.raises(ValueError, match="init must be one of"):
        ViTConfig(init="zeros").validate()


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_paper_mask_gives_the_same_logits(pooling: str) -> None:
    torch.manual_seed(1)
    ids = torch.randint(1, 3000, (5, 12))
    lengths = torch.tensor([12, 7, 3, 1, 9])
    mask = torch.arange(12)[None] < lengths[:, None]
    ids = ids.masked_fill(~mask, 0)
    keys = _text("torch", pooling=pooling).double().eval()
    paper = _text("torch", pooling=pooling, attention_mask="paper").double().eval()
    paper.load_state_dict(keys.state_dict())
    with torch.no_grad(), record_attention(keys) as maps_k, record_attention(paper) as maps_p:
        out_k, out_p = keys(ids, mask), paper(ids, mask)
    torch.testing.assert_close(out_p, out_k, rtol=1e-12, atol=1e-12)
    for a_k, a_p in zip(maps_k, maps_p):
        real_rows = mask[:, None, :, None].expand_as(a_k)
        torch.testing.assert_close(a_p[real_rows], a_k[real_rows], rtol=1e-12, atol=1e-12)
        padded = a_p.permute(0, 2, 1, 3)[~mask]  # (n_padded, H, T): a padded query attends only to token 0
        assert torch.equal(padded[..., 0], torch.ones_like(padded[..., 0]))
    # and an explicit, independent softmax of the first layer's [CLS] row under the paper's rule
    layer = paper.blocks[0].attn
    x = paper.tok_emb(ids) + paper.pos_emb(torch.arange(12))[None]
    q = layer.q_proj(x)[:, 0].view(5, 4, 16)
    k = layer.k_proj(x).view(5, 12, 4, 16)
    scores = torch.einsum("bhd,bthd->bht", q, k) / 4.0
    probs = torch.softmax(scores.masked_fill(~mask[:, None, :], -math.inf), dim=-1)
    torch.testing.assert_close(maps_p[0][:, :, 0, :], probs, rtol=1e-10, atol=1e-12)


def test_new_model_fields_leave_older_run_identities_unchanged() -> None:
    import dataclasses

    from mirrorattn.experiments.classification import model_identity

    old = {k: v for k, v in dataclasses.asdict(TextTransformerConfig()).items() if k not in ("init", "attention_mask")}
    assert model_identity(TextTransformerConfig()) == old  # the hash of every older run is kept
    assert model_identity(TextTransformerConfig(init="torch"))["init"] == "torch"
    assert model_identity(TextTransformerConfig(attention_mask="paper"))["attention_mask"] == "paper"
    assert "init" not in model_identity(ViTConfig()) and model_identity(ViTConfig(init="torch"))["init"] == "torch"
