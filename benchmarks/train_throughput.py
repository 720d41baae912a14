"""Training throughput of our loop against a plain PyTorch loop, and of l_1.1-MD against SGD, interleaved.

Prints JSON, per model - the model, batch size and steps of the text preset of that name
(``converge``: width 32, 1 block, 2 heads, MLP 2x, length 48, dropout 0, [CLS] pooling, init
"torch", the authors' mask, batch 100, its vocabulary unless ``--converge-vocab``; ``quick``: the
quick IMDb model, length 256, dropout 0.1, mean pooling, batch 64; both summed BCE):

- ``speedup_vs_plain_loop``: training samples per CPU-second of our loop's step with SGD (what
  :func:`mirrorattn.train.fit` does per batch: ``loop._train_step`` - padding trimmed to the
  batch's longest sequence, the batch computed in length groups (each group of samples padded to its
  own longest: :mod:`mirrorattn.models.length_groups`, switched on by ``trim_padding`` where the
  time estimate says it pays - on the quick model, up to 8 groups per batch; never on the converge
  model, whose batch is too small to gain), sparse token-embedding gradient, fused QKV, the loss
  statistics and the non-finite check; with [CLS] pooling the model's last block computes the [CLS]
  row only, the one row the output reads) over a plain PyTorch loop (the authors' style: the same
  model and batches, padded to ``max_length``, every row of every block, one call of every layer per
  batch, dense embedding gradient, ``F.binary_cross_entropy_with_logits(reduction="sum")``,
  ``torch.optim.SGD``); same model initialisation, same batches. Both compute the same outputs and
  gradients up to float rounding (``tests/test_length_groups.py``, ``tests/test_fast_loop.py``);
  dropout draws other random numbers in ours (other tensor shapes).
- ``speedup_vs_plain_loop_length_buckets``: the same with ``TrainConfig(length_buckets=8)`` batch
  composition (the same samples, grouped into batches of similar length: other batches, an opt-in;
  with length groups inside each batch it gains little more).
- ``ratio_lp11_over_sgd``: our loop with l_1.1-MD over our loop with SGD (same batches).

The fused QKV projection is part of the model, so the plain loop gets it too (it is not in the
speedup). Sequence lengths are synthetic, drawn from the measured length quantiles (every 5 %) of
sentence polarity (8k WordPiece, length 48: mean 26.8, 5.9 % full) and IMDb (16k WordPiece, length
256, 2,700 reviews: mean 204, 42 % full). The runs take turns in chunks of ``--chunk`` steps
(rotating order, after one untimed warm-up chunk each) so that load from other processes hits all
alike; each figure is the median over its chunks. CPU time (``time.process_time``) is the reliable
figure on a shared machine; wall time is reported beside it. Usage::

    python benchmarks/train_throughput.py [--models converge,quick] [--rounds 5] [--chunk 4] [--threads 1] [--out F]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from mirrorattn.config import build_config
from mirrorattn.experiments.text import TextExperimentConfig
from mirrorattn.experiments.text_presets import PRESETS
from mirrorattn.io import to_jsonable, write_json
from mirrorattn.models.transformer import TextTransformer, TextTransformerConfig
from mirrorattn.train import TrainConfig, seeded_init
from mirrorattn.train.distributed import DistInfo
from mirrorattn.train.fast import bucketed_batches, enable_length_groups, enable_sparse_gradients, input_trimmer
from mirrorattn.train.loop import Split, TrainData, _Run, _train_step
from mirrorattn.train.param_groups import build_optimizers

#: measured length quantiles (0, 5, ..., 100 %) of the real data (see the module docstring)
LENGTH_QUANTILES = {
    "converge": [2, 9, 12, 14, 16, 18, 20, 21, 23, 25, 26, 28, 29, 31, 33, 35, 37, 40, 43, 48, 48],
    "quick": [12, 86, 118, 140, 152, 160, 171, 182, 195, 208, 224, 243] + [256] * 9,
}
MODELS = ("converge", "quick")
TARGETS = {"converge": 2.0, "quick": 1.3, "ratio_lp11_over_sgd": 0.95}
BUCKETS = 8


def _samples(name: str, n: int, vocab: int, length: int, seed: int) -> tuple[torch.Tensor, ...]:
    """``n`` samples (ids (n, length) int64, mask (n, length) bool, labels (n,)) with realistic lengths."""
    g = torch.Generator().manual_seed(seed)
    q = torch.tensor(LENGTH_QUANTILES[name], dtype=torch.float64)
    pos = torch.rand(n, generator=g, dtype=torch.float64) * (len(q) - 1)
    lo = pos.floor().long().clamp(max=len(q) - 2)
    lengths = (q[lo] + (pos - lo) * (q[lo + 1] - q[lo])).round().long().clamp(2, length)
    ids = torch.randint(4, vocab, (n, length), generator=g)
    ids[:, 0] = 2  # [CLS]
    mask = torch.arange(length)[None] < lengths[:, None]
    ids[~mask] = 0
    return ids, mask, torch.randint(0, 2, (n,), generator=g)


def _plain_forward(model: TextTransformer, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The authors' forward: every block computes every token's output, then the pooling reads its rows (mean
    pooling reads them all, so there the model's own forward is that already)."""
    if model.config.pooling != "cls":
        return model(ids, mask)
    return model.head(model.encode(ids, mask)[:, 0]).squeeze(-1)


