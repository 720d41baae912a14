"""Token selection measured on trained transformers (issue 15): model token scores, the optimal-token share,
and the last layer's per-head key-query matrices against their l_p-AttSVM directions.

* :func:`model_token_scores` - entry (b, t) is the margin of the true class (binary: y * logit with
  y in {-1, +1}; multi-class: logit_y - max of the other logits) when the LAST layer's [CLS]-row attention
  of EVERY head is replaced by a one-hot on token t, everything else unchanged; -inf at padding (and, for
  the ViT, at the [CLS] column: its candidates are the patches). The globally optimal token is the argmax.
  For :class:`~mirrorattn.models.transformer.TextTransformer` and :class:`~mirrorattn.models.vit.ViT`,
  and for the one-layer model :class:`~mirrorattn.models.attention.OneLayerAttention` (``inputs = (X, z)``,
  where it equals :func:`mirrorattn.tokens.token_scores`).

  How it is batched: a one-hot [CLS] row changes only the [CLS] row of the last block (the other queries
  read the unchanged keys and values), so ONE forward per chunk of samples records the last block's input;
  every candidate's [CLS] attention output is then ``out_proj(v_proj(a_t))`` (all heads on t), pushed
  through the rest of the block (residual, norms, MLP: per token), the final norm, pooling and head for all
  T candidates at once (extra cost O(B T D^2), no T-fold forward).
* :func:`token_selection_metrics` - on a sample: ``optimal_token_share`` (share of samples whose
  mean-over-heads [CLS] attention argmax is the optimal token; and per head), ``optimal_token_mass``
  (attention mass on the optimal token), ``attended_token_rank`` (rank of the attended token among the
  scores, 1 = the optimal one), the chance level and the mass by score rank. :func:`split_token_selection`
  draws the fixed, seeded test sample that the runs' analyses use.
* :func:`head_matrices`, :func:`layer_attention_svm` - item 3: W_h = W_K,h^T W_Q,h / sqrt(d_head), so that
  the last layer's attention score of key t is a_t^T W_h a_0 (a = the attention layer's input states, a_0
  the [CLS] one; biases, when the model has them, add terms W_h does not hold), and per head the
  l_p-AttSVM of (a, a_0, alpha = the head's [CLS] attention argmax): cosine and directional Bregman
  divergence D_psi(W_mm, W_h) (:func:`mirrorattn.mirror.directional_bregman`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from mirrorattn.metrics import cosine_correlation
from mirrorattn.mirror import directional_bregman
from mirrorattn.models.attention import OneLayerAttention
from mirrorattn.models.layers import EncoderBlock, MultiHeadSelfAttention, record_attention

__all__ = [
    "ANALYSIS_SEED",
    "TEXT_SAMPLES",
    "VISION_SAMPLES",
    "LastLayer",
    "head_attention_svm",
    "head_matrices",
    "head_selection",
    "last_attention",
    "last_layer_states",
    "layer_inputs",
    "layer_attention_svm",
    "model_token_scores",
    "sample_indices",
    "selection_scalars",
    "solve_feasible",
    "split_token_selection",
    "token_selection_metrics",
    "true_class_margin",
]

#: seed of the test sample (the runs' other analyses draw theirs with the same seed)
ANALYSIS_SEED = 12345
#: default sample caps of the per-run metrics (text sequences / images): a few seconds on a CPU
TEXT_SAMPLES, VISION_SAMPLES = 500, 256


@dataclass
class LastLayer:
    """What one forward pass records about the last block (shapes for B samples of T tokens, width D).

    ``x``: the block's input (B, T, D); ``a``: its attention layer's input (the states the queries, keys and
    values are computed from; ``x`` itself in post-LN, ``norm1(x)`` in pre-LN); ``probs``: the [CLS] row of
    the last layer's attention (B, H, T); ``out``: the block's output (B, T, D); ``mask``: (B, T) bool.
    """

    x: torch.Tensor
    a: torch.Tensor
    probs: torch.Tensor
    out: torch.Tensor
    mask: torch.Tensor


def _kind(model: nn.Module) -> str:
    from mirrorattn.models.transformer import TextTransformer
    from mirrorattn.models.vit import ViT

    for cls, name in ((TextTransformer, "text"), (ViT, "vit"), (OneLayerAttention, "one-layer")):
        if isinstance(model, cls):
            return name
    raise ValueError(f"token scores need a TextTransformer, a ViT or a OneLayerAttention, got {type(model).__name__}")


def _last_block(model: nn.Module) -> EncoderBlock:
    block = model.blocks[-1]
    if not isinstance(block, EncoderBlock):
        raise ValueError(f"the model's last block is a {type(block).__name__}, not an EncoderBlock")
    return block


def last_attention(model: nn.Module) -> MultiHeadSelfAttention:
    """The last block's attention layer of a TextTransformer or ViT (the layer :func:`head_matrices` reads)."""
    return _last_block(model).attn


