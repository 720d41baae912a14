"""Length groups inside one batch: the samples of a padded batch split by sequence length, each group padded
only to its own longest sample, so that a forward pass skips most of the padded positions.

A text batch is padded to its longest sample, so its per-token work (projections, MLP, layer norms, dropout)
grows with ``B * T`` and its attention with ``B * T^2`` although its real tokens are fewer (IMDb at length 256:
mean length 204, 42 % of the reviews full, so nearly every batch of 64 holds a full one: ``T`` stays 256,
``E[L] / T = 0.80``, ``E[L^2] / T^2 = 0.69``). Computing the model on groups of similar length costs one more
call of every layer per group; :func:`length_groups` chooses the groups that minimise an estimate of the time
(:func:`group_seconds`).

Exact: the model's outputs of a sample depend on that sample alone (no batch statistics), padded keys get
probability 0, and each group keeps every real token of its samples - so the outputs equal the full batch's up
to float rounding. Only the random draws of dropout differ (other tensor shapes draw other numbers; each mask
entry is still an independent Bernoulli draw with the same probability).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["MAX_GROUPS", "GroupCost", "group_seconds", "length_groups"]


@dataclass(frozen=True)
class GroupCost:
    """The estimate of one forward and backward pass on CPU (1 thread): seconds per token, per (query, key) pair,
    and per group (the fixed cost of calling every layer once more)."""

    token: float
    pair: float
    group: float = 1e-3  #: measured: a forward + backward of a tiny batch of the quick model takes 0.7-1.2 ms

    @classmethod
    def for_model(cls, width: int, heads: int, hidden: int, blocks: int, dropout: float,
                  first_only: bool) -> GroupCost:
        """The estimate for a transformer of ``blocks`` encoder blocks (``first_only``: the last one computes the
        first row only - keys and values of every token, no attention rows to speak of).

        Matrix products at 5e10 FLOP/s (forward + backward = 3x the forward's 2 * MACs), element-wise work at
        1 ns per element and operation, a dropout draw 10 ns: for the quick IMDb model (width 64, MLP 128, 2
        heads, dropout 0.1) 5.9 us per token and 72 ns per pair, 0.40 s for a batch of 64 x 256 - the measured
        time of that batch on this project's 2-core AMD EPYC (1 thread) was 0.41 s.
        """
        gemm, elem, draw = 5e10, 1e-9, 1e-8 if dropout > 0 else 0.0
        token = 6 * (4 * width * width + 2 * width * hidden) / gemm + 30 * width * elem
        pair = heads * (12 * (width // heads) / gemm + 25 * elem + draw)
        full = blocks - 1 if first_only else blocks
        last = 6 * 2 * width * width / gemm if first_only else 0.0  # the last block's keys and values only
        return cls(token=full * token + last, pair=full * pair)


def group_seconds(count: int, length: int, cost: GroupCost) -> float:
    """The estimated time of one group: ``count`` samples padded to ``length``."""
    return count * length * (cost.token + length * cost.pair) + cost.group


#: the most groups one batch is split into
MAX_GROUPS = 8


def length_groups(lengths: torch.Tensor, cost: GroupCost) -> list[tuple[torch.Tensor, int]] | None:
    """The groups (sample indices (n_g,) int64, padded length m_g) of a batch with sequence ``lengths`` (B,) that
    minimise the summed :func:`group_seconds` (at most :data:`MAX_GROUPS`), or None where one group (the whole
    batch) is best.

    Groups are runs of the samples sorted by length (stable: equal lengths keep their order; every sample is in
    exactly one group; m_g is the group's longest). A dynamic programme over the distinct lengths finds the best
    cut points exactly (one vectorised step per group count).
    """
    lengths = lengths.detach().cpu()
    flt = lengths.double()
    one = group_seconds(len(flt), int(flt.max()), cost)
    per_sample = float((flt * (cost.token + flt * cost.pair)).sum())  # no padding at all
    if per_sample + 2 * cost.group >= one:  # two groups or more cost at least that
        return None
    order = torch.sort(lengths, stable=True).indices
    values, counts = torch.unique_consecutive(lengths[order], return_counts=True)
    u = values.double().numpy()
    cum = np.concatenate([[0.0], np.cumsum(counts.numpy(), dtype=np.float64)])
    # seg[j, k]: one group of the samples of distinct lengths j .. k (padded to u[k]); inf where j > k
    n = len(u)
    seg = (cum[None, 1:] - cum[:-1, None]) * u[None] * (cost.token + u[None] * cost.pair) + cost.group
    seg = np.where(np.arange(n)[:, None] <= np.arange(n)[None], seg, np.inf)
    best, cuts = [seg[0]], [np.zeros(n, dtype=np.int64)]  # per group count g: least time of lengths 0..k, cuts
    for _ in range(1, min(MAX_GROUPS, n)):
        total = np.concatenate([[np.inf], best[-1][:-1]])[:, None] + seg  # total[j, k]: the last group j..k
        cuts.append(np.argmin(total, axis=0))
        best.append(total[cuts[-1], np.arange(n)])
    g = int(np.argmin([b[-1] for b in best]))  # the first of equal ones: the fewest groups
    if not best[g][-1] < one:
        return None
    groups, k = [], n - 1
    for level in range(g, -1, -1):
        j = int(cuts[level][k])
        groups.append((order[int(cum[j]) : int(cum[k + 1])], int(u[k])))
        k = j - 1
    return groups[::-1]
