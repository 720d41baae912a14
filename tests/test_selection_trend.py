"""Token selection over training and per comparison (issue 15, items 3-4): `mirrorattn analyse --trend` on a tiny
text comparison with weight snapshots, checked against independent computations; the comparison's summary,
table and figures; the one-layer model's sanity check against the synthetic experiments' measures."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from mirrorattn.experiments.selection_figures import summarize
from mirrorattn.experiments.selection_trend import selection_trend, target_divergences
from mirrorattn.experiments.token_selection import (
    head_matrices,
    head_selection,
    last_layer_states,
    sample_indices,
    token_selection_metrics,
)
from mirrorattn.mirror import directional_bregman
from mirrorattn.train.checkpoint import list_snapshots, load_weights
from toy_runs import polarity_comparison

SVM, PS = 12, ("1.1", "2")


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    """A finished 3-epoch text comparison (l_1.1-MD and l_2-MD, one seed) keeping log-spaced snapshots."""
    yield from polarity_comparison(tmp_path_factory, "trend", "--max-test", "60", "--max-length", "16", "--epochs",
                                   "3", "--optimizers", "lp-md:1.1,lp-md:2", "--lr", "0.005", "--analysis-samples",
                                   "40")


@pytest.fixture(scope="module")
def analysed(comparison, tmp_path_factory):
    """`mirrorattn analyse OUT --trend` of the comparison, written under its own folder."""
    from mirrorattn.cli import main

    out = tmp_path_factory.mktemp("analysed")
    argv = ["analyse", str(comparison), "--trend", "--svm-samples", str(SVM), "--ps", ",".join(PS), "--out", str(out)]
    assert main(argv) == 0
    return out


def test_trend_follows_the_snapshots_and_ends_at_the_final_models_attention_svm(comparison, analysed):
    from mirrorattn.experiments.analyse_cli import load_run
    from mirrorattn.experiments.token_selection import layer_attention_svm
    from mirrorattn.svm import attention_svm

    run = comparison / "runs" / "lp-md-1.1-seed0"
    trend = json.loads((analysed / run.name / "token_selection.json").read_text())["trend"]
    snaps = list_snapshots(run)
    assert trend["epochs"] == [e for e, _ in snaps] == [0, 1, 2, 3] and trend["target_epoch"] == 3
    assert trend["n"] == 60 and trend["svm_samples"] == SVM and trend["ps"] == list(PS) and len(trend["heads"]) == 2
    assert all(len(trend[k]) == 4 for k in ("optimal_token_share", "optimal_token_mass", "chance_share"))
    _, model, test = load_run(run)
    idx = sample_indices(len(test), SVM)  # the first SVM of the analysis sample
    ids, mask = test.inputs[0][idx], test.inputs[1][idx]
    model.load_state_dict(load_weights(snaps[-1][1]))  # the final weights
    final = layer_attention_svm(model, ids, mask, ps=(1.1, 2.0))
    st = last_layer_states(model, ids, mask)
    X, real = st.a.double().numpy(), mask.numpy()
    alphas = [head_selection(st.probs[:, h].double().numpy(), real) for h in range(2)]
    model.load_state_dict(load_weights(snaps[0][1]))  # the initial weights, against the same fixed target
    W0 = head_matrices(model.blocks[-1].attn)
    all_idx = sample_indices(len(test), 500)
    share0 = token_selection_metrics(model, test.inputs[0][all_idx], test.inputs[1][all_idx], test.labels[all_idx])
    assert trend["optimal_token_share"][0] == pytest.approx(share0["optimal_token_share"], abs=1e-12)
    for h in range(2):
        for p in PS:
            got, want = trend["heads"][h]["p"][p], final["heads"][h]["p"][p]
            assert got["directional_bregman"][-1] == pytest.approx(want["directional_bregman"], rel=1e-6, abs=1e-9)
            assert got["cosine"][-1] == pytest.approx(want["cosine"], rel=1e-6)
            assert got["objective"] == pytest.approx(want["objective"], rel=1e-6) and got["n_used"] == SVM
            W_mm = attention_svm(X, X[:, 0], alphas[h], float(p), mask=real).W
            d0 = float(directional_bregman(W_mm, W0[h], float(p)))
            assert got["directional_bregman"][0] == pytest.approx(d0, rel=1e-4, abs=1e-7)
            assert got["directional_bregman"][0] != pytest.approx(got["directional_bregman"][-1], rel=1e-6)


def test_comparison_summary_table_and_figures(comparison, analysed, capsys):
    from mirrorattn.cli import main

    summary = json.loads((analysed / "token_selection.json").read_text())
    assert list(summary["optimizers"]) == ["lp-md:1.1", "lp-md:2"] and summary["ps"] == list(PS)
    for opt, row in summary["optimizers"].items():
        run = json.loads((analysed / f"{opt.replace(':', '-')}-seed0" / "token_selection.json").read_text())
        assert row["optimal_token_share"]["mean"] == run["token_selection"]["optimal_token_share"]
        assert row["own_p"] == opt.split(":")[1] and row["trend"]["epochs"] == [0, 1, 2, 3]
        heads = run["trend"]["heads"]
        own = row["own_p"]
        assert row["trend"]["last"][own]["directional_bregman"]["mean"] == pytest.approx(
            np.mean([h["p"][own]["directional_bregman"][-1] for h in heads]), rel=1e-12)
    md = (analysed / "token_selection.md").read_text()
    assert "| lp-md:1.1 | 1 |" in md and "D own (first snapshot)" in md
    pngs = ("selection_share.png", "selection_mass.png", "selection_trend.png")
    for name in pngs:
        assert (analysed / name).stat().st_size > 1000
        (analysed / name).unlink()
    # redrawn from the saved results alone, without the data (no model is loaded)
    assert main(["analyse", str(comparison), "--figures-only", "--out", str(analysed), "--data-root", "/nowhere"]) == 0
    assert all((analysed / name).is_file() for name in pngs)
    assert main(["analyse", str(comparison / "runs" / "lp-md-2-seed0"), "--figures-only"]) == 1
    assert "needs a comparison folder" in capsys.readouterr().err


def test_a_run_without_snapshots_is_one_clear_line(comparison, tmp_path, capsys):
    from mirrorattn.cli import main

    run = tmp_path / "run"
    shutil.copytree(comparison / "runs" / "lp-md-2-seed0", run)
    shutil.rmtree(run / "snapshots")
    assert main(["analyse", str(run), "--trend"]) == 1
    err = capsys.readouterr().err.strip()
    assert "kept no weight snapshots" in err and "--snapshots log" in err and len(err.splitlines()) == 1
    with pytest.raises(ValueError, match="at least one weight snapshot"):
        selection_trend(torch.nn.Linear(2, 2), [], torch.zeros(1, 2), None, torch.zeros(1))


def _trend(epochs, shares, div, cos=None):
    """A run's trend with one head: D and cosine per epoch for p = 1.1 and 2 (2: D + 0.5)."""
    cos = cos or [0.5] * len(epochs)
    return {"epochs": epochs, "optimal_token_share": shares,
            "heads": [{"p": {"1.1": {"directional_bregman": div, "cosine": cos, "n_dropped": 1},
                             "2": {"directional_bregman": [d + 0.5 for d in div], "cosine": cos, "n_dropped": 0}}}]}


