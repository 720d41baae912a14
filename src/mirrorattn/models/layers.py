"""Transformer building blocks shared by the text classifier and the vision transformer.

* :class:`MultiHeadSelfAttention` - separate ``q_proj``, ``k_proj``, ``v_proj`` and ``out_proj``
  linear maps (the names are an interface: ``--md-scope attention`` selects the ``q_proj`` and
  ``k_proj`` weights, the weight histograms read all three), applied as one fused product with
  the stacked weights, scaled dot-product attention with a key padding mask.
* :class:`EncoderBlock` - attention + GELU MLP with residuals, post-LN (the paper's text model)
  or pre-LN (the vision transformer) by a flag.
* ``first_only`` (both forwards): compute the outputs of the first token only - the [CLS] row of a
  model that reads nothing else from its last block (:func:`first_row_only` says when that is exact).
* :func:`record_attention` - a context manager that collects every attention layer's
  probabilities (B, H, T, T) during the forward passes run inside it. Off by default: outside
  the context the layers call ``F.scaled_dot_product_attention`` (fused kernels); inside it they
  compute the same softmax explicitly so that the probabilities can be kept.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "INITS",
    "EncoderBlock",
    "MLP",
    "MultiHeadSelfAttention",
    "attention_layers",
    "first_row_only",
    "qk_parameters",
    "record_attention",
]

#: accepted values of the models' ``init`` field: "normal" (N(0, init_std)) or "torch" (PyTorch's defaults)
INITS = ("normal", "torch")


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention: softmax(Q K^T / sqrt(d_head) + mask) V, then ``out_proj``.

    Args:
        dim: model width D (a multiple of ``heads``).
        heads: number of heads H; each has width D / H.
        bias: whether the four linear maps have biases.
        dropout: dropout on the attention probabilities (training only).
        paper_mask: the authors' mask - entry (i, j) is masked where query i or key j is padding,
            except that every query may attend to the first token (a padded query attends only
            to it). Without it only padded keys are masked. Real queries see the same keys under
            both, so the real tokens' outputs are equal.

    Shapes: ``x`` (B, T, D); ``key_padding_mask`` (B, T) bool, True for a real token and False for
    padding (padded keys get probability exactly 0); output (B, T, D).
    """

    def __init__(self, dim: int, heads: int, *, bias: bool = True, dropout: float = 0.0,
                 paper_mask: bool = False) -> None:
        super().__init__()
        if dim < 1 or heads < 1 or dim % heads:
            raise ValueError(f"dim must be a positive multiple of heads, got dim={dim}, heads={heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"attention dropout must be in [0, 1), got {dropout}")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.dropout = float(dropout)
        self.paper_mask = bool(paper_mask)
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(dim, dim, bias=bias)
        self.v_proj = nn.Linear(dim, dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        #: a list to append probabilities to while :func:`record_attention` is active, else None
        self._record: list[torch.Tensor] | None = None

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v (B, H, T, Dh) from ONE matrix product with the stacked weights [Wq; Wk; Wv] (3D, D).

        The parameters stay three (``q_proj``, ``k_proj``, ``v_proj``: their names and init are an
        interface); ``torch.cat`` is differentiable, so each gets its own slice of the gradient. Each
        output entry is the same dot product as in ``self.q_proj(x)`` etc. (equal up to the GEMM's
        blocking, i.e. to float rounding).
        """
        w = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
        b = self.q_proj.bias
        if b is not None:
            b = torch.cat([b, self.k_proj.bias, self.v_proj.bias])
        q, k, v = F.linear(x, w, b).split(self.dim, dim=-1)  # split's backward is one cat (no zero-filled buffers)
        return self._split(q), self._split(k), self._split(v)

    def _first_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q of the first :data:`_FIRST_ROWS` tokens (B, H, 2, Dh), k and v of every token (B, H, T, Dh): the
        same dot products as :meth:`_qkv`'s, for the rows they keep."""
        q = F.linear(x[:, :_FIRST_ROWS].contiguous(), self.q_proj.weight, self.q_proj.bias)
        w = torch.cat([self.k_proj.weight, self.v_proj.weight])
        b = None if self.k_proj.bias is None else torch.cat([self.k_proj.bias, self.v_proj.bias])
        k, v = F.linear(x, w, b).split(self.dim, dim=-1)
        return self._split(q), self._split(k), self._split(v)

    def _mask(self, key_padding_mask: torch.Tensor | None, B: int, T: int, rows: int) -> torch.Tensor | None:
        """The boolean attention mask (B, 1, 1 or ``rows``, T) (True = attend), or None without padding."""
        if key_padding_mask is None:
            return None
        if key_padding_mask.shape != (B, T):
            got = tuple(key_padding_mask.shape)
            raise ValueError(f"key_padding_mask must have shape (B, T) = {(B, T)}, got {got}")
        real = key_padding_mask.to(torch.bool)
        if self.paper_mask:
            return _paper_mask(real)[:, :, :rows]
        return real[:, None, None, :]  # (B, 1, 1, T)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                first_only: bool = False) -> torch.Tensor:
        """(B, T, D) -> (B, T, D); with ``first_only`` the first query's output only, (B, 1, D). The probabilities
        are recorded (:func:`record_attention`) for every query, so recording ignores ``first_only``."""
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"expected input of shape (B, T, {self.dim}), got {tuple(x.shape)}")
        B, T, _ = x.shape
        first_only = first_only and self._record is None
        q, k, v = self._first_qkv(x) if first_only else self._qkv(x)
        rows = q.shape[2]
        mask = self._mask(key_padding_mask, B, T, rows)
        p_drop = self.dropout if self.training else 0.0
        if self._record is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p_drop)
        else:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, H, T, T)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            low = scores.dtype in (torch.float16, torch.bfloat16)  # softmax in float32 under AMP
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32 if low else scores.dtype).to(q.dtype)
            self._record.append(probs.detach())
            out = F.dropout(probs, p_drop, training=self.training) @ v
        if first_only:
            out, rows = out[:, :, :1], 1
        return self.out_proj(out.transpose(1, 2).reshape(B, rows, self.dim))


