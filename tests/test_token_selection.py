"""Token selection on real models (issue 15): model token scores against a direct hook computation, the
one-layer model's scores, the selection metrics by hand, the last layer's W_h and its AttSVM, `mirrorattn analyse`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mirrorattn.experiments.token_selection import (
    head_matrices,
    last_layer_states,
    layer_attention_svm,
    model_token_scores,
    solve_feasible,
    token_selection_metrics,
)
from mirrorattn.models.layers import _paper_mask
from mirrorattn.models.transformer import TextTransformer, TextTransformerConfig
from mirrorattn.models.vit import ViT, ViTConfig
from toy_runs import polarity_comparison


def _text_model(pooling="cls", pre_norm=False, classes=2, mask="keys", blocks=2, width=8, seed=0,
                bias=False) -> TextTransformer:
    torch.manual_seed(seed)
    cfg = TextTransformerConfig(vocab_size=20, max_length=7, width=width, blocks=blocks, heads=2, mlp_ratio=2.0,
                                dropout=0.1, bias=bias, pooling=pooling, num_classes=classes, pre_norm=pre_norm,
                                init="torch", attention_mask=mask)
    return TextTransformer(cfg).double()


def _batch(n=5, T=7, seed=1, classes=2):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 20, (n, T), generator=g)
    lengths = torch.tensor([T, 2, 4, T - 1, 1][:n] + [T] * max(0, n - 5))
    mask = torch.arange(T)[None] < lengths[:, None]
    return ids.masked_fill(~mask, 0), mask, torch.randint(0, classes, (n,), generator=g)


def _one_hot_hook(t: int):
    """A forward hook on an attention layer: recompute its output with the [CLS] row's probabilities (every
    head) set to a one-hot on token t, the other rows as the layer computes them."""
    def hook(module, args, output):
        x, kpm = args[0], (args[1] if len(args) > 1 else None)
        q, k, v = module._qkv(x)
        scores = q @ k.transpose(-2, -1) / math.sqrt(module.head_dim)
        if kpm is not None:
            allowed = _paper_mask(kpm) if module.paper_mask else kpm[:, None, None, :]
            scores = scores.masked_fill(~allowed, float("-inf"))
        probs = torch.softmax(scores, dim=-1).clone()
        probs[:, :, 0, :] = 0.0
        probs[:, :, 0, t] = 1.0
        out = (probs @ v).transpose(1, 2).reshape(x.shape)
        return module.out_proj(out)
    return hook


def _margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The true class's margin, computed per sample in plain Python."""
    out = []
    for lg, y in zip(logits, labels.tolist()):
        if lg.ndim == 0:
            out.append((1.0 if y == 1 else -1.0) * float(lg))
        else:
            out.append(float(lg[y]) - max(float(v) for c, v in enumerate(lg) if c != y))
    return torch.tensor(out, dtype=torch.float64)


def _direct(model, inputs, mask, labels) -> torch.Tensor:
    """One full forward per token t with the hook on the last attention layer; -inf at padding."""
    model.eval()
    T = inputs.shape[1] if mask is not None else 1 + model.config.grid ** 2
    cols = []
    for t in range(T):
        handle = model.blocks[-1].attn.register_forward_hook(_one_hot_hook(t))
        with torch.no_grad():
            logits = model(inputs, mask) if mask is not None else model(inputs)
        handle.remove()
        cols.append(_margin(logits.double(), labels))
    s = torch.stack(cols, dim=1)
    return s if mask is None else s.masked_fill(~mask, float("-inf"))


@pytest.mark.parametrize("pooling,pre_norm,classes,mask", [("cls", False, 2, "paper"), ("mean", False, 3, "keys"),
                                                           ("mean", True, 2, "paper"), ("cls", True, 3, "keys")])
def test_text_scores_equal_the_direct_hook_computation(pooling, pre_norm, classes, mask):
    model = _text_model(pooling, pre_norm, classes, mask)
    ids, m, labels = _batch(classes=classes)
    got = model_token_scores(model, ids, m, labels, batch=2)  # chunks of 2 samples
    assert model.training  # its mode is restored (the scores are of the eval-mode model)
    want = _direct(model, ids, m, labels)
    assert got.shape == (5, 7) and got.dtype == torch.float64
    assert torch.equal(torch.isinf(got), ~m) and torch.allclose(got[m], want[m], rtol=1e-10, atol=1e-12)
    # the scores differ from token to token (the test is not vacuous)
    assert float(got[0].max() - got[0].min()) > 1e-3


