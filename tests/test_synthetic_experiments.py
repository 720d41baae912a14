"""The synthetic experiments: configs, resumable pieces, the regularisation-path solver, the CLI,
and (slow) the quick-preset checks of issue 4 (diagonal dominance, decreasing divergences, joint
saturation, regularisation path)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from mirrorattn.config import ConfigError, build_config
from mirrorattn.data.synthetic import make_synthetic_batch
from mirrorattn.experiments.synthetic.common import directional_divergence, init_weights
from mirrorattn.experiments.synthetic.joint import JointConfig, run_joint
from mirrorattn.experiments.synthetic.local import LocalConfig, run_local
from mirrorattn.experiments.synthetic.presets import preset
from mirrorattn.experiments.synthetic.regpath import RegPathConfig, solve_constrained
from mirrorattn.experiments.synthetic.runner import Piece, run_pieces
from mirrorattn.mirror import directional_bregman, dual_exponent, lp_norm
from mirrorattn.models.attention import forward, loss_and_grad, loss_difference, token_values

# ---------------------------------------------------------------- configs and small helpers


def test_configs_from_presets_and_toml(tmp_path: Path):
    f = tmp_path / "c.toml"
    f.write_text("seeds = 3\nps = [2, 3]\niterations = [10, 20]\n")
    cfg = build_config(LocalConfig, preset("quick", "local"), f, {"eta": 0.05})
    assert cfg.seeds == 3 and cfg.ps == (2.0, 3.0) and cfg.iterations == (10, 20) and cfg.eta == 0.05
    paper = build_config(LocalConfig, preset("paper", "local"))
    assert paper.iterations == (1500, 2000, 20000) and paper.seeds == 100 and (paper.n, paper.T, paper.d) == (6, 8, 10)
    with pytest.raises(ValueError, match="one positive count per p"):
        LocalConfig(ps=(2.0, 3.0), iterations=(1, 2, 3))
    with pytest.raises(ValueError, match="ps must be a finite real number > 1"):
        LocalConfig(ps=(0.5,))
    with pytest.raises(ConfigError, match="unknown config field"):
        build_config(JointConfig, None, None, {"n": 3})
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge", "local")


def test_experiments_share_one_interface_and_presets():
    """Every ``run_<name>`` (built by ``experiment_runner``) has the same signature and pickles by name;
    both presets build valid configs, and ``quick`` only shrinks the paper's counts."""
    import importlib
    import inspect
    import pickle

    from mirrorattn.experiments.synthetic.cli import EXPERIMENTS

    for name in EXPERIMENTS:
        module = importlib.import_module(f"mirrorattn.experiments.synthetic.{name}")
        cls, fn = (getattr(module, n) for n in module.__all__[:2])
        assert fn.__name__ == f"run_{name}" and fn.__module__ == module.__name__ and fn.__doc__
        assert list(inspect.signature(fn).parameters) == ["cfg", "out", "workers", "progress", "log", "figures",
                                                          "position"]
        assert pickle.loads(pickle.dumps(fn)) is fn
        paper, quick = (build_config(cls, preset(k, name)) for k in ("paper", "quick"))
        assert quick.ps == paper.ps
        for field in ("seeds", "iterations", "grid_points", "radii", "max_steps", "r_max"):
            if hasattr(paper, field):
                assert np.all(np.asarray(getattr(quick, field)) <= np.asarray(getattr(paper, field))), (name, field)


def test_init_weights_are_seeded_per_seed():
    a = init_weights([1, 2], (3, 3), 2.0)
    b = init_weights([2], (3, 3), 2.0)
    np.testing.assert_array_equal(a[1], b[0])
    assert 1.0 < a.std() < 3.5
    np.testing.assert_array_equal(init_weights([1], (3, 3), 0.0), 0.0)


def test_directional_divergence_matches_mirror_and_handles_zero():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 4, 3, 3))
    d = directional_divergence(a, b, 1.75, batch_dims=1)
    np.testing.assert_allclose(d, directional_bregman(a, b, 1.75, batch_dims=1), rtol=1e-12)
    b[2] = 0.0
    d = directional_divergence(a, b, 3.0, batch_dims=1)
    assert np.isnan(d[2]) and np.all(np.isfinite(d[[0, 1, 3]]))