@contextmanager
def _eval(model: nn.Module) -> Iterator[None]:
    """The model in eval mode (no dropout) inside the block, its training mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def last_layer_states(model: nn.Module, inputs: torch.Tensor, mask: torch.Tensor | None = None) -> LastLayer:
    """One eval-mode forward of a TextTransformer (``inputs`` = ids) or ViT (``inputs`` = images, ``mask``
    None), recording the last block's input, attention input, [CLS] attention row and output (:class:`LastLayer`)."""
    kind = _kind(model)
    block = _last_block(model)
    seen: dict[str, torch.Tensor] = {}
    hooks = [block.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0])),
             block.attn.register_forward_pre_hook(lambda m, args: seen.__setitem__("a", args[0])),
             block.register_forward_hook(lambda m, args, out: seen.__setitem__("out", out))]
    try:
        with _eval(model), record_attention(model) as maps:
            model(inputs, mask) if kind == "text" else model(inputs)
    finally:
        for h in hooks:
            h.remove()
    x = seen["x"]
    real = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask.to(torch.bool)
    return LastLayer(x, seen["a"], maps[-1][:, :, 0, :], seen["out"], real)


def _candidate_logits(model: nn.Module, st: LastLayer) -> torch.Tensor:
    """Logits (B, T[, C]) when the last layer's [CLS] row attends (every head) to token t only."""
    block = _last_block(model)
    attn = block.attn
    o = attn.out_proj(attn.v_proj(st.a))  # (B, T, D): the [CLS] attention output of candidate t
    x0 = st.x[:, :1]
    if block.pre_norm:
        h = x0 + o
        row0 = h + block.mlp(block.norm2(h))
    else:
        h = block.norm1(x0 + o)
        row0 = block.norm2(h + block.mlp(h))
    f0 = model.final_norm(row0)
    if _kind(model) == "vit" or model.config.pooling == "cls":
        return model.head(f0)
    m = st.mask.to(f0.dtype)[..., None]  # (B, T, 1)
    rest = (model.final_norm(st.out) * m)[:, 1:].sum(dim=1, keepdim=True)  # the other tokens' outputs
    return model.head((rest + m[:, :1] * f0) / m.sum(dim=1, keepdim=True).clamp_min(1.0))


def true_class_margin(logits: torch.Tensor, labels: torch.Tensor, binary: bool) -> torch.Tensor:
    """Margin of the true class per entry: ``binary`` (one logit, last axis of size 1 or none): y * logit with
    y = 2 * label - 1; else logits (..., C): logit_y - max_{c != y} logit_c. ``labels`` (B,) broadcast over
    the axes between the batch axis and the class axis."""
    labels = labels.to(logits.device).long()
    if binary:
        lg = logits.squeeze(-1) if logits.ndim > labels.ndim + 1 or logits.shape[-1] == 1 else logits
        y = (2 * labels - 1).to(lg.dtype).view(-1, *([1] * (lg.ndim - 1)))
        return y * lg
    idx = labels.view(-1, *([1] * (logits.ndim - 1))).expand(*logits.shape[:-1], 1)
    true = logits.gather(-1, idx)
    other = logits.scatter(-1, idx, float("-inf")).amax(dim=-1, keepdim=True)
    return (true - other).squeeze(-1)