def _plain_step(model, opt, ids, mask, labels) -> None:
    """The authors' style: full padding, every row of every block, summed BCE, dense gradients, a torch optimizer."""
    loss = F.binary_cross_entropy_with_logits(_plain_forward(model, ids, mask), labels.float(), reduction="sum")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _preset(name: str, vocab_size: int | None) -> tuple[TextTransformerConfig, int, dict[str, float]]:
    """The model config, batch size and steps (l_1.1-MD, SGD) of the text preset ``name``."""
    cfg = build_config(TextExperimentConfig, dict(PRESETS[name]), None, {"device": "cpu"})
    return (cfg.model_config(num_classes=2, vocab_size=vocab_size), int(cfg.batch_size),
            {opt: cfg.lr_for(opt) for opt in ("lp-md:1.1", "sgd")})


def _runs(name: str, chunk: int, vocab_size: int | None, seed: int = 0) -> tuple[dict, int, TextTransformerConfig]:
    """Per run name, a callable doing ``chunk`` training steps; the batch size; the model config."""
    mc, batch, lrs = _preset(name, vocab_size)
    ids, mask, labels = _samples(name, chunk * batch, mc.vocab_size, mc.max_length, seed)
    order = torch.arange(chunk * batch)
    plain_batches = list(order.split(batch))
    lengths = TextTransformer.sequence_lengths(ids, mask)
    bucketed = bucketed_batches(order, batch, lengths, BUCKETS, torch.Generator().manual_seed(seed))
    data = TrainData(Split((ids, mask), labels), Split((ids[:2], mask[:2]), labels[:2]))
    runs = {}
    for run_name, opt_spec, batches in (("plain", "sgd", plain_batches), ("ours:sgd", "sgd", plain_batches),
                                        ("ours:lp-md:1.1", "lp-md:1.1", plain_batches),
                                        ("ours:sgd+length_buckets", "sgd", bucketed)):
        with seeded_init(seed):
            model = TextTransformer(mc).train()
        if run_name == "plain":
            opt = torch.optim.SGD(model.parameters(), lr=lrs["sgd"])
            runs[run_name] = _plain_chunk(model, opt, [(ids[b], mask[b], labels[b]) for b in batches])
            continue
        tc = TrainConfig(optimizer=opt_spec, lr=lrs[opt_spec], loss_reduction="sum", batch_size=batch,
                         device="cpu", length_buckets=BUCKETS if "buckets" in run_name else 0)
        optimizer = build_optimizers(model, tc)
        run = _Run(model, model, optimizer, tc, data, torch.device("cpu"), DistInfo(), None, False, [], False,
                   trim=input_trimmer(model, tc.trim_padding))
        run.sparse_params = [m.weight for m in enable_sparse_gradients(
            model, optimizer, enabled=tc.sparse_embedding, world_size=1, grad_clip=tc.grad_clip)]
        enable_length_groups(model, enabled=tc.trim_padding, world_size=1)
        runs[run_name] = _our_chunk(run, batches)
    return runs, batch, mc