def _record(opt, seed, share, chance, by_rank, trend=None):
    result = {"token_selection": {"optimal_token_share": share, "chance_share": chance, "optimal_token_mass": 0.3,
                                  "attended_token_rank": 2.0, "mass_by_score_rank": by_rank}}
    if trend:
        result["trend"] = trend
    return {"optimizer": opt, "seed": seed, "run": f"{opt}-seed{seed}", "result": result}


def test_summary_by_hand():
    """Seeds with different snapshot epochs (one stopped early): per-epoch means over the seeds present."""
    records = [_record("lp-md:1.1", 0, 0.2, 0.1, [0.5, 0.2], _trend([0, 1, 2], [0.1, 0.2, 0.3], [0.9, 0.6, 0.3])),
               _record("lp-md:1.1", 1, 0.4, 0.1, [0.7, None], _trend([0, 1], [0.1, 0.5], [0.8, 0.5])),
               _record("adam", 0, 0.1, 0.1, [0.3, 0.3])]
    s = summarize(records)
    lp, adam = s["optimizers"]["lp-md:1.1"], s["optimizers"]["adam"]
    assert s["ps"] == ["1.1", "2"] and s["trend"] and adam["trend"] is None and adam["own_p"] is None
    share = lp["optimal_token_share"]
    assert (share["mean"], share["min"], share["max"], share["n"]) == pytest.approx((0.3, 0.2, 0.4, 2))
    assert share["std"] == pytest.approx(np.std([0.2, 0.4], ddof=1))
    assert lp["mass_by_score_rank"] == pytest.approx([0.6, 0.2])
    tr = lp["trend"]
    assert tr["epochs"] == [0, 1, 2] and tr["seeds"] == 2
    assert tr["p"]["1.1"]["directional_bregman"]["mean"] == pytest.approx([0.85, 0.55, 0.3])
    assert tr["p"]["1.1"]["directional_bregman"]["n"] == [2, 2, 1]
    assert tr["p"]["2"]["directional_bregman"]["mean"] == pytest.approx([1.35, 1.05, 0.8])
    assert tr["first"]["1.1"]["directional_bregman"]["mean"] == pytest.approx(0.85)
    assert tr["last"]["1.1"]["directional_bregman"]["mean"] == pytest.approx(0.4)  # (0.3 + 0.5) / 2: each seed's last
    assert tr["p"]["1.1"]["n_dropped"] == 2 and tr["optimal_token_share"]["mean"] == pytest.approx([0.1, 0.35, 0.3])