def test_loss_difference_is_exact_where_float_losses_tie():
    data = make_synthetic_batch(3, 4, 3, [0, 1])
    rng = np.random.default_rng(3)
    W = rng.standard_normal((2, 3, 3))
    xv = token_values(data.X, data.v)
    f1 = forward(data.X, data.z, W, data.v, xv)
    f2 = forward(data.X, data.z, 1.001 * W, data.v, xv)
    direct = loss_and_grad(data.X, data.z, data.y, 1.001 * W, data.v)[0] - loss_and_grad(
        data.X, data.z, data.y, W, data.v)[0]
    np.testing.assert_allclose(loss_difference(f1, f2, data.y), direct, rtol=1e-6, atol=1e-15)
    # saturated softmax: the float losses are equal, the difference is still resolved and negative
    big = 300.0 * W
    g = loss_and_grad(data.X, data.z, data.y, big, data.v)[1]
    f_big = forward(data.X, data.z, big, data.v, xv)
    f_step = forward(data.X, data.z, big - 1e-3 * g / np.abs(g).max(), data.v, xv)
    diff = loss_difference(f_big, f_step, data.y)
    assert np.all(diff <= 0) and np.any(diff < 0)


def test_constrained_solver_reaches_a_stationary_point_on_the_ball():
    """At the returned W_R: ||W||_p = R and -g is aligned with grad psi(W) (FW gap ~ 0), checked
    independently of the solver's own stopping rule; and random feasible points are no better."""
    data = make_synthetic_batch(4, 5, 4, [0, 1])
    p, R = 1.75, 5.0
    W = np.zeros((2, 4, 4))
    W[:, 0, 0] = R
    W, loss, gap, steps = solve_constrained(data, W, R, p, 1e-8, 5000)
    np.testing.assert_allclose(lp_norm(W, p, batch_dims=1), R, rtol=1e-9)
    _, g, _, _ = loss_and_grad(data.X, data.z, data.y, W, data.v)
    q = dual_exponent(p)
    for s in range(2):
        s_fw = -R * np.sign(g[s]) * np.abs(g[s]) ** (q - 1) / lp_norm(g[s], q) ** (q - 1)  # LMO of the ball
        assert lp_norm(s_fw, p) == pytest.approx(R, rel=1e-9)
        assert np.sum(g[s] * (W[s] - s_fw)) <= 1e-6 * R * lp_norm(g[s], q)
    rng = np.random.default_rng(0)
    for _ in range(20):
        Z = rng.standard_normal((2, 4, 4))
        Z *= (R / np.asarray(lp_norm(Z, p, batch_dims=1)))[:, None, None]
        assert np.all(loss_and_grad(data.X, data.z, data.y, Z, data.v)[0] >= loss - 1e-12)


def test_solve_each_records_failures_and_shares_equal_keys():
    from mirrorattn.experiments.synthetic.common import solve_each
    from mirrorattn.svm import InfeasibleSVMError

    calls = []

    class Res:
        status = "optimal"

        def __init__(self, b):
            self.W = np.full((2, 2), float(b))

    def call(b):
        calls.append(b)
        if b == 3:
            raise InfeasibleSVMError("samples [0] contradict each other", samples=[0])
        return Res(b)

    out = solve_each(4, call, (2, 2), key=lambda b: min(b, 2) if b < 3 else 3)
    assert calls == [0, 1, 2, 3]
    out = solve_each(4, call, (2, 2), key=lambda b: 0 if b < 2 else b)
    assert calls[4:] == [0, 2, 3]  # b = 1 reuses the solve of b = 0
    np.testing.assert_array_equal(out.W[1], 0.0)
    assert list(out.status) == ["optimal", "optimal", "optimal", "infeasible"]
    assert np.isnan(out.W[3]).all() and "contradict" in out.reason[3] and out.reason[0] == ""
    assert out.results[3] is None


def test_cosine_or_nan_matches_the_metric_and_marks_zero():
    from mirrorattn.experiments.synthetic.common import cosine_or_nan

    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((3, 4, 4))
    a[1] = 0.0
    c = cosine_or_nan(a, b[None])  # (2, 3) against (1, 3): broadcast
    for i in range(2):
        for j in range(3):
            if i == 1:
                assert np.isnan(c[i, j])
            else:
                direct = np.sum(a[i, j] * b[j]) / np.sqrt(np.sum(a[i, j] ** 2) * np.sum(b[j] ** 2))
                assert c[i, j] == pytest.approx(direct, rel=1e-13)