def _plain_chunk(model, opt, batches):
    def chunk() -> None:
        for ids, mask, labels in batches:
            _plain_step(model, opt, ids, mask, labels)
    return chunk


def _our_chunk(run, batches):
    def chunk() -> None:
        for step, idx in enumerate(batches):
            _train_step(run, 0, step, len(batches), idx, None)
    return chunk


def measure(name: str, rounds: int, chunk: int, vocab_size: int | None = None) -> dict:
    """Interleaved timing of the runs of model ``name``; samples per CPU- and wall-second and the ratios."""
    runs, batch, mc = _runs(name, chunk, vocab_size)
    names = list(runs)
    for n in names:  # warm-up (allocations, any kernel compilation), untimed
        runs[n]()
    times: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[: r % len(names)]:
            c0, w0 = time.process_time(), time.perf_counter()
            runs[n]()
            times[n].append((time.process_time() - c0, time.perf_counter() - w0))
    samples = chunk * batch
    per_cpu = {n: samples / statistics.median(t[0] for t in ts) for n, ts in times.items()}
    per_wall = {n: samples / statistics.median(t[1] for t in ts) for n, ts in times.items()}
    speedup = per_cpu["ours:sgd"] / per_cpu["plain"]
    ratio = per_cpu["ours:lp-md:1.1"] / per_cpu["ours:sgd"]
    return {
        "model": {k: getattr(mc, k) for k in ("vocab_size", "width", "blocks", "heads", "mlp_ratio", "max_length",
                                               "dropout", "pooling", "init", "attention_mask")},
        "batch_size": batch, "lrs": _preset(name, vocab_size)[2], "samples_per_chunk": samples, "rounds": rounds,
        "samples_per_cpu_second": per_cpu, "samples_per_wall_second": per_wall,
        "speedup_vs_plain_loop": speedup,
        "speedup_vs_plain_loop_wall": per_wall["ours:sgd"] / per_wall["plain"],
        "speedup_vs_plain_loop_length_buckets": per_cpu["ours:sgd+length_buckets"] / per_cpu["plain"],
        "ratio_lp11_over_sgd": ratio,
        "target_speedup": TARGETS[name], "meets_speedup_target": speedup >= TARGETS[name],
        "meets_ratio_target": ratio >= TARGETS["ratio_lp11_over_sgd"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="converge,quick", help="comma-separated: converge, quick")
    ap.add_argument("--rounds", type=int, default=5, help="timed chunks per run (default 5)")
    ap.add_argument("--chunk", type=int, default=4, help="training steps per chunk (default 4)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--converge-vocab", type=int, default=None,
                    help="vocabulary of the converge model (default: the preset's)")
    ap.add_argument("--out", default=None, help="also write the JSON to this file")
    args = ap.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.rounds < 1 or args.chunk < 1 or args.threads < 1 or not set(models) <= set(MODELS) or not models:
        ap.error(f"--rounds, --chunk and --threads must be positive; --models from {', '.join(MODELS)}")
    torch.set_num_threads(args.threads)
    vocab = {"converge": args.converge_vocab}
    result = {"models": {m: measure(m, args.rounds, args.chunk, vocab.get(m)) for m in models},
              "length_buckets": BUCKETS, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "python": platform.python_version()}
    print(json.dumps(to_jsonable(result), indent=1))
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