def test_one_layer_model_agrees_with_the_synthetic_measures():
    """On OneLayerAttention (its seeds in the role of heads): the selection is tokens.selected_tokens and the
    divergences are the synthetic experiments' directional_divergence / cosine_or_nan."""
    from mirrorattn.experiments.synthetic.common import cosine_or_nan, directional_divergence
    from mirrorattn.models.attention import OneLayerAttention
    from mirrorattn.tokens import selected_tokens

    g = torch.Generator().manual_seed(4)
    S, n, T, d = 3, 6, 5, 4
    model = OneLayerAttention(d, seeds=S)
    with torch.no_grad():
        model.W.copy_(torch.randn(S, d, d, generator=g, dtype=torch.float64))
    X = torch.randn(S, n, T, d, generator=g, dtype=torch.float64)
    z = torch.randn(S, n, d, generator=g, dtype=torch.float64)
    Ws = head_matrices(model)
    probs = model.attention(X, z).detach().numpy()
    for s in range(S):
        want = selected_tokens(X[s].numpy(), z[s].numpy(), Ws[s])
        assert np.array_equal(head_selection(probs[s], np.ones((n, T), bool)), want)
    targets = np.random.default_rng(1).standard_normal((S, d, d))
    got = target_divergences(Ws, [{"1.1": t, "3": t} for t in targets])
    for key in ("1.1", "3"):
        want = directional_divergence(targets, Ws, float(key), batch_dims=1)
        assert [g_[key]["directional_bregman"] for g_ in got] == pytest.approx(want.tolist(), rel=1e-10)
        assert [g_[key]["cosine"] for g_ in got] == pytest.approx(cosine_or_nan(targets, Ws).tolist(), rel=1e-12)


def test_vit_trend_solves_the_per_sample_query_problem_on_its_dual():
    """A 2-block ViT's [CLS] state differs per image, so each head's W_mm is the d x d problem (d = 32: the dual
    solver); the trend's last point is the divergence of the last snapshot's own matrices to those targets."""
    from mirrorattn.experiments.token_selection import last_attention, layer_attention_svm
    from mirrorattn.models.vit import ViT, ViTConfig

    cfg = ViTConfig(image_size=8, patch=4, width=32, depth=2, heads=2, mlp_hidden=32, dropout=0.0, init="torch",
                    num_classes=3)
    torch.manual_seed(1)
    first = {k: v.clone() for k, v in ViT(cfg).state_dict().items()}
    torch.manual_seed(0)
    model = ViT(cfg)
    images = torch.randint(0, 256, (24, 3, 8, 8), dtype=torch.uint8)
    labels = torch.randint(0, 3, (24,))
    last = {k: v.clone() for k, v in model.state_dict().items()}
    trend = selection_trend(model, [(0, first), (5, last)], images, None, labels, svm_samples=16, ps=(1.1, 2.0))
    direct = layer_attention_svm(model, images[:16], None, ps=(1.1, 2.0))
    Ws = head_matrices(last_attention(model))
    for h, head in enumerate(trend["heads"]):
        for key in ("1.1", "2"):
            row, ref = head["p"][key], direct["heads"][h]["p"][key]
            assert row["method"].endswith("(dual)") and row["n_used"] + row["n_dropped"] == 16
            assert row["objective"] == pytest.approx(ref["objective"], rel=1e-8)
            assert row["directional_bregman"][-1] == pytest.approx(ref["directional_bregman"], rel=1e-6)
            assert row["directional_bregman"][0] != pytest.approx(row["directional_bregman"][-1])
    assert trend["epochs"] == [0, 5] and len(trend["optimal_token_share"]) == 2
    torch.testing.assert_close(torch.as_tensor(head_matrices(last_attention(model))), torch.as_tensor(Ws))
