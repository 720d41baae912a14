"""Text experiment: analysis metrics against hand computations, the probe, the CLI end to end."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from mirrorattn.config import flat_fields
from mirrorattn.experiments.run_analysis import cls_row_metrics, hoyer, weight_stats
from mirrorattn.experiments.text_analysis import load_probe_sentences, probe_attention
from mirrorattn.models.transformer import TextTransformer, TextTransformerConfig


def test_cls_row_metrics_by_hand():
    probs = torch.tensor([[[0.5, 0.25, 0.25, 0.0], [0.7, 0.1, 0.1, 0.1]]])  # (B=1, H=2, T=4)
    mask = torch.tensor([[True, True, True, False]])
    m = cls_row_metrics(probs, mask, k=2)
    ent0 = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    ent1 = -(0.7 * math.log(0.7) + 2 * 0.1 * math.log(0.1))  # the padded 0.1 is not counted
    torch.testing.assert_close(m["entropy"], torch.tensor([[ent0, ent1]], dtype=torch.float64))
    torch.testing.assert_close(m["entropy_norm"], torch.tensor([[ent0, ent1]], dtype=torch.float64) / math.log(3))
    torch.testing.assert_close(m["max_prob"], torch.tensor([[0.5, 0.7]], dtype=torch.float64))
    torch.testing.assert_close(m["topk_mass"], torch.tensor([[0.75, 0.8]], dtype=torch.float64))


def test_hoyer_and_weight_counts():
    assert hoyer(np.array([0.0, 0.0, 3.0, 0.0])) == pytest.approx(1.0)
    assert hoyer(np.array([1.0, -1.0, 1.0, -1.0])) == pytest.approx(0.0, abs=1e-15)
    w = np.array([0.0, 1.0, 2.0])
    assert hoyer(w) == pytest.approx((math.sqrt(3) - 3 / math.sqrt(5)) / (math.sqrt(3) - 1))
    assert hoyer(np.zeros(5)) == 0.0 and hoyer(torch.tensor([2.0])) == 0.0  # undefined -> 0, no failure
    torch.manual_seed(0)
    model = TextTransformer(TextTransformerConfig(vocab_size=10, max_length=4, width=8, blocks=2, heads=2))
    stats, hists = weight_stats(model, threshold=0.03)
    q = torch.cat([b.attn.q_proj.weight.detach().ravel() for b in model.blocks]).numpy()
    assert stats["q"]["count_above"] == int((np.abs(q) > 0.03).sum()) and stats["q"]["size"] == 128
    assert stats["q"]["fraction_above"] == pytest.approx((np.abs(q) > 0.03).mean())
    assert hists["v"].sum() == 128


def test_probe_sentences_resource():
    rows = load_probe_sentences()
    assert len(rows) >= 50
    assert {r["label"] for r in rows} == {"pos", "neg"}


def test_probe_scores_a_model_built_to_attend_to_one_word():
    from mirrorattn.data.text import CLS_ID, build_tokenizer

    tok = build_tokenizer(["the film was great", "the film was bad", "great fun"] * 3, vocab_size=60,
                          min_frequency=1, use_cache=False)
    great = tok.token_to_id("great")
    cfg = TextTransformerConfig(vocab_size=tok.get_vocab_size(), max_length=16, width=4, blocks=1, heads=1,
                                dropout=0.0, bias=False)
    model = TextTransformer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.tok_emb.weight[CLS_ID, 0] = 1.0
        model.tok_emb.weight[great, 1] = 1.0
        model.blocks[0].attn.q_proj.weight[0, 0] = 5.0  # q(CLS) = 5 e0
        model.blocks[0].attn.k_proj.weight[0, 1] = 1.0  # k(great) = e0, every other key 0
    rows = [{"sentence": "the film was great", "word": "great", "label": "pos"},
            {"sentence": "Great fun", "word": "great", "label": "pos"},
            {"sentence": "the film was bad", "word": "film", "label": "neg"}]
    res = probe_attention(model, tok, rows)
    assert [it["score"] for it in res["items"]] == [1.0, 1.0, 0.0]  # third: uniform attention -> all 0
    assert res["items"][0]["other"] == 0.0 and res["rank1"] == pytest.approx(1.0)
    assert res["score"] == pytest.approx(2 / 3)


def _args(**kw) -> argparse.Namespace:
    from mirrorattn.experiments.text_cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    argv = ["text", "--out", "x"] + [a for k, v in kw.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    return parser.parse_args(argv)


def test_config_overrides_and_per_optimizer_steps(tmp_path):
    from mirrorattn.experiments.text_cli import build_text_config

    cfg = build_text_config(_args(width=32, epochs=1, grad_clip="none", lr="lp-md:1.1=3e-3,adam=1e-3"))
    assert cfg.width == 32 and cfg.epochs == 1 and cfg.grad_clip is None
    assert cfg.lr_for("lp-md:1.1") == 3e-3 and cfg.lr_for("adam") == 1e-3
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"lrs": {"sgd": 0.05}}))
    args = _args(lr_from=sweep, optimizers="sgd,adam")
    assert build_text_config(args).lr_for("sgd") == 0.05
    cfg = build_text_config(_args(lr="0.02"))
    assert cfg.lr_for("adam") == 0.02 and cfg.lrs == {}
    with pytest.raises(ValueError, match="OPT=STEP"):
        build_text_config(_args(lr="fast"))
    with pytest.raises(ValueError, match="pooling"):
        build_text_config(_args(pooling="max"))
    # per-optimizer sweep grids of the preset; --sweep-lrs replaces them all
    quick = build_text_config(_args())
    assert quick.sweep_grid("lp-md:3") != quick.sweep_grid("sgd") and quick.sweep_grid("sgd") == quick.sweep_lrs
    assert quick.md_scope == "all" and quick.loss_reduction == "sum"
    cfg = build_text_config(_args(sweep_lrs="1e-3,1e-2"))
    assert cfg.sweep_grid("lp-md:3") == cfg.sweep_grid("adam") == (1e-3, 1e-2)
    with pytest.raises(ValueError, match="--sweep-lrs"):
        build_text_config(_args(sweep_lrs="1e-3,fast"))


@pytest.mark.slow
def test_text_cli_end_to_end_on_polarity(tmp_path, shared_data, cache, monkeypatch):
    from mirrorattn.cli import main

    monkeypatch.setenv("MIRRORATTN_DATA", str(shared_data))
    out = tmp_path / "out"
    common = ["--dataset", "polarity", "--preset", "quick", "--max-train", "400", "--max-test", "200",
              "--max-length", "32", "--vocab-size", "1500", "--width", "16", "--epochs", "2",
              "--analysis-samples", "100", "--no-progress"]
    assert main(["text-sweep", *common, "--optimizers", "lp-md:1.1,adam", "--sweep-lrs", "1e-3,1e-1",
                 "--sweep-max-train", "400", "--workers", "2", "--out", str(tmp_path / "sweep")]) == 0
    sweep = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert set(sweep["lrs"]) == {"lp-md:1.1", "adam"} and (tmp_path / "sweep" / "sweep.png").is_file()
    for opt, row in sweep["sweep"].items():
        chosen = [r for r in row["grid"] if r["lr"] == sweep["lrs"][opt]]
        assert len(chosen) == 1 and chosen[0]["val_acc_best"] == max(r["val_acc_best"] for r in row["grid"])
        assert isinstance(row["warnings"], list)
    assert sweep["n_val"] == 40 and 0.5 <= sweep["chance"] <= 1
    # the parallel sweep (2 worker processes) found what a sequential run finds: rerun one point in-process
    from mirrorattn.experiments.sweep import sweep_point
    from mirrorattn.experiments.text import SWEEP, TextExperimentConfig, prepare_text_data

    fields = flat_fields(TextExperimentConfig)  # the saved config is flat: the training fields too
    cfg = TextExperimentConfig(**{k: v for k, v in sweep["config"].items() if k in fields})
    cfg.lrs, cfg.sweep_grids = {}, {}
    cfg.optimizers, cfg.sweep_lrs = tuple(cfg.optimizers), tuple(cfg.sweep_lrs)
    prepared = prepare_text_data(cfg, max_train=cfg.sweep_max_train)
    prepared.data.test = None
    row = sweep_point(SWEEP, cfg, prepared, "adam", 0.1, tmp_path / "seq", progress=False)
    assert row["val_acc_best"] == [r for r in sweep["sweep"]["adam"]["grid"] if r["lr"] == 0.1][0]["val_acc_best"]
    argv = ["text", *common, "--optimizers", "lp-md:1.1,adam", "--seeds", "1", "--lr-from",
            str(tmp_path / "sweep" / "sweep.json"), "--out", str(out)]
    assert main(argv) == 0
    for name in ("results.json", "results.md", "curves.png", "qkv_hist.png", "attention_maps.png"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "runs" / "adam-seed0" / "summary.json").read_text())
    assert summary["lr"] == sweep["lrs"]["adam"]
    for key in ("test_acc", "test_acc_last", "val_acc_best"):
        assert 0.0 <= summary[key] <= 1.0
    assert summary["best_epoch"] in (1, 2) and summary["epochs_run"] == 2 and summary["samples_per_second"] > 0
    assert 0 <= summary["analysis"]["scalars"]["probe_score"] <= 1
    # a second call reuses the finished runs (same config hash): nothing is retrained
    mtime = (out / "runs" / "adam-seed0" / "checkpoint.pt").stat().st_mtime_ns
    assert main(argv) == 0
    assert (out / "runs" / "adam-seed0" / "checkpoint.pt").stat().st_mtime_ns == mtime
    # another epoch count is another config: the run is resumed from its checkpoint and extended
    assert main([*argv, "--epochs", "3"]) == 0
    hist = json.loads((out / "runs" / "adam-seed0" / "history.json").read_text())
    assert len(hist) == 3
    # a user error is one line, exit code 1
    assert main(["text", "--out", str(tmp_path / "bad"), "--dataset", str(tmp_path / "missing.csv")]) == 1


def test_a_diverged_run_keeps_its_validation_best_epoch(tmp_path, monkeypatch):
    """train_one(keep_diverged=True): a NaN in epoch 2 leaves the epoch-1 model, measured on the test split."""
    import mirrorattn.experiments.classification as classification
    from mirrorattn.experiments import text
    from mirrorattn.experiments.text import PreparedText, TextExperimentConfig, train_one
    from mirrorattn.train import NonFiniteLossError, Split, TrainData

    def token_task(n: int, seed: int) -> Split:  # label 1 iff token 3 occurs (padded sequences of length 8)
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(4, 20, (n, 8), generator=g)
        mask = torch.arange(8)[None] < torch.randint(3, 9, (n,), generator=g)[:, None]
        labels = torch.randint(0, 2, (n,), generator=g)
        ids[labels.bool(), 1] = 3
        return Split((ids.masked_fill(~mask, 0), mask), labels)

    class Tok:
        def get_vocab_size(self) -> int:
            return 20

    data = TrainData(token_task(128, 1), token_task(64, 2), token_task(64, 3))
    prepared = PreparedText(data, Tok(), 2, ["neg", "pos"], {})
    config = TextExperimentConfig(max_length=8, width=16, heads=2, epochs=3, batch_size=32, lr=3e-3,
                                  optimizers=("adam",), stop_train_acc=None, device="cpu")

    class NaNAfterEpoch1(text.TextTransformer):  # 4 batches per epoch: the loss becomes NaN at epoch 2, batch 1
        def forward(self, *inputs):
            self.n = getattr(self, "n", 0) + int(self.training)
            out = super().forward(*inputs)
            return out * float("nan") if self.training and self.n > 4 else out

    monkeypatch.setattr(text, "TextTransformer", NaNAfterEpoch1)
    with pytest.raises(NonFiniteLossError):
        train_one(config, prepared, "adam", 0, tmp_path / "a", analyse=False, progress=False)
    s = train_one(config, prepared, "adam", 0, tmp_path / "b", analyse=False, progress=False, keep_diverged=True)
    assert s["diverged"] and s["best_epoch"] == 1 and s["epochs_run"] == 1 and s["test_acc_last"] is None
    assert "nan" in s["stop_reason"]
    monkeypatch.undo()
    ref = train_one(dataclasses.replace(config, epochs=1), prepared, "adam", 0, tmp_path / "c", analyse=False,
                    progress=False)
    assert not ref["diverged"]
    assert s["test_acc"] == ref["test_acc"] and s["val_acc_best"] == ref["val_acc_best"]
    agg = classification.aggregate({"adam": [s, ref]})["adam"]
    assert agg["diverged_runs"] == 1 and agg["test_acc_last"]["n"] == 1


@pytest.mark.parametrize("workers", [1, 2])
def test_a_rerun_with_other_settings_is_refused_before_any_training(tmp_path, monkeypatch, workers):
    """run_text_experiment checks every run folder first: the new optimizer listed first trains nothing."""
    import mirrorattn.experiments.classification as classification
    import mirrorattn.experiments.text as text
    from mirrorattn.experiments.text import PreparedText, TextExperimentConfig
    from mirrorattn.train import Split, TrainData

    g = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        ids = torch.randint(4, 20, (n, 8), generator=g)
        return Split((ids, torch.ones(n, 8, dtype=torch.bool)), (ids[:, 1] > 11).long())

    class Tok:
        def get_vocab_size(self) -> int:
            return 20

    prepared = PreparedText(TrainData(split(32), split(16), split(16)), Tok(), 2, ["neg", "pos"], {})
    monkeypatch.setattr(text, "prepare_text_data", lambda config, **kw: prepared)
    monkeypatch.setattr(text, "write_report", lambda out, config, results, **kw: None)
    monkeypatch.setattr(text, "analyse_run", lambda model, write, **kw: {"scalars": {}})
    small = dict(max_length=8, width=16, heads=2, epochs=1, batch_size=16, seeds=1, stop_train_acc=None,
                 device="cpu")
    text.run_text_experiment(TextExperimentConfig(optimizers=("sgd",), **small), tmp_path, progress=False)
    monkeypatch.setattr(classification, "fit", lambda *a, **k: pytest.fail("a run trained before the check"))
    changed = TextExperimentConfig(optimizers=("adam", "sgd"), lr=0.01, **small)
    with pytest.raises(classification.RunConflictError, match=r"sgd-seed0 holds a finished run .*lr 0.001 -> 0.01"):
        text.run_text_experiment(changed, tmp_path, progress=False, workers=workers)
    assert not (tmp_path / "runs" / "adam-seed0").exists()


def test_converge_preset_end_to_end_on_a_tiny_slice(tmp_path, cache, monkeypatch):
    """Issue 14: the converge preset (authors' init and mask, [CLS], summed BCE, stopping rule) runs from the
    embedded polarity copy (no data root); the reported query/key move is recomputed from the saved weights."""
    import mirrorattn.experiments.classification as classification
    from mirrorattn.cli import main
    from mirrorattn.data.text_sources import EMBEDDED_POLARITY
    from mirrorattn.experiments.text import TextExperimentConfig, run_name
    from mirrorattn.experiments.text_presets import PRESETS
    from mirrorattn.metrics import relative_change
    from mirrorattn.models.transformer import TextTransformer
    from mirrorattn.train import seeded_init
    from mirrorattn.train.checkpoint import load_weights

    monkeypatch.setenv("MIRRORATTN_DATA", str(tmp_path / "no-data"))
    out = tmp_path / "out"
    argv = ["text", "--preset", "converge", "--max-train", "300", "--max-test", "100", "--width", "16",
            "--vocab-size", "800", "--max-length", "24", "--epochs", "3", "--warmup-epochs", "1", "--seeds", "1",
            "--optimizers", "lp-md:1.1,adam", "--stop-train-acc", "0.6", "--analysis-samples", "50", "--no-progress",
            "--out", str(out)]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    cfg = results["config"]
    for key in ("init", "attention_mask", "pooling", "loss_reduction", "batch_size", "dropout", "blocks"):
        assert cfg[key] == PRESETS["converge"][key], key
    assert results["data"]["source"] == str(EMBEDDED_POLARITY) and results["data"]["n_train"] == 270
    md = (out / "results.md").read_text()
    assert "Stopping rule: 60.0 % training accuracy, at most 3 epochs" in md and "Q/K move" in md
    for opt in ("lp-md:1.1", "adam"):
        run = out / "runs" / run_name(opt, 0)
        summary = json.loads((run / "summary.json").read_text())
        stopped = summary["stop_reason"].startswith("train_acc")
        assert stopped or summary["epochs_run"] == 3
        assert results["aggregate"][opt]["stop_rule_runs"] == int(stopped)
        fields = flat_fields(TextExperimentConfig)
        config = TextExperimentConfig(**{k: v for k, v in cfg.items() if k in fields and k not in ("lrs",)})
        model_cfg = config.model_config(2, results["data"]["vocab_size"])
        with seeded_init(0):
            initial = TextTransformer(model_cfg)
        state = load_weights(run / "best_model.pt")
        for kind in ("q", "k"):
            name = f"blocks.0.attn.{kind}_proj.weight"
            expect = relative_change(state[name], initial.state_dict()[name])
            assert summary["analysis"]["scalars"][f"{kind}_move"] == pytest.approx(expect, rel=1e-9), kind
            assert expect > 0
        _check_stop_analysis(run, summary, initial, model_cfg, config, results["aggregate"][opt])
    assert "at the stop: [CLS] entropy" in md
    # a run finished before analysis_stop existed gets it on reuse, without training again
    for opt in ("lp-md:1.1", "adam"):
        path = out / "runs" / run_name(opt, 0) / "summary.json"
        old = json.loads(path.read_text())
        path.write_text(json.dumps({k: v for k, v in old.items() if k != "analysis_stop"}))
    monkeypatch.setattr(classification, "fit", lambda *a, **k: pytest.fail("a finished run trained again"))
    assert main(argv) == 0
    again = json.loads((out / "results.json").read_text())
    for opt in ("lp-md:1.1", "adam"):
        assert again["runs"][opt][0]["analysis_stop"] == results["runs"][opt][0]["analysis_stop"]
    # a damaged final checkpoint: the finished run is reused without the entry, nothing else changes
    run = out / "runs" / run_name("adam", 0)
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    (run / "summary.json").write_text(json.dumps({k: v for k, v in again["runs"]["adam"][0].items()
                                                  if k != "analysis_stop"}))
    assert main(argv) == 0
    last = json.loads((out / "results.json").read_text())
    assert "analysis_stop" not in last["runs"]["adam"][0] and last["runs"]["adam"][0]["test_acc"] == \
        again["runs"]["adam"][0]["test_acc"]
    assert "stop_cls_entropy_norm_last" not in last["aggregate"]["adam"]


def _check_stop_analysis(run, summary, initial, model_cfg, config, row):
    """``analysis_stop``: the analysis of the weights where training stopped (the checkpoint's), recomputed here
    from the checkpoint - the query/key move and the last layer's [CLS] entropy by a direct forward."""
    from mirrorattn.experiments.run_analysis import attention_sparsity
    from mirrorattn.experiments.text import prepare_text_data
    from mirrorattn.experiments.token_selection import sample_indices
    from mirrorattn.metrics import relative_change
    from mirrorattn.train.checkpoint import load_checkpoint

    stop = summary["analysis_stop"]
    assert stop["epoch"] == summary["epochs_run"]
    last = load_checkpoint(run / "checkpoint.pt", required=("model",))["model"]
    for kind in ("q", "k"):
        name = f"blocks.0.attn.{kind}_proj.weight"
        expect = relative_change(last[name], initial.state_dict()[name])
        assert stop["scalars"][f"{kind}_move"] == pytest.approx(expect, rel=1e-9), kind
    model = TextTransformer(model_cfg)
    model.load_state_dict(last)
    model.eval()
    ids, mask = prepare_text_data(config).data.test.inputs
    idx = sample_indices(len(ids), 50)
    direct = attention_sparsity(model, ids[idx], mask[idx], 5)[-1]["entropy_norm"]
    assert stop["scalars"]["cls_entropy_norm_last"] == pytest.approx(direct, rel=1e-9)
    assert row["stop_cls_entropy_norm_last"]["mean"] == pytest.approx(direct, rel=1e-12)


def test_probe_leaves_out_sentences_longer_than_the_model_takes():
    """A model of max length 8 used to fail on the probe ("sequence length 18 exceeds max_length")."""
    from mirrorattn.data.tokenize import build_tokenizer

    rows = load_probe_sentences()
    tok = build_tokenizer([r["sentence"] for r in rows] * 3, kind="wordpiece", vocab_size=300, min_frequency=1,
                          use_cache=False)
    lengths = [len(tok.encode(r["sentence"]).ids) for r in rows]
    assert min(lengths) <= 8 < max(lengths) <= 64  # length 8 leaves some out, 64 none
    for length in (8, 64):
        cfg = TextTransformerConfig(vocab_size=tok.get_vocab_size(), num_classes=2, max_length=length, width=8,
                                    blocks=1, heads=2, pooling="cls")
        out = probe_attention(TextTransformer(cfg), tok, rows)
        assert out["n"] == sum(n <= length for n in lengths)
        assert (out["score"] is not None) == (out["n"] > 0)
