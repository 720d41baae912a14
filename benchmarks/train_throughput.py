"""Training throughput of l_1.1-MD, SGD and Adam on the same text model, interleaved in one process.

Prints JSON: training samples per CPU-second (and per wall-second) of each optimizer on the
``quick`` preset's model and training settings (md_scope, loss reduction, gradient clipping,
batch size; :mod:`mirrorattn.experiments.text_presets`), and ``ratio_lp11_over_sgd`` = throughput
of l_1.1-MD / throughput of SGD (the issue's target: >= 0.9).

A training step is what :func:`mirrorattn.train.fit` does per batch: forward, per-sample BCE,
backward, optional gradient clipping, optimizer step. The batches are synthetic token ids of
random real lengths (half to full ``max_length``), identical for every optimizer. The
optimizers take turns in chunks of ``--chunk`` steps (rotating order, after one untimed warm-up
chunk each) so that load from other processes hits all of them alike; the figure of each
optimizer is the median over its chunks. CPU time (``time.process_time``) is the reliable figure
on a shared machine; wall time is reported beside it. Usage::

    python benchmarks/train_throughput.py [--rounds 6] [--chunk 5] [--threads 1] [--preset quick] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch

from mirrorattn.config import build_config
from mirrorattn.experiments.text import TextExperimentConfig
from mirrorattn.experiments.text_presets import PRESETS
from mirrorattn.io import to_jsonable, write_json
from mirrorattn.models.transformer import TextTransformer
from mirrorattn.train import seeded_init
from mirrorattn.train.loop import loss_and_correct
from mirrorattn.train.param_groups import build_optimizers

OPTIMIZERS = ("lp-md:1.1", "sgd", "adam")
TARGET_RATIO = 0.9


def _batches(n: int, batch: int, vocab: int, length: int, seed: int) -> list[tuple[torch.Tensor, ...]]:
    """``n`` batches (ids (B, T) int64, mask (B, T) bool, labels (B,) int64) with random real lengths."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(4, vocab, (batch, length), generator=g)
        ids[:, 0] = 2  # [CLS]
        lengths = torch.randint(length // 2, length + 1, (batch,), generator=g)
        mask = torch.arange(length)[None] < lengths[:, None]
        ids[~mask] = 0
        out.append((ids, mask, torch.randint(0, 2, (batch,), generator=g)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    ap.add_argument("--rounds", type=int, default=6, help="timed chunks per optimizer (default 6)")
    ap.add_argument("--chunk", type=int, default=5, help="training steps per chunk (default 5)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--out", default=None, help="also write the JSON to this file")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.chunk < 1 or args.threads < 1:
        ap.error("--rounds, --chunk and --threads must be positive integers")
    torch.set_num_threads(args.threads)
    cfg = build_config(TextExperimentConfig, dict(PRESETS[args.preset]), None, {"device": "cpu"})
    model_cfg = cfg.model_config(num_classes=2)
    batches = _batches(args.chunk, cfg.batch_size, cfg.vocab_size, cfg.max_length, seed=0)

    runs = {}
    for i, opt in enumerate(OPTIMIZERS):
        with seeded_init(0):
            model = TextTransformer(model_cfg).train()
        train_cfg = cfg.train_config(opt, cfg.lr_for(opt), seed=0)
        torch.manual_seed(i)
        runs[opt] = (model, build_optimizers(model, train_cfg), train_cfg)

    def chunk(opt: str) -> tuple[float, float]:
        model, optimizer, tc = runs[opt]
        c0, w0 = time.process_time(), time.perf_counter()
        for ids, mask, labels in batches:
            per_sample, _ = loss_and_correct(model(ids, mask), labels)
            loss = per_sample.sum() / (len(labels) if tc.loss_reduction == "mean" else 1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            optimizer.step()
        return time.process_time() - c0, time.perf_counter() - w0

    for opt in OPTIMIZERS:  # warm-up (allocations, any kernel compilation), untimed
        chunk(opt)
    times: dict[str, list[tuple[float, float]]] = {opt: [] for opt in OPTIMIZERS}
    for r in range(args.rounds):
        order = OPTIMIZERS[r % len(OPTIMIZERS):] + OPTIMIZERS[: r % len(OPTIMIZERS)]
        for opt in order:
            times[opt].append(chunk(opt))
    samples = args.chunk * cfg.batch_size
    cpu = {opt: statistics.median(t[0] for t in ts) for opt, ts in times.items()}
    wall = {opt: statistics.median(t[1] for t in ts) for opt, ts in times.items()}
    per_cpu = {opt: samples / cpu[opt] for opt in OPTIMIZERS}
    ratio = per_cpu["lp-md:1.1"] / per_cpu["sgd"]
    result = {
        "preset": args.preset,
        "model": {"width": cfg.width, "blocks": cfg.blocks, "heads": cfg.heads, "mlp_ratio": cfg.mlp_ratio,
                  "max_length": cfg.max_length, "vocab_size": cfg.vocab_size, "pooling": cfg.pooling,
                  "n_parameters": sum(p.numel() for p in runs["sgd"][0].parameters())},
        "training": {"md_scope": cfg.md_scope, "loss_reduction": cfg.loss_reduction, "grad_clip": cfg.grad_clip,
                     "batch_size": cfg.batch_size, "lrs": {opt: cfg.lr_for(opt) for opt in OPTIMIZERS}},
        "samples_per_chunk": samples,
        "rounds": args.rounds,
        "samples_per_cpu_second": per_cpu,
        "samples_per_wall_second": {opt: samples / wall[opt] for opt in OPTIMIZERS},
        "ratio_lp11_over_sgd": ratio,
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    text = json.dumps(to_jsonable(result), indent=1)
    print(text)
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