def test_vit_scores_equal_the_direct_hook_computation():
    torch.manual_seed(0)
    model = ViT(ViTConfig(image_size=8, channels=1, num_classes=3, patch=4, width=8, depth=2, heads=2,
                          mlp_hidden=16, dropout=0.1, init="torch"))
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    labels = torch.tensor([0, 2, 1, 2])
    got = model_token_scores(model, images, None, labels)
    want = _direct(model, images, None, labels)
    assert got.shape == (4, 5) and torch.isinf(got[:, 0]).all()  # candidates: the 4 patches
    assert torch.allclose(got[:, 1:].double(), want[:, 1:], rtol=1e-4, atol=1e-5)
    with_cls = model_token_scores(model, images, None, labels, include_cls=True)
    assert torch.allclose(with_cls.double(), want, rtol=1e-4, atol=1e-5)


def test_one_layer_model_scores_equal_the_token_scores():
    from mirrorattn.models.attention import OneLayerAttention
    from mirrorattn.tokens import token_scores

    g = torch.Generator().manual_seed(3)
    S, n, T, d = 2, 4, 5, 3
    model = OneLayerAttention(d, seeds=S)
    with torch.no_grad():
        model.W.copy_(torch.randn(S, d, d, generator=g))
        model.v.copy_(torch.randn(S, d, generator=g))
    X, z = torch.randn(S, n, T, d, generator=g, dtype=torch.float64), torch.randn(S, n, d, generator=g,
                                                                                  dtype=torch.float64)
    y = torch.where(torch.rand(S, n, generator=g) > 0.5, 1.0, -1.0).double()
    from mirrorattn.experiments.token_selection import model_token_scores as reexported

    got = reexported(model, (X, z), None, y)
    assert got.shape == (S, n, T)
    for s in range(S):
        assert torch.allclose(got[s], token_scores(X[s], y[s], model.v[s]), rtol=1e-12, atol=1e-14)
    assert hasattr(type(model), "attention") and "attention" not in vars(model)  # the method is back


def test_selection_metrics_by_hand():
    model = _text_model("mean", False, 2, "paper")
    ids, m, labels = _batch(n=5)
    ids2, m2, labels2 = _batch(n=5, seed=7)
    ids, m, labels = torch.cat([ids, ids2]), torch.cat([m, m2]), torch.cat([labels, labels2])
    met = token_selection_metrics(model, ids, m, labels, batch=3, ranks=4)
    scores = _direct(model, ids, m, labels).numpy()
    probs = last_layer_states(model, ids, m).probs.numpy()  # (n, H, T)
    hits, mass, rank, share_h, chance, by_rank = [], [], [], [[], []], [], [[] for _ in range(4)]
    for i in range(len(ids)):
        real = m[i].numpy()
        s, p = scores[i][real], probs[i][:, real]
        best, pm = int(np.argmax(s)), p.mean(0)
        hits.append(int(np.argmax(pm)) == best)
        mass.append(pm[best])
        rank.append(1 + int(np.sum(s > s[int(np.argmax(pm))])))
        for h in range(2):
            share_h[h].append(int(np.argmax(p[h])) == best)
        chance.append(1 / real.sum())
        for r, t in enumerate(np.argsort(-s)[:4]):
            by_rank[r].append(pm[t])
    assert met["n"] == 10 and met["heads"] == 2 and met["candidates"] == "real tokens"
    assert met["optimal_token_share"] == pytest.approx(np.mean(hits), abs=1e-12)
    assert met["optimal_token_share_per_head"] == pytest.approx([np.mean(x) for x in share_h], abs=1e-12)
    assert met["optimal_token_mass"] == pytest.approx(np.mean(mass), rel=1e-9)
    assert met["attended_token_rank"] == pytest.approx(np.mean(rank), rel=1e-12)
    assert met["chance_share"] == pytest.approx(np.mean(chance), rel=1e-12)
    assert met["mass_by_score_rank"] == pytest.approx([np.mean(b) for b in by_rank], rel=1e-9)
    assert 0 < met["optimal_token_share"] < 1 or met["optimal_token_share"] in (0.0, 1.0)


