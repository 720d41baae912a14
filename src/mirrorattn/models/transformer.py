"""The paper's encoder-only transformer text classifier (paper.md section 5.3).

token embedding + learned position embedding -> dropout -> ``blocks`` post-LN encoder blocks
(GELU MLP, padding mask) -> pooling -> linear head.

Pooling: ``"cls"`` takes the first token's output (the paper; the tokenizer puts [CLS] first),
``"mean"`` averages the outputs of the real (non-padded) tokens.

Head: ``num_classes == 2`` gives ONE logit per sample (shape (B,)), to be used with a sigmoid /
binary cross-entropy on labels {0, 1} as the paper; ``num_classes > 2`` gives C logits (B, C) for
cross-entropy. The training loop picks the loss from the output shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mirrorattn.models.layers import INITS, EncoderBlock, attention_layers, first_row_only
from mirrorattn.models.length_groups import GroupCost, group_seconds, length_groups

__all__ = ["ATTENTION_MASKS", "INITS", "TextTransformer", "TextTransformerConfig"]

#: accepted values of ``TextTransformerConfig.attention_mask``
ATTENTION_MASKS = ("keys", "paper")


@dataclass
class TextTransformerConfig:
    """Architecture of :class:`TextTransformer` (defaults: the paper's 3-block model)."""

    vocab_size: int = 30522
    max_length: int = 512  #: longest sequence (number of learned positions), [CLS] included
    width: int = 384
    blocks: int = 3
    heads: int = 3
    mlp_ratio: float = 4.0  #: MLP hidden width = round(mlp_ratio * width)
    dropout: float = 0.2
    bias: bool = False  #: biases in linear maps and layer norms (the paper: none)
    pooling: str = "cls"  #: "cls" (first token, the paper) or "mean" (masked mean over real tokens)
    num_classes: int = 2
    pre_norm: bool = False  #: post-LN as the paper unless True
    init_std: float = 0.02  #: std of the normal init of embeddings and linear weights (``init = "normal"``)
    #: "normal": N(0, init_std) embeddings and linear weights; "torch": PyTorch's defaults as the
    #: authors' model has them (embeddings N(0, 1), linear weights kaiming-uniform(a=sqrt(5)), i.e.
    #: uniform in +-1/sqrt(fan_in), biases uniform in the same bound; init_std unused)
    init: str = "normal"
    #: "keys": padded keys get probability 0 (padded queries attend to every real token); "paper": the
    #: authors' mask - (i, j) masked where query i or key j is padding, except that every query may attend
    #: to the first token. The real tokens' outputs (and so the logits) are the same under both.
    attention_mask: str = "keys"

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field."""
        for name in ("vocab_size", "max_length", "width", "blocks", "heads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TextTransformerConfig.{name} must be a positive integer, got {getattr(self, name)}")
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be a multiple of heads ({self.heads})")
        if self.pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {self.pooling!r}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be positive, got {self.mlp_ratio}")
        if not self.init_std > 0:
            raise ValueError(f"init_std must be positive, got {self.init_std}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.attention_mask not in ATTENTION_MASKS:
            raise ValueError(f"attention_mask must be one of {', '.join(ATTENTION_MASKS)}, got {self.attention_mask!r}")


class TextTransformer(nn.Module):
    """Encoder-only transformer classifier.

    ``forward(ids, mask)``: ids (B, T) int64 token ids with T <= max_length, mask (B, T) bool
    (True = real token; None = all real). Returns logits (B,) for 2 classes, else (B, C).
    """

    def __init__(self, config: TextTransformerConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.width)
        self.pos_emb = nn.Embedding(c.max_length, c.width)
        self.drop = nn.Dropout(c.dropout)
        hidden = max(1, round(c.mlp_ratio * c.width))
        self.blocks = nn.ModuleList(
            EncoderBlock(c.width, c.heads, hidden, dropout=c.dropout, bias=c.bias, pre_norm=c.pre_norm,
                         paper_mask=c.attention_mask == "paper")
            for _ in range(c.blocks)
        )
        self.final_norm = nn.LayerNorm(c.width, bias=c.bias) if c.pre_norm else nn.Identity()
        self.head = nn.Linear(c.width, 1 if c.num_classes == 2 else c.num_classes, bias=c.bias)
        #: compute each batch in groups of similar length (:mod:`~mirrorattn.models.length_groups`; exact up to
        #: float rounding, other dropout draws); off by default, switched on by the training loop
        #: (:func:`mirrorattn.train.fast.enable_length_groups`)
        self.group_lengths = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``init = "normal"``: N(0, init_std) embeddings and linear weights, zero biases, unit layer
        norms; ``init = "torch"``: every layer's own PyTorch default (``reset_parameters``).

        Uses the global torch RNG: seed it (``torch.manual_seed``) for a reproducible init.
        """
        for m in self.modules():
            if self.config.init == "torch" and isinstance(m, (nn.Linear, nn.Embedding, nn.LayerNorm)):
                m.reset_parameters()
            elif isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, self.config.init_std)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                m.reset_parameters()

    @staticmethod
    def trim_padding(ids: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """``(ids, mask)`` cut after the batch's last real token (column), for the training loop.

        Exact: positions are counted from the first column, padded keys get probability 0 under both
        attention masks, and neither pooling reads a padded token, so the logits of the trimmed batch
        equal those of the full one (up to the rounding of sums over fewer zero terms). Without a mask
        (all real) nothing is cut.
        """
        if mask is None or mask.ndim != 2 or mask.shape[1] <= 1:
            return (ids,) if mask is None else (ids, mask)
        cols = mask.any(dim=0)
        last = int(cols.shape[0] - cols.flip(0).to(torch.uint8).argmax()) if bool(cols.any()) else 1
        if last == mask.shape[1]:
            return ids, mask
        return ids[:, :last], mask[:, :last]

    @staticmethod
    def sequence_lengths(ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample length (N,) int64: the position of the last real token + 1 (for length bucketing)."""
        if mask is None:
            return torch.full((ids.shape[0],), ids.shape[1], dtype=torch.int64)
        pos = torch.arange(1, mask.shape[1] + 1, device=mask.device)
        return (mask.to(torch.bool) * pos).amax(dim=1).to(torch.int64)

    def sparse_gradient_modules(self) -> list[nn.Embedding]:
        """The embeddings whose gradient the training loop may make sparse (the token embedding: a batch
        touches few of its rows; the position embedding is small and every batch touches its rows)."""
        return [self.tok_emb]

    def encode(self, ids: torch.Tensor, mask: torch.Tensor | None = None, first_only: bool = False) -> torch.Tensor:
        """Token outputs of the last block, (B, T, width); ``first_only``: the [CLS] output only, (B, 1, width)
        (the last block computes that row alone; :func:`~mirrorattn.models.layers.first_row_only`)."""
        if ids.ndim != 2:
            raise ValueError(f"ids must have shape (B, T), got {tuple(ids.shape)}")
        T = ids.shape[1]
        if T > self.config.max_length:
            raise ValueError(f"sequence length {T} exceeds max_length {self.config.max_length}")
        pos = torch.arange(T, device=ids.device)
        x = self.drop(self.tok_emb(ids) + self.pos_emb(pos)[None])
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, mask, first_only and i == last)
        return self.final_norm(x)

    def pooled(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The pooled last-block outputs (B, width) that the head reads ([CLS] row or masked mean)."""
        cls = self.config.pooling == "cls"
        x = self.encode(ids, mask, first_only=cls and first_row_only(self, self.config.dropout))
        if cls:
            return x[:, 0]
        if mask is None:
            return x.mean(dim=1)
        m = mask.to(x.dtype)[..., None]  # (B, T, 1)
        return (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)

    def batch_groups(self, ids: torch.Tensor, mask: torch.Tensor | None) -> list[tuple[torch.Tensor, int]] | None:
        """The length groups (sample indices, padded length) :meth:`forward` computes separately, or None (one
        batch): only with ``group_lengths`` on, a mask, on the CPU (the cost estimate is a CPU's) and while no
        attention is recorded (:func:`~mirrorattn.models.layers.record_attention` keeps one map per forward)."""
        if not self.group_lengths or mask is None or ids.device.type != "cpu" or ids.ndim != 2:
            return None
        c = self.config
        cost = GroupCost.for_model(c.width, c.heads, max(1, round(c.mlp_ratio * c.width)), c.blocks,
                                   c.dropout if self.training else 0.0,
                                   c.pooling == "cls" and first_row_only(self, c.dropout))
        if group_seconds(ids.shape[0], ids.shape[1], cost) < 2 * cost.group:  # too small to gain: no more work
            return None
        groups = length_groups(self.sequence_lengths(ids, mask).clamp_min(1), cost)  # a sample of padding only: 1
        return None if groups is None or any(a._record is not None for a in attention_layers(self)) else groups

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        groups = self.batch_groups(ids, mask)
        if groups is None:
            pooled = self.pooled(ids, mask)
        else:  # each group padded to its own longest sample; a group without padding needs no mask
            parts = []
            for idx, m in groups:
                g_mask = mask[idx, :m]
                parts.append(self.pooled(ids[idx, :m], None if bool(g_mask.all()) else g_mask))
            pooled = torch.cat(parts)[torch.argsort(torch.cat([idx for idx, _ in groups]))]
        logits = self.head(pooled)
        return logits.squeeze(-1) if self.config.num_classes == 2 else logits
