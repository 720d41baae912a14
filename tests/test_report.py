"""The report's claims and verdicts, checked on hand-made result folders (independent numbers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mirrorattn.io import write_json
from mirrorattn.report import build_report, collect_claims
from mirrorattn.report.claims_base import NOT_REPRODUCED, NOT_RUN, REPRODUCED, Claim


def _local(root: Path, matrix, first, last) -> None:
    ps = [1.75, 2.0, 3.0]
    write_json(root / "synthetic" / "local" / "summary.json", {
        "ps": ps, "final_mean_divergence": matrix, "mean_divergence_first_third": first,
        "mean_divergence_last_third": last, "share_globally_optimal_alpha": {"p1.75": 0.5},
        "share_locally_optimal_alpha": {"p1.75": 0.9}, "figures": []})


def _eye(diag: float, off: float) -> list[list[float]]:
    return [[diag if i == j else off for j in range(3)] for i in range(3)]


def _claims(root: Path) -> dict[str, Claim]:
    return {c.key: c for c in collect_claims(root)}


def test_empty_folder_every_claim_not_run(tmp_path: Path) -> None:
    claims = _claims(tmp_path)
    assert claims and all(c.verdict == NOT_RUN for c in claims.values())
    text = build_report(tmp_path).read_text()
    assert text.count("**Verdict: not run.**") == len(claims)


def test_local_verdict_follows_the_rule(tmp_path: Path) -> None:
    _local(tmp_path, _eye(0.01, 0.05), _eye(0.9, 0.9), _eye(0.1, 0.2))
    assert _claims(tmp_path)["local"].verdict == REPRODUCED
    # one row whose smallest entry is off the diagonal
    m = _eye(0.01, 0.05)
    m[2][0] = 0.001
    _local(tmp_path, m, _eye(0.9, 0.9), _eye(0.1, 0.2))
    assert _claims(tmp_path)["local"].verdict == NOT_REPRODUCED
    # diagonal smallest, but the divergence did not halve along the run
    _local(tmp_path, _eye(0.01, 0.05), _eye(0.9, 0.9), _eye(0.6, 0.7))
    assert _claims(tmp_path)["local"].verdict == NOT_REPRODUCED


def _text(root: Path, dataset: str, acc: dict[str, tuple[float, float]], entropy: dict[str, float] | None = None,
          probe: dict[str, float] | None = None, counts: dict[str, tuple[int, int, int]] | None = None,
          stops: list[str] | None = None, stop_train_acc: float | None = None) -> None:
    agg = {}
    for opt, (m, s) in acc.items():
        row = {"lr": 1e-2, "test_acc": {"mean": m, "std": s, "n": 3}, "test_acc_last": {"mean": m, "std": s, "n": 3}}
        if entropy:
            row["cls_entropy_last"] = {"mean": entropy[opt], "std": 0.0, "n": 3}
            row["cls_max_prob_last"] = {"mean": 0.5, "std": 0.0, "n": 3}
        if probe:
            row["probe_score"] = {"mean": probe[opt], "std": 0.01, "n": 3}
            row["probe_other"] = {"mean": 0.3, "std": 0.01, "n": 3}
        if counts:
            for k, c in zip("qkv", counts[opt]):
                row[f"{k}_count_above"] = {"mean": c, "std": 0.0, "n": 3}
                row[f"{k}_hoyer"] = {"mean": 0.1, "std": 0.0, "n": 3}
        row["epochs_run"] = {"mean": 40.0, "std": 0.0, "n": 3}
        agg[opt] = row
    runs = {opt: [{"stop_reason": r} for r in (stops or [])] for opt in acc}
    write_json(root / "text" / dataset / "results.json",
               {"config": {"blocks": 3, "width": 64, "pooling": "mean", "max_length": 256, "epochs": 300,
                           "stop_train_acc": stop_train_acc, "init": "torch"},
                "data": {"n_train": 1800, "n_val": 200, "n_test": 2133}, "aggregate": agg, "runs": runs})


def test_accuracy_claim_needs_a_margin_over_the_spread(tmp_path: Path) -> None:
    _text(tmp_path, "imdb", {"lp-md:1.1": (0.84, 0.004), "lp-md:2": (0.82, 0.005)})
    c = _claims(tmp_path)["accuracy-imdb"]
    assert c.verdict == REPRODUCED
    assert "83.47 %" in "\n".join(c.body)  # the paper's number beside ours (3 blocks)
    _text(tmp_path, "imdb", {"lp-md:1.1": (0.84, 0.03), "lp-md:2": (0.82, 0.005)})
    assert _claims(tmp_path)["accuracy-imdb"].verdict == NOT_REPRODUCED  # 2 points < 3-point spread
    _text(tmp_path, "imdb", {"lp-md:1.1": (0.84, 0.0), "adam": (0.85, 0.0)})
    assert _claims(tmp_path)["accuracy-imdb"].verdict == NOT_RUN  # no gradient-descent baseline


def test_token_selection_and_weight_sparsity(tmp_path: Path) -> None:
    _text(tmp_path, "polarity", {"lp-md:1.1": (0.7, 0.0), "sgd": (0.7, 0.0)},
          entropy={"lp-md:1.1": 1.0, "sgd": 2.0}, probe={"lp-md:1.1": 0.5, "sgd": 0.4},
          counts={"lp-md:1.1": (10, 10, 10), "sgd": (20, 20, 20)})
    claims = _claims(tmp_path)
    assert claims["token-selection"].verdict == REPRODUCED
    assert claims["token-selection"].numbers["dataset"] == "polarity"
    assert claims["weight-sparsity"].verdict == REPRODUCED
    _text(tmp_path, "polarity", {"lp-md:1.1": (0.7, 0.0), "sgd": (0.7, 0.0)},
          entropy={"lp-md:1.1": 1.0, "sgd": 2.0}, probe={"lp-md:1.1": 0.3, "sgd": 0.4},
          counts={"lp-md:1.1": (30, 10, 10), "sgd": (20, 10, 10)})
    claims = _claims(tmp_path)
    assert claims["token-selection"].verdict == NOT_REPRODUCED
    assert claims["weight-sparsity"].verdict == NOT_REPRODUCED


def test_token_selection_judges_the_weights_where_training_stopped(tmp_path: Path) -> None:
    """With ``stop_*`` statistics (``analysis_stop``) for both optimizers the verdict is theirs, not the
    validation-best weights'; without them it falls back to the latter."""
    _text(tmp_path, "polarity", {"lp-md:1.1": (0.7, 0.0), "sgd": (0.7, 0.0)},
          entropy={"lp-md:1.1": 1.0, "sgd": 2.0}, probe={"lp-md:1.1": 0.5, "sgd": 0.4})
    assert _claims(tmp_path)["token-selection"].verdict == REPRODUCED
    path = tmp_path / "text" / "polarity" / "results.json"
    res = json.loads(path.read_text())
    for opt, (ent, probe) in {"lp-md:1.1": (2.5, 0.5), "sgd": (2.0, 0.4)}.items():
        row = res["aggregate"][opt]
        row.update(stop_cls_entropy_last={"mean": ent, "std": 0.0, "n": 3}, stop_probe_score={"mean": probe, "std": 0.0,
                   "n": 3}, stop_cls_max_prob_last={"mean": 0.4, "std": 0.0, "n": 3})
    write_json(path, res)
    c = _claims(tmp_path)["token-selection"]
    assert c.verdict == NOT_REPRODUCED and c.numbers["weights"] == "stop"
    assert c.numbers["entropy"] == {"lp-md:1.1": 2.5, "sgd": 2.0}
    body = "\n".join(c.body)
    assert "where training stopped" in body
    assert "| lp-md:1.1 | 2.500 | 0.400 | 0.500 ± 0.000 | - | 1.000 | 0.500 |" in body  # the val-best's beside