def test_head_matrices_give_the_layers_attention_scores():
    """softmax over real keys of a_t^T W_h a_0 is the recorded [CLS] row of head h (the convention of W_h)."""
    model = _text_model("cls", True, 2, "keys", blocks=2, width=12)
    ids, m, _ = _batch()
    st = last_layer_states(model, ids, m)
    W = head_matrices(model.blocks[-1].attn)
    a = st.a.numpy()
    for h in range(2):
        s = np.einsum("btd,de,be->bt", a, W[h], a[:, 0])
        s = np.where(m.numpy(), s, -np.inf)
        p = np.exp(s - s.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        assert np.allclose(p, st.probs[:, h].numpy(), rtol=1e-10, atol=1e-13)


def test_infeasible_samples_are_dropped_and_the_rest_solved():
    from mirrorattn.svm import attention_svm

    rng = np.random.default_rng(0)
    X, z = rng.standard_normal((6, 4, 3)), rng.standard_normal((6, 3))
    alpha = np.argmax(np.einsum("ntd,de,ne->nt", X, rng.standard_normal((3, 3)), z), axis=1)
    X[2, (alpha[2] + 1) % 4] = X[2, alpha[2]]  # a zero constraint row: sample 2 cannot be separated
    res, dropped = solve_feasible(X, z, alpha, 2.0)
    keep = [0, 1, 3, 4, 5]
    ref = attention_svm(X[keep], z[keep], alpha[keep], 2.0)
    assert dropped == [2] and res.objective == pytest.approx(ref.objective, rel=1e-9)


def _tiny_trained_text_model() -> tuple[TextTransformer, torch.Tensor, torch.Tensor]:
    """A 1-block model trained a few steps on "label 1 iff token 3 occurs" (sequences of 7 tokens)."""
    model = _text_model("cls", False, 2, "keys", blocks=1, width=6, seed=2)
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(4, 20, (48, 7), generator=g)
    labels = torch.randint(0, 2, (48,), generator=g)
    ids[labels.bool(), 3] = 3
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[::3, 5:] = False
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(model(ids, mask), labels.double()).backward()
        opt.step()
    return model, ids, mask


def test_layer_attention_svm_on_a_tiny_trained_model():
    from mirrorattn.svm import attention_svm

    model, ids, mask = _tiny_trained_text_model()
    out = layer_attention_svm(model, ids[:30], mask[:30], ps=(1.1, 2.0), active_set="on")
    one_shot = layer_attention_svm(model, ids[:30], mask[:30], ps=(1.1, 2.0), active_set="off")
    assert out["n"] == 30 and out["d"] == 6 and len(out["heads"]) == 2 and not out["bias"]
    st = last_layer_states(model, ids[:30], mask[:30])
    X, real = st.a.numpy(), mask[:30].numpy()
    for h, (row, ref) in enumerate(zip(out["heads"], one_shot["heads"])):
        assert row["selection_agreement"] == 1.0  # no biases: W_h's argmax is the attention's
        alpha = np.where(real, st.probs[:, h].numpy(), -np.inf).argmax(1)
        W = head_matrices(model.blocks[-1].attn)[h]
        for p in ("1.1", "2"):
            r = row["p"][p]
            assert r["method"] == "active-set" and ref["p"][p]["method"] == "one-shot"
            assert r["objective"] == pytest.approx(ref["p"][p]["objective"], rel=1e-6)
            assert r["n_dropped"] == 0 and r["n_used"] == 30 and r["n_constraints"] == int(real.sum()) - 30
            direct = attention_svm(X, X[:, 0], alpha, float(p), mask=real)
            assert r["cosine"] == pytest.approx(float(np.sum(direct.W * W) / np.linalg.norm(direct.W)
                                                      / np.linalg.norm(W)), rel=1e-5)
            assert -1 <= r["cosine"] <= 1 and r["directional_bregman"] >= 0


@pytest.fixture(scope="module")
def tiny_text_run(tmp_path_factory):
    """A finished 1-epoch text run on a slice of the embedded polarity data (no data root needed)."""
    yield from polarity_comparison(tmp_path_factory, "analyse", "--max-test", "80", "--max-length", "24", "--epochs",
                                   "1", "--optimizers", "adam", "--stop-train-acc", "0.99", "--analysis-samples", "60")


def test_analyse_recomputes_the_runs_metrics(tiny_text_run, tmp_path, capsys):
    from mirrorattn.cli import main

    run = tiny_text_run / "runs" / "adam-seed0"
    summary = json.loads((run / "summary.json").read_text())
    stored = summary["analysis"]["token_selection"]
    assert stored["n"] == 60 and summary["analysis"]["scalars"]["optimal_token_share"] == stored["optimal_token_share"]
    assert main(["analyse", str(tiny_text_run), "--svm-samples", "10", "--ps", "2", "--out", str(tmp_path)]) == 0
    out = json.loads((tmp_path / "adam-seed0" / "token_selection.json").read_text())
    assert (tmp_path / "adam-seed0" / "token_selection.png").is_file()
    again = out["token_selection"]
    assert again["n"] == 80  # its own cap (500) on the 80 test samples
    # the same seeded sample: the run's 60 are the first 60 of the command's 80
    part = main(["analyse", str(run), "--samples", "60", "--out", str(tmp_path / "b")])
    sixty = json.loads((tmp_path / "b" / "adam-seed0" / "token_selection.json").read_text())["token_selection"]
    assert part == 0
    for key in ("optimal_token_share", "optimal_token_share_per_head", "attended_token_rank", "chance_share"):
        assert sixty[key] == pytest.approx(stored[key], rel=1e-9), key
    assert sixty["optimal_token_mass"] == pytest.approx(stored["optimal_token_mass"], rel=1e-6)
    svm = out["attention_svm"]
    assert svm["n"] == 10 and svm["d"] == 8 and set(svm["heads"][0]["p"]) == {"2"}
    assert "optimal-token share" in capsys.readouterr().out


def test_analyse_reports_bad_input_in_one_line(tiny_text_run, tmp_path, capsys):
    import shutil

    from mirrorattn.cli import main

    run = tmp_path / "run"
    shutil.copytree(tiny_text_run / "runs" / "adam-seed0", run)
    cases = {"not a folder": [str(tmp_path / "missing")], "holds no run_config.json": [str(tmp_path)]}
    for what, argv in cases.items():
        assert main(["analyse", *argv]) == 1
        err = capsys.readouterr().err
        assert what in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    (run / "best_model.pt").write_bytes(b"not a checkpoint")
    assert main(["analyse", str(run)]) == 1
    err = capsys.readouterr().err
    assert "best_model.pt" in err and len(err.strip().splitlines()) == 1
    (run / "run_config.json").write_text("{broken")
    assert main(["analyse", str(run)]) == 1
    err = capsys.readouterr().err
    assert "run_config.json" in err and len(err.strip().splitlines()) == 1
    assert main(["analyse", str(tiny_text_run), "--svm-samples", "3", "--ps", "0.5"]) == 1
    assert "got 0.5" in capsys.readouterr().err


def test_analyse_a_vision_run(tmp_path, cache):
    """A 1-epoch ViT on the 8x8 digits: its summary holds the metrics, `mirrorattn analyse` recomputes them."""
    from mirrorattn.cli import main

    out = tmp_path / "out"
    argv = ["vision", "--dataset", "digits", "--out", str(out), "--seeds", "1", "--epochs", "1", "--optimizers", "adam",
            "--max-train", "300", "--max-test", "50", "--patch", "4", "--width", "8", "--depth", "1", "--heads", "2",
            "--mlp-hidden", "8", "--analysis-samples", "40", "--attention-images", "1", "--no-progress"]
    assert main(argv) == 0
    run = out / "runs" / "adam-seed0"
    stored = json.loads((run / "summary.json").read_text())["analysis"]["token_selection"]
    assert stored["n"] == 40 and stored["candidates"] == "real tokens except [CLS]"
    assert stored["chance_share"] == pytest.approx(1 / 4)  # 4 patches of 4x4 pixels
    assert main(["analyse", str(run), "--samples", "40", "--out", str(tmp_path / "a")]) == 0
    again = json.loads((tmp_path / "a" / "adam-seed0" / "token_selection.json").read_text())["token_selection"]
    assert again["optimal_token_share_per_head"] == pytest.approx(stored["optimal_token_share_per_head"], abs=1e-12)
    assert again["optimal_token_mass"] == pytest.approx(stored["optimal_token_mass"], rel=1e-5)