def test_svm_reuses_its_problems_with_fresh_data():
    """The cached, parametrised cvxpy problem answers each new data set like a fresh problem does."""
    from mirrorattn.svm import attention_svm, attention_svm_nuclear, core
    from mirrorattn.tokens import globally_optimal_tokens, token_scores

    data = make_synthetic_batch(4, 5, 5, [11, 12, 13])
    alphas = [globally_optimal_tokens(token_scores(data.X[s], data.y[s], data.v[s])) for s in range(3)]
    cached = [attention_svm(data.X[s], data.z[s], alphas[s], 1.75) for s in range(3)]
    nuc = [attention_svm_nuclear(data.X[s], data.z[s], alphas[s]) for s in range(3)]
    assert any(key[1] == (4 * 4, 25) for key in core._PROBLEMS)  # (n (T - 1), d^2) problems were cached
    limit = core.REUSE_MAX_ENTRIES
    try:
        core.REUSE_MAX_ENTRIES = 0  # every solve builds its own problem (the reference)
        for s in range(3):
            fresh = attention_svm(data.X[s], data.z[s], alphas[s], 1.75)
            np.testing.assert_allclose(cached[s].W, fresh.W, rtol=0, atol=1e-9)
            fresh_nuc = attention_svm_nuclear(data.X[s], data.z[s], alphas[s])
            assert nuc[s].objective == pytest.approx(fresh_nuc.objective, rel=1e-7)
    finally:
        core.REUSE_MAX_ENTRIES = limit
    assert not np.allclose(cached[0].W, cached[1].W)  # the data sets really differ


# ---------------------------------------------------------------- resumable pieces

_CALLS: list[int] = []


def _counting_piece(x: int):
    _CALLS.append(x)
    return {"y": np.array([x * 2])}, {"x": x}


def test_pieces_are_reused_on_rerun(tmp_path: Path):
    _CALLS.clear()
    pieces = [Piece("a", _counting_piece, {"x": 1}), Piece("b", _counting_piece, {"x": 2})]
    first = run_pieces(tmp_path, pieces[:1], "h1")  # "interrupted" after the first piece
    assert _CALLS == [1] and not first["a"].reused
    second = run_pieces(tmp_path, pieces, "h1")
    assert _CALLS == [1, 2]  # piece a was not recomputed
    assert second["a"].reused and second["a"].meta["computed_at"] == first["a"].meta["computed_at"]
    assert int(second["b"].arrays["y"][0]) == 4
    run_pieces(tmp_path, pieces, "h2")  # another config hash recomputes
    assert _CALLS == [1, 2, 1, 2]


def test_local_experiment_resumes_without_recomputing(tmp_path: Path):
    cfg = LocalConfig(ps=(1.75, 3.0), iterations=(40, 40), seeds=2, grid_points=8)
    s1 = run_local(cfg, tmp_path, progress=False, figures=False)
    pieces = sorted((tmp_path / "pieces").glob("*.json"))
    assert len(pieces) == 4
    stamps = {p.name: json.loads(p.read_text())["computed_at"] for p in pieces}
    s2 = run_local(cfg, tmp_path, progress=False, figures=False)
    assert s1["reused_pieces"] == [] and s2["reused_pieces"] == ["train_p1.75", "train_p3", "svm_p1.75", "svm_p3"]
    assert list(s2)[:3] == ["experiment", "config_hash", "ps"]
    assert (s2["experiment"], s2["ps"]) == ("local", [1.75, 3.0])
    assert json.loads((tmp_path / "summary.json").read_text())["reused_pieces"] == s2["reused_pieces"]
    assert all(p.name.endswith(f"-{s1['config_hash']}.json") for p in pieces)
    assert {p.name: json.loads(p.read_text())["computed_at"] for p in pieces} == stamps
    np.testing.assert_allclose(s1["final_mean_divergence"], s2["final_mean_divergence"])
    # the saved divergence of the W_0 = 0 run equals one recomputed from the saved iterate and SVM solution
    with np.load(tmp_path / "arrays.npz") as a:
        div = a["divergence_p1.75"]
        assert div.shape[1:] == (2, 3)  # (grid, p', seeds + zero-init run)
        svmW = a["svm_W_p3"][0, -1]  # the l_3-SVM for the p = 1.75 path's alpha of the zero-init run
        Wfin = a["zero_init_W_p1.75"][-1]
        assert div[-1, 1, -1] == pytest.approx(float(directional_bregman(svmW, Wfin, 1.75)), rel=1e-10)