def test_report_json_matches_markdown(tmp_path: Path) -> None:
    _local(tmp_path, _eye(0.01, 0.05), _eye(0.9, 0.9), _eye(0.1, 0.2))
    md = build_report(tmp_path).read_text()
    data = json.loads((tmp_path / "report.json").read_text())
    for c in data["claims"]:
        assert f"## {c['title']}" in md
        assert f"**Verdict: {c['verdict']}.**" in md
    assert data["verdicts"]["local"] == REPRODUCED


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="mirrorattn reproduce"):
        collect_claims(tmp_path / "nope")


def test_a_baseline_that_always_diverged_is_not_a_comparison(tmp_path: Path) -> None:
    _text(tmp_path, "imdb", {"lp-md:1.1": (0.84, 0.004), "lp-md:2": (0.82, 0.005)})
    path = tmp_path / "text" / "imdb" / "results.json"
    data = json.loads(path.read_text())
    data["aggregate"]["lp-md:2"]["test_acc"] = {"mean": None, "std": None, "n": 0}
    write_json(path, data)
    c = _claims(tmp_path)["accuracy-imdb"]
    assert c.verdict == NOT_RUN and "diverged" in c.note and "lp-md:2" in c.note


@pytest.mark.parametrize("where", ["text/imdb/results.json", "synthetic/local/summary.json", "reproduce.json"])
@pytest.mark.parametrize("content, why", [("", "not JSON"), ("[1, 2]", "holds a JSON array, expected a JSON object")])
def test_a_damaged_results_file_is_named_in_one_line(tmp_path: Path, capsys, where, content, why) -> None:
    from mirrorattn.cli import main

    path = tmp_path / where
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    with pytest.raises(ValueError, match=why) as err:
        build_report(tmp_path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert main(["report", str(tmp_path)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and why in lines[0]


def test_each_real_data_claim_states_its_regime(tmp_path: Path) -> None:
    """Issue 14, item 6: a claim says whether its runs reached the authors' stopping rule or trained briefly."""
    rule, cap = "train_acc 0.9960 >= 0.995", "max_epochs"
    _text(tmp_path, "polarity", {"lp-md:1.1": (0.7, 0.0), "lp-md:2": (0.6, 0.0)},
          entropy={"lp-md:1.1": 1.0, "lp-md:2": 2.0}, probe={"lp-md:1.1": 0.5, "lp-md:2": 0.4},
          stops=[rule, rule, cap], stop_train_acc=0.995)
    claims = _claims(tmp_path)
    for key in ("accuracy-polarity", "token-selection"):
        body = "\n".join(claims[key].body)
        # 2 optimizers x (2 of 3 runs at the rule)
        assert "trained to 99.5 % training accuracy (the authors' stopping rule, at most 300 epochs), init torch: " \
               "4 of 6 runs reached it - the others stopped at the epoch cap" in body, body
        assert "1800 train / 200 validation / 2133 test" in body or key == "token-selection"
    _text(tmp_path, "polarity", {"lp-md:1.1": (0.7, 0.0), "lp-md:2": (0.6, 0.0)}, stops=[cap], stop_train_acc=None)
    body = "\n".join(_claims(tmp_path)["accuracy-polarity"].body)
    assert "Regime: short training - 300 epochs, no stopping rule" in body and "not the paper's regime" in body


def test_short_training_results_are_a_separate_section_without_verdicts(tmp_path: Path) -> None:
    _text(tmp_path, "imdb-quick", {"lp-md:1.1": (0.78, 0.01), "lp-md:2": (0.81, 0.01)}, stops=["max_epochs"],
          stop_train_acc=0.995)
    claims = _claims(tmp_path)
    assert claims["accuracy-imdb"].verdict == NOT_RUN  # a short-training folder is no verdict on the paper
    md = build_report(tmp_path).read_text()
    section = md[md.index("## Short-training comparisons"):]
    assert "### text/imdb-quick" in section and "78.0 ± 1.0 %" in section
    assert "0 of 2 runs reached it" in section
    assert "Verdict" not in section


def test_vision_setup_line_reads_the_vision_sizes(tmp_path: Path) -> None:
    """Issue 14, item 5: the report said "data None train / None validation / None test" for vision."""
    agg = {o: {"lr": 1e-3, "test_acc": {"mean": 0.9, "std": 0.0, "n": 2}} for o in ("lp-md:1.1", "adam")}
    write_json(tmp_path / "vision" / "digits" / "results.json",
               {"config": {"depth": 2, "width": 64, "patch": 2, "epochs": 10, "stop_train_acc": None},
                "data": {"sizes": {"train": 1293, "val": 144, "test": 360}}, "aggregate": agg, "runs": {}})
    body = "\n".join(_claims(tmp_path)["vision-digits"].body)
    assert "data 1293 train / 144 validation / 360 test" in body and "None" not in body


def test_token_selection_prefers_the_comparison_trained_to_the_rule(tmp_path: Path) -> None:
    rule = "train_acc 0.9960 >= 0.995"
    _text(tmp_path, "imdb", {"lp-md:1.1": (0.8, 0.0), "lp-md:2": (0.8, 0.0)},
          entropy={"lp-md:1.1": 1.0, "lp-md:2": 2.0}, probe={"lp-md:1.1": 0.5, "lp-md:2": 0.4}, stops=["max_epochs"],
          stop_train_acc=0.995)
    _text(tmp_path, "polarity", {"lp-md:1.1": (0.7, 0.0), "lp-md:2": (0.6, 0.0)},
          entropy={"lp-md:1.1": 3.0, "lp-md:2": 2.0}, probe={"lp-md:1.1": 0.5, "lp-md:2": 0.4}, stops=[rule],
          stop_train_acc=0.995)
    c = _claims(tmp_path)["token-selection"]
    assert c.numbers["dataset"] == "polarity" and c.verdict == NOT_REPRODUCED


def test_optimal_token_claim_needs_a_margin_over_the_spread(tmp_path: Path) -> None:
    """Issue 15, item 4: l_1.1-MD's optimal-token share against GD's, with the rule written in claims.toml."""
    assert _claims(tmp_path)["optimal-token"].verdict == NOT_RUN
    rule = "train_acc 0.9960 >= 0.995"
    _text(tmp_path, "polarity", {"lp-md:1.1": (0.7, 0.0), "lp-md:2": (0.6, 0.0)}, stops=[rule], stop_train_acc=0.995)
    c = _claims(tmp_path)["optimal-token"]
    assert c.verdict == NOT_RUN and "optimal-token share" in c.note  # older results: no share measured
    path = tmp_path / "text" / "polarity" / "results.json"
    cases = (((0.30, 0.02), (0.10, 0.03)), REPRODUCED), (((0.12, 0.05), (0.10, 0.01)), NOT_REPRODUCED)
    for shares, expect in cases:
        data = json.loads(path.read_text())
        for opt, (m, s) in zip(("lp-md:1.1", "lp-md:2"), shares):
            data["aggregate"][opt]["optimal_token_share"] = {"mean": m, "std": s, "n": 3}
            data["aggregate"][opt]["optimal_token_chance"] = {"mean": 0.04, "std": 0.0, "n": 3}
        write_json(path, data)
        c = _claims(tmp_path)["optimal-token"]
        assert c.verdict == expect and c.numbers["dataset"] == "polarity"
        assert "Regime: trained to 99.5 %" in "\n".join(c.body)


def _direction(root: Path, last: dict[str, dict[str, float]], first: dict[str, float], dataset: str = "polarity",
               ps: tuple[str, ...] = ("1.1", "2", "3")) -> None:
    """A comparison's token_selection.json: per optimizer the mean divergence at the last snapshot to each p's
    W_mm and at the first snapshot to its own (``first``; others at 1.0)."""
    def block(value: float) -> dict[str, float]:
        return {"directional_bregman": {"mean": value, "std": 0.01, "n": 3}, "cosine": {"mean": 0.5, "std": 0.0}}

    opts = {opt: {"trend": {"epochs": [0, 1, 2], "p": {p: {} for p in ps},
                            "first": {p: block(first.get(opt, 1.0) if p == opt.split(":")[-1] else 1.0) for p in ps},
                            "last": {p: block(row[p]) for p in ps}}} for opt, row in last.items()}
    write_json(root / "text" / dataset / "token_selection.json", {"optimizers": opts, "ps": list(ps)})


def test_attsvm_direction_claim_follows_the_rule(tmp_path: Path) -> None:
    """Issue 15, item 4: each geometry's own optimizer ends nearest its AttSVM direction (columns compared), and
    nearer than it started; the rule written in claims.toml."""
    key = "attsvm-direction"
    assert _claims(tmp_path)[key].verdict == NOT_RUN
    opts = ("lp-md:1.1", "lp-md:2", "lp-md:3")
    _text(tmp_path, "polarity", {o: (0.7, 0.0) for o in opts}, stops=["max_epochs"], stop_train_acc=0.995)
    c = _claims(tmp_path)[key]
    assert c.verdict == NOT_RUN and "--trend" in c.note  # no trend results yet
    # l_2-MD's own row is smallest at p = 1.1 (the l_1.1 divergences run smaller): the rule compares columns
    diagonal = {"lp-md:1.1": {"1.1": 0.1, "2": 0.5, "3": 0.6}, "lp-md:2": {"1.1": 0.15, "2": 0.2, "3": 0.5},
                "lp-md:3": {"1.1": 0.4, "2": 0.4, "3": 0.3}}
    first = {o: 0.9 for o in opts}
    _direction(tmp_path, diagonal, first)
    c = _claims(tmp_path)[key]
    assert c.verdict == REPRODUCED and c.numbers["dataset"] == "polarity" and "Regime:" in "\n".join(c.body)
    assert c.numbers["divergence_last"]["lp-md:2"]["2"] == 0.2
    swapped = {**diagonal, "lp-md:2": {"1.1": 0.05, "2": 0.2, "3": 0.5}}  # l_2-MD nearer the l_1.1 W_mm than l_1.1-MD
    _direction(tmp_path, swapped, first)
    assert _claims(tmp_path)[key].verdict == NOT_REPRODUCED
    _direction(tmp_path, diagonal, {**first, "lp-md:3": 0.2})  # l_3-MD moved away from its W_mm (0.2 -> 0.3)
    assert _claims(tmp_path)[key].verdict == NOT_REPRODUCED
    _direction(tmp_path, {o: diagonal[o] for o in ("lp-md:1.1", "lp-md:2")}, first)  # without l_3-MD: its check goes
    assert _claims(tmp_path)[key].verdict == REPRODUCED
    _direction(tmp_path, {"lp-md:1.1": diagonal["lp-md:1.1"]}, first)  # no gradient descent
    c = _claims(tmp_path)[key]
    assert c.verdict == NOT_RUN and "gradient descent" in c.note
    _direction(tmp_path, {o: {"1.1": diagonal[o]["1.1"], "3": diagonal[o]["3"]} for o in opts}, first, ps=("1.1", "3"))
    c = _claims(tmp_path)[key]
    assert c.verdict == NOT_RUN and "--ps" in c.note  # the trend lacks gradient descent's own p = 2
