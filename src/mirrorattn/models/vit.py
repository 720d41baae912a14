"""A vision transformer (ViT) classifier, as the paper's CIFAR-10 model (paper.md section 5.6).

images (B, C, S, S), uint8 0..255 or float in [0, 1] -> per-channel normalisation (buffers
``mean``/``std``) -> patch embedding (a ``patch`` x ``patch`` convolution with stride ``patch``,
i.e. a linear map of each non-overlapping patch) -> [CLS] token prepended -> learned position
embeddings -> dropout -> ``depth`` pre-LN encoder blocks (:class:`mirrorattn.models.layers.EncoderBlock`)
-> final layer norm -> linear head on the [CLS] output -> logits (B, num_classes).

Token 0 is [CLS]; tokens 1..N are the patches in row-major order (N = (S / patch)^2), so with
:func:`mirrorattn.models.layers.record_attention` the [CLS] row of a layer's map, ``maps[l][:, :, 0, 1:]``,
reshapes to (B, H, S / patch, S / patch): :meth:`ViT.cls_attention` does that.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mirrorattn.models.layers import INITS, EncoderBlock, first_row_only, record_attention

__all__ = ["ViT", "ViTConfig"]


@dataclass
class ViTConfig:
    """Architecture of :class:`ViT` (defaults: the paper's CIFAR-10 model at 48 x 48 pixels)."""

    image_size: int = 48  #: input side S in pixels (images must be S x S)
    channels: int = 3
    num_classes: int = 10
    patch: int = 4  #: patch side in pixels; S must be a multiple
    width: int = 512
    depth: int = 6  #: number of encoder blocks
    heads: int = 8
    mlp_hidden: int = 512  #: hidden width of each block's GELU MLP
    dropout: float = 0.1  #: on embeddings, residual branches, MLP and attention probabilities
    bias: bool = True
    init_std: float = 0.02  #: std of the normal init of linear/conv weights, [CLS] and positions (``init = "normal"``)
    #: "normal": N(0, init_std) weights, [CLS] and positions, zero biases; "torch": PyTorch's defaults as the
    #: authors' ViT has them (linear/conv kaiming-uniform(a=sqrt(5)) weights and uniform biases, [CLS] token
    #: and position embedding N(0, 1))
    init: str = "normal"
    mean: tuple[float, ...] = ()  #: per-channel mean in [0, 1] units (empty: 0.5 for every channel)
    std: tuple[float, ...] = ()  #: per-channel std in [0, 1] units (empty: 0.5 for every channel)

    @property
    def grid(self) -> int:
        """Patches per side, S / patch."""
        return self.image_size // self.patch

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field."""
        for name in ("image_size", "channels", "num_classes", "patch", "width", "depth", "heads", "mlp_hidden"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ViTConfig.{name} must be a positive integer, got {getattr(self, name)}")
        if self.image_size % self.patch:
            raise ValueError(f"image_size ({self.image_size}) must be a multiple of patch ({self.patch})")
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be a multiple of heads ({self.heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.init_std > 0:
            raise ValueError(f"ViTConfig.init_std must be positive, got {self.init_std}")
        for name in ("mean", "std"):
            val = getattr(self, name)
            if val and len(val) != self.channels:
                raise ValueError(f"ViTConfig.{name} needs {self.channels} values (one per channel), got {len(val)}")
        if self.std and min(self.std) <= 0:
            raise ValueError(f"ViTConfig.std must be positive, got {self.std}")
        if self.init not in INITS:
            raise ValueError(f"ViTConfig.init must be one of {', '.join(INITS)}, got {self.init!r}")


class ViT(nn.Module):
    """Vision transformer classifier; ``forward(images)`` -> logits (B, num_classes).

    ``images``: (B, C, S, S) uint8 (0..255) or floating point (already scaled to [0, 1]).
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        config.validate()
        self.config = c = config
        mean = c.mean or (0.5,) * c.channels
        std = c.std or (0.5,) * c.channels
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.patch_embed = nn.Conv2d(c.channels, c.width, kernel_size=c.patch, stride=c.patch, bias=c.bias)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.width))
        self.pos_emb = nn.Parameter(torch.zeros(1, 1 + c.grid**2, c.width))
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            EncoderBlock(c.width, c.heads, c.mlp_hidden, dropout=c.dropout, bias=c.bias, pre_norm=True)
            for _ in range(c.depth)
        )
        self.final_norm = nn.LayerNorm(c.width, bias=c.bias)
        self.head = nn.Linear(c.width, c.num_classes, bias=c.bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``init = "normal"``: N(0, init_std) for linear/conv weights, [CLS] and positions, zero biases,
        unit layer norms; ``init = "torch"``: the layers' PyTorch defaults, [CLS] and positions N(0, 1).

        Uses the global torch RNG: seed it (``torch.manual_seed``) for a reproducible init.
        """
        if self.config.init == "torch":
            for m in self.modules():
                if isinstance(m, (nn.Linear, nn.Conv2d, nn.LayerNorm)):
                    m.reset_parameters()
            nn.init.normal_(self.cls_token, 0.0, 1.0)
            nn.init.normal_(self.pos_emb, 0.0, 1.0)
            return
        s = self.config.init_std
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.normal_(m.weight, 0.0, s)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                m.reset_parameters()
        nn.init.normal_(self.cls_token, 0.0, s)
        nn.init.normal_(self.pos_emb, 0.0, s)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] float images (B, C, S, S) -> normalised float32 (B, C, S, S)."""
        c = self.config
        if images.ndim != 4 or images.shape[1] != c.channels or images.shape[2:] != (c.image_size, c.image_size):
            raise ValueError(
                f"expected images of shape (B, {c.channels}, {c.image_size}, {c.image_size}), got {tuple(images.shape)}"
            )
        x = images.float() / 255.0 if not images.is_floating_point() else images.float()
        return (x - self.mean) / self.std

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Embedded tokens before the blocks, (B, 1 + N, width): [CLS] then the N patches row by row."""
        x = self.patch_embed(self.normalize(images))  # (B, width, G, G)
        x = x.flatten(2).transpose(1, 2)  # (B, N, width), row-major patches
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return self.drop(torch.cat([cls, x], dim=1) + self.pos_emb)

    def encode(self, images: torch.Tensor, first_only: bool = False) -> torch.Tensor:
        """Token outputs of the last block after the final layer norm, (B, 1 + N, width); ``first_only``: the
        [CLS] output only, (B, 1, width) (:func:`~mirrorattn.models.layers.first_row_only`)."""
        x = self.tokens(images)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, None, first_only and i == last)
        return self.final_norm(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(images, first_only=first_row_only(self, self.config.dropout))[:, 0])

    @torch.no_grad()
    def cls_attention(self, images: torch.Tensor, layer: int = -1) -> torch.Tensor:
        """Attention of the [CLS] query over the patches, (B, heads, G, G), in eval mode.

        Rows sum to 1 together with the [CLS] key's own share (``1 - result.sum((-2, -1))``).
        ``layer`` indexes the blocks (-1: the last).
        """
        was_training = self.training
        self.eval()
        try:
            with record_attention(self) as maps:
                self(images)
        finally:
            self.train(was_training)
        probs = maps[layer]  # (B, H, T, T)
        g = self.config.grid
        return probs[:, :, 0, 1:].reshape(probs.shape[0], probs.shape[1], g, g)