@pytest.mark.slow
def test_workers_give_the_same_result(tmp_path: Path):
    cfg = JointConfig(ps=(2.0, 3.0), iterations=(30, 30), grid_points=10)
    a = run_joint(cfg, tmp_path / "one", progress=False, figures=False)
    b = run_joint(cfg, tmp_path / "two", workers=2, progress=False, figures=False)
    for k in a["per_p"]:
        assert a["per_p"][k]["final_divergence_W"] == pytest.approx(b["per_p"][k]["final_divergence_W"], rel=1e-12)


def test_kq_experiment_small(tmp_path: Path):
    """K/Q run: saved cosines equal ones recomputed from the saved final W and SVM solutions; for p = 2
    the l_p and l_2 targets coincide; the nuclear-norm solution beats the l_2 one in nuclear norm."""
    from mirrorattn.experiments.synthetic.kq import KQConfig, run_kq

    cfg = KQConfig(ps=(2.0, 3.0), iterations=40, seeds=2, grid_points=6)
    s = run_kq(cfg, tmp_path, progress=False, figures=False)
    assert set(s["per_run"]) == {"K/Q form, l_2-MD", "W form, l_2-MD", "svm p=2", "K/Q form, l_3-MD",
                                 "W form, l_3-MD", "svm p=3"}
    for t in ("2", "3"):
        assert all(c == {"optimal": 2} for c in s["per_run"][f"svm p={t}"]["status_counts"].values())
    assert s["reused_pieces"] == []
    with np.load(tmp_path / "arrays.npz") as a:
        for run in ("K/Q form, l_2-MD", "W form, l_2-MD", "K/Q form, l_3-MD", "W form, l_3-MD"):
            W, sols, corr = a[f"final_W_{run}"], a[f"svm_{run}"], a[f"corr_{run}"]
            if "l_2" in run:
                np.testing.assert_array_equal(sols[1], sols[2])
            else:
                assert not np.allclose(sols[1], sols[2])
            for j in range(3):
                for q in range(2):
                    direct = np.sum(W[q] * sols[j, q]) / (np.linalg.norm(W[q]) * np.linalg.norm(sols[j, q]))
                    assert corr[-1, j, q] == pytest.approx(direct, rel=1e-12)
            nuc = [np.linalg.svd(sols[j, 0], compute_uv=False).sum() for j in (0, 2)]
            assert nuc[0] <= nuc[1] * (1 + 1e-7)
        # the l_3 solution of the W-form run, solved independently for its final alpha
        from mirrorattn.models.attention import forward
        from mirrorattn.svm import attention_svm

        data = make_synthetic_batch(cfg.n, cfg.T, cfg.d, [1, 2])
        alpha = forward(data.X, data.z, a["final_W_W form, l_3-MD"], data.v).probs.argmax(axis=-1)
        ref = attention_svm(data.X[1], data.z[1], alpha[1], 3.0)
        np.testing.assert_allclose(a["svm_W form, l_3-MD"][1, 1], ref.W, atol=1e-9)
    assert run_kq(cfg, tmp_path, progress=False, figures=False)["reused_pieces"] == ["kq_p2", "kq_p3", "kq_svm"]


# ---------------------------------------------------------------- CLI


def test_cli_smoke(tmp_path: Path, capsys: pytest.CaptureFixture):
    from mirrorattn.cli import main

    rc = main(["synthetic", "joint", "--preset", "quick", "--out", str(tmp_path / "j"), "--iterations", "20",
               "--ps", "2", "3", "--no-progress", "--workers", "1"])
    assert rc == 0
    summary = json.loads((tmp_path / "j" / "summary.json").read_text())
    assert summary["ps"] == [2.0, 3.0] and (tmp_path / "j" / "joint.png").stat().st_size > 10_000
    assert "wrote" in capsys.readouterr().out
    rc = main(["synthetic", "joint", "--out", str(tmp_path / "x"), "--n", "3"])
    assert rc == 1
    assert "--n does not apply" in capsys.readouterr().err
    rc = main(["synthetic", "local", "--out", str(tmp_path / "y"), "--ps", "0.9"])
    assert rc == 1 and "ps must be" in capsys.readouterr().err