def _candidates(model: nn.Module, mask: torch.Tensor, include_cls: bool | None) -> torch.Tensor:
    """(B, T) bool: the tokens that may be selected - the real tokens, without the [CLS] column where
    ``include_cls`` is False (default: included for the text model, left out for the ViT)."""
    keep = mask.clone()
    if include_cls is None:
        include_cls = _kind(model) != "vit"
    if not include_cls:
        keep[:, 0] = False
    return keep


def _binary(model: nn.Module) -> bool:
    return _kind(model) == "text" and model.config.num_classes == 2


@torch.no_grad()
def _scores_chunk(model: nn.Module, inputs: torch.Tensor, mask: torch.Tensor | None, labels: torch.Tensor,
                  include_cls: bool | None) -> tuple[torch.Tensor, LastLayer, torch.Tensor]:
    """(scores (B, T) with -inf outside the candidates, the recorded states, candidates (B, T) bool)."""
    st = last_layer_states(model, inputs, mask)
    cand = _candidates(model, st.mask, include_cls)
    with _eval(model):  # the MLP's dropout
        margin = true_class_margin(_candidate_logits(model, st), labels, _binary(model))
    return margin.masked_fill(~cand, float("-inf")), st, cand


def _one_layer_scores(model: OneLayerAttention, X: torch.Tensor, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(S, n, T): y_i f(X_i, z_i) of every seed when the softmax is replaced by a one-hot on token t (the
    model's own forward on the candidates folded into the sample axis); y in {-1, +1}."""
    S, n, T, d = X.shape
    Xr = X.repeat_interleave(T, dim=1)  # (S, n*T, T, d): sample i's copy for candidate t at i*T + t
    onehot = torch.eye(T, dtype=X.dtype, device=X.device).repeat(n, 1).expand(S, n * T, T)
    model.attention = lambda *_: onehot  # instance attribute: shadows the method for this call only
    try:
        f = model(Xr, z.repeat_interleave(T, dim=1))
    finally:
        del model.attention
    return y.to(f.dtype)[..., None] * f.view(S, n, T)


def model_token_scores(model: nn.Module, inputs: Any, mask: torch.Tensor | None = None,
                       labels: torch.Tensor | None = None, *, include_cls: bool | None = None,
                       batch: int = 128) -> torch.Tensor:
    """Token scores of a trained model: (B, T) float, entry (b, t) the margin of the true class when the last
    layer's [CLS]-row attention of every head is a one-hot on token t (see the module docstring).

    ``inputs``: token ids (B, T) with ``mask`` (B, T) bool (TextTransformer), images (B, C, S, S) with
    ``mask`` None (ViT; T = 1 + patches), or ``(X, z)`` (S, n, T, d), (S, n, d) for a OneLayerAttention
    (``labels`` y (S, n) in {-1, +1}; result (S, n, T); ``mask`` padding as elsewhere). ``labels``: (B,)
    class indices (0/1 for a binary model). -inf at padding and outside the candidates (``include_cls``:
    whether the [CLS] token is one; default yes for text, no for the ViT). The model's dtype; on the CPU.
    ``batch`` samples per forward.
    """
    if labels is None:
        raise ValueError("model_token_scores needs the labels (the margin is that of the true class)")
    if _kind(model) == "one-layer":
        X, z = inputs
        s = _one_layer_scores(model, X, z, labels)
        return s if mask is None else s.masked_fill(~torch.as_tensor(mask, dtype=torch.bool, device=s.device),
                                                   float("-inf"))
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(inputs), batch):
        sl = slice(start, start + batch)
        m = None if mask is None else mask[sl].to(device)
        out.append(_scores_chunk(model, inputs[sl].to(device), m, labels[sl], include_cls)[0].cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


def _rank(scores: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """1 + the number of tokens scoring strictly more than token ``index`` (B,) of each row of ``scores``."""
    picked = scores.gather(-1, index[..., None])
    return 1 + (scores > picked).sum(dim=-1)


def _chunk_stats(scores: torch.Tensor, probs: torch.Tensor, cand: torch.Tensor, ranks: int) -> dict[str, Any]:
    """Per-sample selection numbers of one chunk (float64 tensors on the CPU)."""
    s, p, c = scores.double().cpu(), probs.double().cpu(), cand.cpu()
    best = s.argmax(dim=-1)  # (B,) the optimal token (first of ties)
    att = torch.cat([p.mean(dim=1, keepdim=True), p], dim=1).masked_fill(~c[:, None], float("-inf"))  # (B, 1+H, T)
    chosen = att.argmax(dim=-1)  # (B, 1+H): mean over heads, then each head
    sb = s[:, None].expand(-1, att.shape[1], -1)
    top2 = s.topk(min(2, s.shape[-1]), dim=-1).values
    order = s.argsort(dim=-1, descending=True)[:, :ranks]  # tokens by score rank
    by_rank = p.mean(dim=1).gather(-1, order)
    valid = torch.arange(order.shape[1])[None] < c.sum(-1, keepdim=True)
    return {
        "hit": (chosen == best[:, None]).double(),
        "mass": att.clamp_min(0).gather(-1, best[:, None, None].expand(-1, att.shape[1], 1))[..., 0],
        "rank": _rank(sb, chosen).double(),
        "rank_norm": (_rank(sb, chosen) - 1).double() / (c.sum(-1, keepdim=True) - 1).clamp_min(1),
        "chance": 1.0 / c.sum(-1).double(),
        "tie": (top2[:, 0] == top2[:, -1]) & (c.sum(-1) > 1),
        "by_rank": torch.where(valid, by_rank, torch.nan), "by_rank_n": valid.double(),
    }


@torch.no_grad()
def token_selection_metrics(model: nn.Module, inputs: torch.Tensor, mask: torch.Tensor | None, labels: torch.Tensor,
                            *, include_cls: bool | None = None, batch: int = 128, ranks: int = 10) -> dict[str, Any]:
    """How often the last layer's [CLS] attention selects the optimal token (:func:`model_token_scores`'s argmax).

    Over the given samples (text: ids + mask; ViT: images, mask None), each attention argmax over the
    candidates (:func:`model_token_scores`): ``optimal_token_share`` (mean-over-heads attention argmax == the
    optimal token) and ``..._per_head``; ``optimal_token_mass`` (mean-over-heads attention probability on the
    optimal token; and per head); ``attended_token_rank`` (mean rank of the attended token among the scores,
    1 = optimal; per head) and ``attended_token_rank_norm`` ((rank - 1) / (candidates - 1), 0 = optimal, 1 =
    worst); ``chance_share`` (mean of 1 / candidates: the share of a uniformly random pick);
    ``mass_by_score_rank`` (mean attention on the token of score rank r = 1 .. ``ranks``, over the samples
    having that many candidates); ``score_ties`` (samples whose two best scores are equal: the first counts as
    optimal); ``n``, ``heads``, ``candidates`` and ``seconds``.
    """
    start = time.perf_counter()
    device = next(model.parameters()).device
    parts: list[dict[str, Any]] = []
    for lo in range(0, len(inputs), batch):
        sl = slice(lo, lo + batch)
        m = None if mask is None else mask[sl].to(device)
        scores, st, cand = _scores_chunk(model, inputs[sl].to(device), m, labels[sl], include_cls)
        parts.append(_chunk_stats(scores, st.probs, cand, ranks))
    if not parts:
        raise ValueError("token_selection_metrics needs at least one sample")
    cat = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    per_head = {k: cat[k].mean(dim=0).tolist() for k in ("hit", "mass", "rank")}  # [mean over heads, head 0, ...]
    n_rank = cat["by_rank_n"].sum(dim=0)
    by_rank = torch.nan_to_num(cat["by_rank"]).sum(dim=0) / n_rank.clamp_min(1)
    include = _kind(model) != "vit" if include_cls is None else include_cls
    return {
        "n": len(cat["chance"]), "heads": len(per_head["hit"]) - 1,
        "candidates": "real tokens" + ("" if include else " except [CLS]"),
        "optimal_token_share": per_head["hit"][0], "optimal_token_share_per_head": per_head["hit"][1:],
        "optimal_token_mass": per_head["mass"][0], "optimal_token_mass_per_head": per_head["mass"][1:],
        "attended_token_rank": per_head["rank"][0], "attended_token_rank_per_head": per_head["rank"][1:],
        "attended_token_rank_norm": float(cat["rank_norm"][:, 0].mean()),
        "chance_share": float(cat["chance"].mean()),
        "mass_by_score_rank": [float(v) if c > 0 else None for v, c in zip(by_rank, n_rank)],
        "score_ties": int(cat["tie"].sum()),
        "seconds": time.perf_counter() - start,
    }


def sample_indices(n_total: int, cap: int, seed: int = ANALYSIS_SEED) -> torch.Tensor:
    """The first ``cap`` entries of a seeded permutation of range(n_total) (the runs' analysis sample)."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randperm(int(n_total), generator=gen)[: max(0, min(int(n_total), int(cap)))]


def split_token_selection(model: nn.Module, split: Any, cap: int, **options: Any) -> dict[str, Any]:
    """:func:`token_selection_metrics` on a fixed, seeded sample of at most ``cap`` items of ``split`` (a
    :class:`~mirrorattn.train.Split`: text inputs (ids, mask), vision inputs (images,)); ``options`` go to it."""
    idx = sample_indices(len(split), cap)
    inputs = split.inputs if isinstance(split.inputs, (tuple, list)) else (split.inputs,)
    mask = inputs[1][idx] if len(inputs) > 1 else None
    return token_selection_metrics(model, inputs[0][idx], mask, split.labels[idx], **options)


def selection_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The results-table numbers of :func:`token_selection_metrics`."""
    keys = ("optimal_token_share", "optimal_token_mass", "attended_token_rank", "attended_token_rank_norm")
    return {**{k: metrics[k] for k in keys}, "optimal_token_chance": metrics["chance_share"]}


# ------------------------------------------------------------------------ item 3: the layer's AttSVM
def head_matrices(attn: MultiHeadSelfAttention | OneLayerAttention) -> np.ndarray:
    """(H, D, D) float64: W_h = W_K,h^T W_Q,h / sqrt(d_head), so that head h's attention score of key state
    a_t for the query state a_q is a_t^T W_h a_q (``nn.Linear`` weights (out, in); head h owns rows
    h * d_head ... of q_proj and k_proj). A OneLayerAttention gives its W (S, d, d) (score x_t^T W z)."""
    if isinstance(attn, OneLayerAttention):
        return attn.weight().detach().double().cpu().numpy()
    H, dh = attn.heads, attn.head_dim
    wq = attn.q_proj.weight.detach().double().cpu().view(H, dh, -1)
    wk = attn.k_proj.weight.detach().double().cpu().view(H, dh, -1)
    return (wk.transpose(1, 2) @ wq / dh**0.5).numpy()


def solve_feasible(X: np.ndarray, z: np.ndarray, alpha: np.ndarray, p: float, mask: np.ndarray | None = None,
                   max_rounds: int = 5, **options: Any) -> tuple[Any, list[int]]:
    """:func:`mirrorattn.svm.attention_svm`, dropping the samples an ``InfeasibleSVMError`` names and solving
    again on the rest (at most ``max_rounds`` times). Returns (result, dropped sample indices, ascending)."""
    from mirrorattn.svm import InfeasibleSVMError, attention_svm

    keep = np.arange(len(X))
    for _ in range(max_rounds):
        try:
            m = None if mask is None else mask[keep]
            return attention_svm(X[keep], z[keep], alpha[keep], p, mask=m, **options), \
                sorted(set(range(len(X))) - set(keep.tolist()))
        except InfeasibleSVMError as exc:
            if not exc.samples:
                raise
            keep = np.delete(keep, exc.samples)
            if len(keep) == 0:
                raise
    raise InfeasibleSVMError(f"still infeasible after dropping {len(X) - len(keep)} samples in {max_rounds} rounds")


def layer_inputs(model: nn.Module, inputs: torch.Tensor, mask: torch.Tensor | None,
                  batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a (n, T, D) float64: the last attention layer's input states, probs (n, H, T): its [CLS] row, mask (n, T))."""
    device = next(model.parameters()).device
    a, probs, real = [], [], []
    for lo in range(0, len(inputs), batch):
        sl = slice(lo, lo + batch)
        st = last_layer_states(model, inputs[sl].to(device), None if mask is None else mask[sl].to(device))
        a.append(st.a.double().cpu())
        probs.append(st.probs.double().cpu())
        real.append(st.mask.cpu())
    return torch.cat(a).numpy(), torch.cat(probs).numpy(), torch.cat(real).numpy()


def head_attention_svm(X: np.ndarray, real: np.ndarray, alpha: np.ndarray, W: np.ndarray,
                       ps: tuple[float, ...], **options: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One head's l_p-AttSVMs: for every p in ``ps`` W_mm = the l_p-AttSVM of (X, z = X[:, 0], alpha)
    (:func:`solve_feasible`), compared with the head's matrix ``W``. Returns ({str(p): {"cosine",
    "directional_bregman" (D_psi(W_mm, W), l_p), "objective", "n_used", "n_dropped", "dropped" (the first 50),
    "n_constraints", "method", "solve_seconds"}}, {str(p): W_mm}). ``options`` go to the solver."""
    rows: dict[str, Any] = {}
    targets: dict[str, np.ndarray] = {}
    for p in ps:
        res, dropped = solve_feasible(X, X[:, 0], alpha, float(p), real, **options)
        key = f"{float(p):g}"
        targets[key] = res.W
        rows[key] = {
            "cosine": cosine_correlation(res.W, W), "directional_bregman": float(directional_bregman(res.W, W, p)),
            "objective": res.objective, "n_used": len(X) - len(dropped), "n_dropped": len(dropped),
            "dropped": dropped[:50], "n_constraints": res.n_constraints, "method": res.method,
            "solve_seconds": res.solve_seconds,
        }
    return rows, targets


def head_selection(probs: np.ndarray, real: np.ndarray) -> np.ndarray:
    """(n,) int: alpha = argmax over the real tokens of one head's [CLS] attention row ``probs`` (n, T)."""
    return np.where(real, probs, -np.inf).argmax(axis=-1)


def layer_attention_svm(model: nn.Module, inputs: torch.Tensor, mask: torch.Tensor | None = None, *,
                        ps: tuple[float, ...] = (1.1, 2.0, 3.0), batch: int = 128, **options: Any) -> dict[str, Any]:
    """The last layer's per-head l_p-AttSVM against its trained key-query matrix (issue 15, item 3).

    For head h: X = the last attention layer's input states (n, T, D), z = X[:, 0] (the [CLS] query state),
    W_h (:func:`head_matrices`), alpha = argmax over the real tokens of the head's [CLS] attention, and for
    every p in ``ps`` W_mm = the l_p-AttSVM of (X, z, alpha) (:func:`solve_feasible`: samples named
    infeasible are dropped). Returns {"heads": [per head {"selection_agreement": share of samples whose
    argmax_t x_t^T W_h z is alpha (1 without biases), "p": {str(p): {"cosine", "directional_bregman" (D_psi(
    W_mm, W_h), l_p), "objective", "n_used", "n_dropped", "dropped", "n_constraints", "method", "solve_seconds"}}}],
    "n", "d", "bias", "seconds"}. ``options`` go to the solver.
    """
    from mirrorattn.tokens import selected_tokens

    start = time.perf_counter()
    X, probs, real = layer_inputs(model, inputs, mask, batch)
    attn = _last_block(model).attn
    Ws = head_matrices(attn)
    z = X[:, 0]
    heads = []
    for h, W in enumerate(Ws):
        alpha = head_selection(probs[:, h], real)
        rows, _ = head_attention_svm(X, real, alpha, W, ps, **options)
        heads.append({"selection_agreement": float(np.mean(selected_tokens(X, z, W, real) == alpha)), "p": rows})
    return {"heads": heads, "n": len(X), "d": int(X.shape[-1]), "bias": attn.q_proj.bias is not None,
            "seconds": time.perf_counter() - start}