#: query rows ``first_only`` computes (the first is kept): PyTorch's CPU attention kernel takes another path
#: for a single query, whose rounding differs from the full block's; with two the first row is the same (bit for
#: bit on some CPUs; on others the matrix products round it one ulp apart in float32)
_FIRST_ROWS = 2


def _paper_mask(real: torch.Tensor) -> torch.Tensor:
    """The authors' mask (B, 1, T, T) from ``real`` (B, T): query and key real, or key 0."""
    both = real[:, :, None] & real[:, None, :]
    first = torch.zeros_like(both)
    first[:, :, 0] = True
    return (both | first)[:, None]


class MLP(nn.Module):
    """Linear(D, hidden) -> GELU -> dropout -> Linear(hidden, D). Shapes (..., D) -> (..., D)."""

    def __init__(self, dim: int, hidden: int, *, bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        if hidden < 1:
            raise ValueError(f"MLP hidden width must be positive, got {hidden}")
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(F.gelu(self.fc1(x))))


class EncoderBlock(nn.Module):
    """One transformer encoder block.

    post-LN (``pre_norm=False``, the paper's text model, as BERT)::

        x = LN1(x + drop(attn(x)));  x = LN2(x + drop(mlp(x)))

    pre-LN (``pre_norm=True``, the vision transformer)::

        x = x + drop(attn(LN1(x)));  x = x + drop(mlp(LN2(x)))

    Args:
        dim, heads: width and number of heads.
        mlp_hidden: hidden width of the GELU MLP (the paper: 4 * dim).
        dropout: dropout on the residual branches, inside the MLP and on attention probabilities
            (``attn_dropout`` overrides the last).
        bias: biases in every linear map and layer norm.
        pre_norm: pre-LN instead of post-LN.
        paper_mask: the authors' attention mask (:class:`MultiHeadSelfAttention`).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_hidden: int,
        *,
        dropout: float = 0.0,
        attn_dropout: float | None = None,
        bias: bool = True,
        pre_norm: bool = False,
        norm_eps: float = 1e-5,
        paper_mask: bool = False,
    ) -> None:
        super().__init__()
        self.pre_norm = bool(pre_norm)
        self.attn = MultiHeadSelfAttention(
            dim, heads, bias=bias, dropout=dropout if attn_dropout is None else attn_dropout, paper_mask=paper_mask
        )
        self.mlp = MLP(dim, mlp_hidden, bias=bias, dropout=dropout)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps, bias=bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                first_only: bool = False) -> torch.Tensor:
        """x (B, T, D), key_padding_mask (B, T) bool (True = real token) or None -> (B, T, D); with
        ``first_only`` the first token's output only, (B, 1, D) (keys and values still from every token)."""
        first_only = first_only and self.attn._record is None
        rest = x[:, :1] if first_only else x
        if self.pre_norm:
            x = rest + self.drop(self.attn(self.norm1(x), key_padding_mask, first_only))
            return x + self.drop(self.mlp(self.norm2(x)))
        x = self.norm1(rest + self.drop(self.attn(x, key_padding_mask, first_only)))
        return self.norm2(x + self.drop(self.mlp(x)))


def first_row_only(model: nn.Module, dropout: float) -> bool:
    """Whether ``model``'s last block may compute its first (the [CLS]) token's output only: exact when the
    model reads nothing else from it (the caller's [CLS] pooling) and no dropout draws random numbers for the
    other rows (so the random stream, and with it every result, stays that of the full block: ``dropout``
    0 or eval mode). While attention is recorded the block computes every row anyway (:class:`EncoderBlock`).
    The dropped rows cost about two thirds of the block."""
    return dropout == 0.0 or not model.training


def attention_layers(model: nn.Module) -> list[MultiHeadSelfAttention]:
    """Every :class:`MultiHeadSelfAttention` of ``model``, in module registration order."""
    return [m for m in model.modules() if isinstance(m, MultiHeadSelfAttention)]


def qk_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The query and key projection weights of every attention layer (the ``attention`` MD scope).

    Biases are not included (the paper's model has none; the theory is about W = K Q^T).
    """
    params: list[nn.Parameter] = []
    for layer in attention_layers(model):
        params += [layer.q_proj.weight, layer.k_proj.weight]
    return params


@contextmanager
def record_attention(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect attention probabilities of every attention layer of ``model`` during the block.

    Yields a list that receives one detached (B, H, T, T) tensor per attention layer call, in
    call order (for one forward pass of an L-block model: L tensors, block 0 first). Rows of
    padded query positions are also a distribution over real keys; padded keys get 0.
    Raises ``ValueError`` if the model has no :class:`MultiHeadSelfAttention`.

    Example::

        with torch.no_grad(), record_attention(model) as maps:
            model(ids, mask)
        cls_last = maps[-1][:, :, 0, :]  # (B, H, T): the [CLS] row of the last layer
    """
    layers = attention_layers(model)
    if not layers:
        raise ValueError("record_attention: the model has no MultiHeadSelfAttention layer")
    store: list[torch.Tensor] = []
    previous = [layer._record for layer in layers]
    for layer in layers:
        layer._record = store
    try:
        yield store
    finally:
        for layer, prev in zip(layers, previous):
            layer._record = prev