@pytest.mark.slow
def test_all_side_by_side_equals_one_by_one(tmp_path: Path):
    """``synthetic all --workers 2`` (experiments in two processes) writes the same numbers as --workers 1."""
    from mirrorattn.experiments.synthetic.cli import EXPERIMENTS, run_all

    small = {"local": {"seeds": 2, "iterations": (30,), "grid_points": 6}, "joint": {"iterations": (30,)},
             "regpath": {"seeds": 2, "radii": 3, "max_steps": 200}, "kq": {"seeds": 2, "iterations": 30}}
    finished = []
    for w in (1, 2):
        jobs = [(name, tmp_path / str(w) / name, None, small[name]) for name in EXPERIMENTS]
        out = run_all(jobs, "quick", w, progress=False, figures=False, done=lambda name, *_: finished.append(name))
        assert list(out) == list(EXPERIMENTS)
    assert sorted(finished) == sorted(2 * list(EXPERIMENTS))
    for name in EXPERIMENTS:
        with np.load(tmp_path / "1" / name / "arrays.npz") as a, np.load(tmp_path / "2" / name / "arrays.npz") as b:
            assert set(a.files) == set(b.files)
            for k in a.files:
                if a[k].dtype.kind == "f":  # kq's nuclear-norm solutions are not polished: solver accuracy
                    np.testing.assert_allclose(a[k], b[k], rtol=1e-12, atol=1e-5 if name == "kq" else 1e-14,
                                               err_msg=f"{name}: {k}")
                else:
                    np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}: {k}")


# ---------------------------------------------------------------- the checks (quick preset)


@pytest.fixture(scope="module")
def quick_local(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("local")
    cfg = build_config(LocalConfig, preset("quick", "local"))
    return run_local(cfg, out, progress=False), out


@pytest.mark.slow
def test_local_matrix_is_diagonal_dominant_and_decreasing(quick_local):
    s, out = quick_local
    m = np.array(s["final_mean_divergence"], dtype=float)
    for i in range(m.shape[0]):
        assert np.argmin(m[i]) == i, f"row {i} of {m}"
    first = np.array(s["mean_divergence_first_third"], dtype=float)
    last = np.array(s["mean_divergence_last_third"], dtype=float)
    assert np.all(np.diag(last) < 0.5 * np.diag(first))
    assert all(c.get("optimal", 0) == 9 for row in s["svm_status_counts"].values() for c in row.values())
    for name in ("local_divergence.png", "local_path.png", "summary.json", "config.json", "arrays.npz"):
        assert (out / name).is_file()


@pytest.mark.slow
def test_joint_saturates_and_converges_in_direction(tmp_path: Path):
    cfg = build_config(JointConfig, preset("quick", "joint"))
    s = run_joint(cfg, tmp_path, progress=False)
    for k, r in s["per_p"].items():
        assert r["final_max_softmax_prob"] > 0.99, k
        assert r["mean_divergence_W_last_third"] < 0.5 * r["mean_divergence_W_first_third"], k
        assert r["mean_divergence_v_last_third"] < 0.5 * r["mean_divergence_v_first_third"], k
        assert r["W_moved_after_first_step"]
        # independent check of the saved final divergence
        W, Wm = np.array(r["final_W"]), np.array(r["svm_W"])
        assert r["final_divergence_W"] == pytest.approx(
            float(directional_bregman(Wm, W, float(k[1:]))), rel=1e-9)


@pytest.mark.slow
def test_regpath_divergence_decreases_with_radius(tmp_path: Path):
    from mirrorattn.experiments.synthetic.regpath import run_regpath

    cfg = build_config(RegPathConfig, preset("quick", "regpath"))
    s = run_regpath(cfg, tmp_path, progress=False)
    for k, r in s["per_p"].items():
        m = np.array(r["mean_divergence_by_radius"], dtype=float)
        assert m[-1] < 0.5 * m[0], k
        assert np.mean(m[len(m) // 2 :]) < np.mean(m[: len(m) // 2]), k
        assert r["unconverged_solves"] == 0, k
    assert time.time() > 0


# ---------------------------------------------------------------- issue 12: config checks and wording


@pytest.mark.parametrize("field,value,message", [
    ("seeds", 0, "seeds must be a positive integer (>= 1), got 0"),  # the old text said "(T >= 2)"
    ("T", 1, "T must be an integer >= 2, got 1"),
    ("n", 2.5, "n must be a positive integer (>= 1), got 2.5"),  # int(2.5) passed before
    ("grid_points", True, "grid_points must be a positive integer (>= 1), got True"),
    ("first_seed", -1, "first_seed must be an integer >= 0, got -1"),
    ("init_scale", float("nan"), "init_scale must be a finite number >= 0, got nan"),
    ("eta", float("inf"), "eta (step size) must be a finite number > 0, got inf"),
    ("eps", float("nan"), "eps (added to the dual norm) must be a finite number > 0, got nan"),
    ("eps", 0.0, "eps (added to the dual norm) must be a finite number > 0, got 0.0"),  # 0 / 0 at a zero gradient
    ("iterations", (10, 2.5, 30), "iterations (one count per p) must be a positive integer (>= 1), got 2.5"),
])
def test_local_config_messages_name_the_field_and_the_right_bound(field, value, message):
    with pytest.raises(ValueError) as info:
        LocalConfig(**{field: value})
    assert str(info.value) == message


def test_other_configs_validate_their_fields():
    from mirrorattn.experiments.synthetic.kq import KQConfig

    with pytest.raises(ValueError, match=r"^init_scale must be a finite number >= 0, got nan"):
        JointConfig(init_scale=float("nan"))  # NaN passed "init_scale < 0" before: NaN weights
    with pytest.raises(ValueError, match=r"^seed must be an integer >= 0"):
        JointConfig(seed=-3)
    with pytest.raises(ValueError, match=r"^radii must be an integer >= 2, got 1"):
        RegPathConfig(radii=1)
    with pytest.raises(ValueError, match=r"^r_max must be a finite number > 0, got inf"):
        RegPathConfig(r_max=float("inf"))
    with pytest.raises(ValueError, match=r"^eta0 \(initial relative step size\) must be a finite number > 0"):
        RegPathConfig(eta0=0.0)
    with pytest.raises(ValueError, match=r"^iterations must be a positive integer"):
        KQConfig(iterations=0)
    # an unknown solver failed every SVM solve, each recorded as 'failed', and the run "succeeded"
    for cls in (LocalConfig, JointConfig, RegPathConfig, KQConfig):
        with pytest.raises(ValueError, match=r"^svm_solver: solver 'nosuch' is not installed"):
            cls(svm_solver="nosuch")


@pytest.mark.parametrize("ps", [(1e6,), (2.0, 2049.0), (1.0001,)])
def test_ps_outside_the_solvers_range_is_refused(ps):
    for cls in (LocalConfig, JointConfig, RegPathConfig):
        with pytest.raises(ValueError, match=r"^ps = .* is outside \[1.001, 100\]"):
            cls(ps=ps)
    with pytest.raises(ValueError, match=r"^ps must be a list of exponents"):
        LocalConfig(ps="1.75")


def test_cli_ps_out_of_range_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    from mirrorattn.cli import main

    out = tmp_path / "loc"
    assert main(["synthetic", "local", "--preset", "quick", "--out", str(out), "--ps", "1e6", "--no-progress",
                 "--workers", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "outside [1.001, 100]" in err and "Traceback" not in err
    assert not out.exists()


def test_all_config_tables_are_read_from_the_file_itself(tmp_path) -> None:
    # synthetic all reads each experiment's table of the user's file (no rewritten copy): quoted strings kept
    from mirrorattn.config import ConfigError, build_config
    from mirrorattn.experiments.synthetic.cli import _check_all_tables

    cfg = tmp_path / "all.toml"
    cfg.write_text('[local]\nsvm_solver = \'a"b\\\\n\'\nps = [1.75, 2.0, 3.0]\nnormalized = true\n'
                   '[kq]\nseeds = 2\n', encoding="utf-8")
    _check_all_tables(cfg)
    with pytest.raises(ValueError, match="svm_solver"):  # the odd solver name arrives as written, then is refused
        build_config(LocalConfig, None, cfg, None, section="local")
    (tmp_path / "bad.toml").write_text("[nonsense]\nx = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="must hold tables"):
        _check_all_tables(tmp_path / "bad.toml")


def test_kq_iterations_may_be_one_count_per_p() -> None:
    from mirrorattn.config import build_config
    from mirrorattn.experiments.synthetic.kq import KQConfig

    assert build_config(KQConfig, None, None, {"iterations": (30, 30)}).iterations == 30
