"""Claims checked on the real-data experiments (``<root>/text/<dataset>``, ``<root>/vision/<dataset>``).

Each reads the experiment's ``results.json`` (per-optimizer mean and std over seeds); the AttSVM-direction
claim also its ``token_selection.json`` (``mirrorattn analyse OUT --trend``). l_1.1-MD is
``lp-md:1.1``; gradient descent is ``lp-md:2`` (exactly SGD without momentum), or ``sgd`` when that
was not run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mirrorattn.io import read_json
from mirrorattn.paper import IMDB_ACCURACY, PROBE_SCORE, QKV_COUNTS
from mirrorattn.report.claims_base import (
    NOT_RUN,
    Claim,
    claim_text,
    fmt,
    judge_rows,
    load_claim,
    pct,
    rel,
    table,
    verdict,
)

LP = "lp-md:1.1"
GD_NAMES = ("lp-md:2", "sgd")



def _results(root: Path, kind: str, dataset: str) -> tuple[dict[str, Any] | None, Path]:
    folder = root / kind / dataset
    path = folder / "results.json"
    return (read_json(path, expect=dict) if path.is_file() else None), folder


def _claim_on(root: Path, name: str, kind: str, dataset: str, stand_in: bool) -> tuple[Claim, Any, Path]:
    """Claim ``name`` for ``dataset``, the results in ``<root>/<kind>/<dataset>`` (None, with what to run as the
    claim's note, when there are none) and that folder."""
    folder = root / kind / dataset
    c, res = load_claim(claim_text(name, stand_in=stand_in, dataset=dataset), folder / "results.json")
    return c, res, folder


def _split_sizes(data: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(train, validation, test) sizes from a results.json ``data`` record: text writes ``n_train`` ...,
    vision ``sizes: {train, val, test}``; "?" where neither is there."""
    sizes = data.get("sizes") or {}
    return tuple(data.get(f"n_{s}", sizes.get(s, "?")) for s in ("train", "val", "test"))


def _setup(model: str, data: dict[str, Any]) -> str:
    """The line saying what was trained on what."""
    n_train, n_val, n_test = _split_sizes(data)
    return (f"{model}; data {n_train} train / {n_val} validation / {n_test} "
            "test. Mean ± std over seeds; model selection on validation.")


def _stop_rule_counts(res: dict[str, Any]) -> tuple[int, int]:
    """(runs that stopped by reaching the training-accuracy rule, all runs) of a results.json."""
    runs = [r for rs in (res.get("runs") or {}).values() for r in rs]
    return sum(str(r.get("stop_reason") or "").startswith("train_acc") for r in runs), len(runs)


def _rule_fraction(res: dict[str, Any]) -> float:
    reached, total = _stop_rule_counts(res)
    return reached / total if total and res.get("config", {}).get("stop_train_acc") else 0.0


def regime(res: dict[str, Any]) -> str:
    """One line saying how long the runs of a results.json trained: to the authors' stopping rule (the
    paper's regime, with how many runs reached it and the epochs they took) or a short, fixed budget."""
    cfg, agg = res.get("config") or {}, res.get("aggregate") or {}
    stop, cap, init = cfg.get("stop_train_acc"), cfg.get("epochs"), cfg.get("init", "normal")
    reached, total = _stop_rule_counts(res)
    epochs = ", ".join(f"{opt} {_stat(row, 'epochs_run')[0]:.0f}" for opt, row in agg.items()
                       if _stat(row, "epochs_run")[0] is not None)
    if stop is None:
        return (f"Regime: short training - {cap} epochs, no stopping rule, init {init}; not the paper's regime "
                f"(the authors train to 99.5 % training accuracy). Epochs: {epochs}.")
    head = (f"Regime: trained to {100 * float(stop):.1f} % training accuracy (the authors' stopping rule, at most "
            f"{cap} epochs), init {init}: {reached} of {total} runs reached it")
    if reached < total:
        head += " - the others stopped at the epoch cap or diverged, so those are short of the paper's regime"
    return f"{head}. Mean epochs run: {epochs}."


def _stat(row: dict[str, Any], key: str) -> tuple[float | None, float | None]:
    s = row.get(key) or {}
    return s.get("mean"), s.get("std")


def _gd(agg: dict[str, Any]) -> str | None:
    return next((g for g in GD_NAMES if g in agg), None)


def _diverged(agg: dict[str, Any], opts: tuple[str | None, ...]) -> str:
    """A note naming the optimizers of ``opts`` whose every run diverged (no finite test accuracy), or ''."""
    bad = [o for o in opts if o is not None and o in agg and not (agg[o].get("test_acc") or {}).get("n")]
    if not bad:
        return ""
    steps = ", ".join(f"{o} (lr {agg[o].get('lr')})" for o in bad)
    return (f"every run of {steps} diverged, so there is nothing to compare; choose the step size on validation "
            "with `mirrorattn text-sweep` and run again")


def _figs(folder: Path, root: Path, names: tuple[str, ...]) -> list[str]:
    return [rel(folder / n, root) for n in names if (folder / n).is_file()]


def _accuracy_table(agg: dict[str, Any], paper: dict[str, float]) -> list[str]:
    """Test accuracy of every optimizer (val-best and last epoch), the paper's beside it where published."""
    rows = []
    for opt, row in agg.items():
        n = (row.get("test_acc") or {}).get("n", "-")
        rows.append([opt, fmt(row.get("lr"), 4), pct(*_stat(row, "test_acc")), pct(*_stat(row, "test_acc_last")),
                     f"{paper[opt]:.2f} %" if opt in paper else "-", n])
    return table(["optimizer", "lr", "test acc (val-best)", "test acc (last)", "paper", "seeds"], rows)


def _beats(agg: dict[str, Any], a: str, b: str, key: str = "test_acc") -> tuple[bool, dict[str, Any]]:
    """a's mean exceeds b's by more than the larger of the two seed standard deviations."""
    ma, sa = _stat(agg[a], key)
    mb, sb = _stat(agg[b], key)
    if ma is None or mb is None:
        return False, {}
    margin = max(sa or 0.0, sb or 0.0)
    return (ma - mb) > margin, {"a": a, "b": b, "mean_a": ma, "mean_b": mb, "margin": margin}


def text_accuracy_claim(root: Path, dataset: str = "imdb") -> Claim:
    stand_in = dataset != "imdb"
    c, res, folder = _claim_on(root, "accuracy", "text", dataset, stand_in)
    if res is None:
        return c
    agg, cfg = res["aggregate"], res.get("config", {})
    gd = _gd(agg)
    blocks = int(cfg.get("blocks", 3) or 3)
    paper = IMDB_ACCURACY.get(blocks, {}) if not stand_in else {}
    if LP in agg and gd and _diverged(agg, (LP, gd)):
        c.note = _diverged(agg, (LP, gd))
        return c
    if LP in agg and gd:
        ok, c.numbers = _beats(agg, LP, gd)
        c.verdict = verdict(ok)
    else:
        c.note = f"needs both {LP} and gradient descent ({' or '.join(GD_NAMES)}) in the comparison"
        c.verdict = NOT_RUN
        return c
    c.body.append(_setup(f"Model: {cfg.get('blocks')} block(s), width {cfg.get('width')}, pooling "
                         f"{cfg.get('pooling')}, max length {cfg.get('max_length')}", res.get("data", {})))
    c.body.append("")
    c.body.append(regime(res))
    c.body.append("")
    c.body += _accuracy_table(agg, paper)
    best = max(agg, key=lambda o: _stat(agg[o], "test_acc")[0] or 0.0)
    c.body.append("")
    c.body.append(f"Best optimizer here: {best} ({pct(*_stat(agg[best], 'test_acc'))}).")
    c.figures = _figs(folder, root, ("curves.png",))
    return c


def token_selection_claim(root: Path) -> Claim:
    text = claim_text("token-selection")
    c = text.claim()
    nearest = _nearest_text(root)
    if nearest is None:
        c.note = text.missing
        return c
    dataset, res, folder = nearest
    agg = res["aggregate"]
    gd = _gd(agg)
    if LP not in agg or gd is None:
        c.note = f"needs {LP} and gradient descent in the text comparison"
        return c
    if _diverged(agg, (LP, gd)):
        c.note = _diverged(agg, (LP, gd))
        return c
    # the weights where training stopped (the paper's trained models) when every run has their analysis
    at = "stop_" if all(_stat(agg[o], f"stop_{k}")[0] is not None for o in (LP, gd)
                        for k in ("cls_entropy_last", "probe_score")) else ""
    ent_lp, ent_gd = _stat(agg[LP], at + "cls_entropy_last")[0], _stat(agg[gd], at + "cls_entropy_last")[0]
    pr_lp, pr_gd = _stat(agg[LP], at + "probe_score")[0], _stat(agg[gd], at + "probe_score")[0]
    if None in (ent_lp, ent_gd, pr_lp, pr_gd):
        c.note = "the runs have no attention analysis"
        return c
    c.verdict = verdict(ent_lp < ent_gd and pr_lp > pr_gd)
    c.numbers = {"dataset": dataset, "weights": "stop" if at else "validation-best",
                 "entropy": {LP: ent_lp, gd: ent_gd}, "probe": {LP: pr_lp, gd: pr_gd}}
    rows = [[opt, fmt(_stat(row, at + "cls_entropy_last")[0]), fmt(_stat(row, at + "cls_max_prob_last")[0]),
             f"{fmt(_stat(row, at + 'probe_score')[0])} ± {fmt(_stat(row, at + 'probe_score')[1])}",
             fmt(_stat(row, at + "probe_other")[0]), fmt(_stat(row, "cls_entropy_last")[0]),
             fmt(_stat(row, "probe_score")[0]), fmt(PROBE_SCORE.get(opt))] for opt, row in agg.items()]
    which = ("the weights where training stopped (the paper analyses its models as trained to the rule; the "
             "validation-best weights' figures beside them)" if at else "the validation-best weights")
    c.body.append(f"Data set: {dataset}. [CLS]-row attention of the last layer on test sequences (real tokens only); "
                  "probe: mean min-max-scaled attention on the sentiment word of each probe sentence "
                  f"(probe other = the mean on the other words). Of {which}.")
    c.body.append("")
    c.body.append(regime(res))
    c.body.append("")
    c.body += table(["optimizer", "[CLS] entropy (nats)", "[CLS] max prob", "probe score", "probe other",
                     "entropy, val-best", "probe, val-best", "paper"], rows)
    c.figures = _figs(folder, root, ("attention_maps.png",))
    return c


def _nearest_text(root: Path) -> tuple[str, dict[str, Any], Path] | None:
    """(dataset, results, folder) of the text comparison nearest the paper's regime (most runs at the stopping
    rule; IMDb on a tie), or None when no text comparison ran."""
    found = [(dataset, *_results(root, "text", dataset)) for dataset in ("imdb", "polarity")]
    found = [f for f in found if f[1] is not None]
    return max(found, key=lambda f: (_rule_fraction(f[1]), f[0] == "imdb")) if found else None


def optimal_token_claim(root: Path) -> Claim:
    text = claim_text("optimal-token")
    c = text.claim()
    nearest = _nearest_text(root)
    agg = nearest[1]["aggregate"] if nearest else {}
    gd = _gd(agg)
    if LP not in agg or gd is None or _stat(agg[LP], "optimal_token_share")[0] is None \
            or _stat(agg[gd], "optimal_token_share")[0] is None:
        c.note = text.missing
        return c
    dataset, res, _ = nearest
    ok, c.numbers = _beats(agg, LP, gd, "optimal_token_share")
    c.verdict = verdict(ok)
    c.numbers["dataset"] = dataset
    rows = [[opt, f"{fmt(_stat(row, 'optimal_token_share')[0])} ± {fmt(_stat(row, 'optimal_token_share')[1])}",
             fmt(_stat(row, "optimal_token_chance")[0]), fmt(_stat(row, "optimal_token_mass")[0]),
             fmt(_stat(row, "attended_token_rank")[0])] for opt, row in agg.items()
            if _stat(row, "optimal_token_share")[0] is not None]
    c.body += [f"Data set: {dataset}.", "", regime(res), ""]
    c.body += table(["optimizer", "optimal-token share", "chance", "attention mass on it", "attended token's rank"],
                    rows)
    return c


#: the l_p-MD runs whose own AttSVM the direction claim checks besides l_1.1-MD and gradient descent
OTHER_MD = ("lp-md:3",)


def _selection(folder: Path) -> dict[str, Any] | None:
    """The comparison's token-selection summary (``mirrorattn analyse OUT``), None when there is none."""
    from mirrorattn.experiments.selection_figures import COMPARISON_JSON

    path = folder / COMPARISON_JSON
    return read_json(path, expect=dict) if path.is_file() else None


def _trend_value(row: dict[str, Any], when: str, p: str | None, what: str = "directional_bregman") -> float | None:
    return ((((row.get("trend") or {}).get(when) or {}).get(p) or {}).get(what) or {}).get("mean")


def _direction_checks(opts: dict[str, Any], checked: list[str]) -> list[tuple[list[Any], bool]]:
    """Per checked optimizer: (table cells, passes) - (a) its last-snapshot divergence to its own-p W_mm is the
    smallest among the checked optimizers' divergences to their W_mm of that p, (b) below its first snapshot's."""
    from mirrorattn.experiments.selection_figures import own_p

    rows = []
    for opt in checked:
        p = own_p(opt)
        last, first = _trend_value(opts[opt], "last", p), _trend_value(opts[opt], "first", p)
        others = {o: _trend_value(opts[o], "last", p) for o in checked if o != opt}
        ok = last is not None and first is not None and None not in others.values() \
            and all(last < v for v in others.values()) and last < first
        rows.append(([opt, p, fmt(first), fmt(last), ", ".join(f"{o} {fmt(v)}" for o, v in others.items()),
                      fmt(_trend_value(opts[opt], "last", p, "cosine"))], ok))
    return rows


def attsvm_direction_claim(root: Path) -> Claim:
    """Issue 15, item 4: each geometry's optimizer ends nearest to that geometry's AttSVM direction (the rule in
    claims.toml), from the nearest text comparison's ``token_selection.json`` trend."""
    from mirrorattn.experiments.selection_figures import TREND_PNG, own_p

    text = claim_text("attsvm-direction")
    c = text.claim()
    nearest = _nearest_text(root)
    sel = _selection(nearest[2]) if nearest else None
    if sel is None or not sel.get("ps"):
        c.note = text.missing
        return c
    dataset, res, folder = nearest
    opts = {o: row for o, row in sel["optimizers"].items() if row.get("trend") and row["trend"].get("p")}
    gd = next((g for g in GD_NAMES if g in opts), None)
    checked = [o for o in (LP, gd, *OTHER_MD) if o is not None and o in opts]
    if LP not in opts or gd is None:
        c.note = f"needs trend results of {LP} and gradient descent ({' or '.join(GD_NAMES)}); " + text.missing
        return c
    lacking = [f"{o} (p = {own_p(o)})" for o in checked if own_p(o) not in sel["ps"]]
    if lacking:
        c.note = f"the trend has no AttSVM of the own p of {', '.join(lacking)}: analyse again with --ps 1.1,2,3"
        return c
    rows = _direction_checks(opts, checked)
    c.numbers = {"dataset": dataset, "divergence_last": {o: {p: _trend_value(opts[o], "last", p) for p in sel["ps"]}
                                                         for o in checked},
                 "divergence_first": {o: _trend_value(opts[o], "first", own_p(o)) for o in checked}}
    c.body += [f"Data set: {dataset}. D: directional Bregman divergence to the run's own W_mm (l_p-AttSVM of its "
               "last snapshot, per head), mean over heads and seeds.", "", regime(res), ""]
    judge_rows(c, ["optimizer", "own p", "D own (first snapshot)", "D own (last)", "others' D to that p (last)",
                   "cosine own (last)"], rows)
    c.body += ["", "Divergence to each W_mm at the last snapshot (rows: optimizer; the rule compares columns):", ""]
    c.body += table(["optimizer", *(f"l_{p}" for p in sel["ps"])],
                    [[o, *(fmt(_trend_value(opts[o], "last", p)) for p in sel["ps"])] for o in opts])
    c.figures = _figs(folder, root, (TREND_PNG,))
    return c


def _qkv(row: dict[str, Any], field: str) -> list[float | None]:
    return [_stat(row, f"{k}_{field}")[0] for k in ("q", "k", "v")]


def weight_sparsity_claim(root: Path) -> Claim:
    text = claim_text("weight-sparsity")
    c = text.claim()
    checks, rows = [], []
    for kind, dataset, base_names in (("text", "imdb", GD_NAMES), ("text", "polarity", GD_NAMES),
                                      ("vision", "cifar10", ("adam",)), ("vision", "digits", ("adam",)),
                                      ("vision", "fashion-mnist", ("adam",))):
        res, folder = _results(root, kind, dataset)
        if res is None:
            continue
        agg = res["aggregate"]
        base = next((b for b in base_names if b in agg), None)
        if LP not in agg or base is None:
            continue
        lp_counts, base_counts = _qkv(agg[LP], "count_above"), _qkv(agg[base], "count_above")
        if None in lp_counts or None in base_counts:
            continue
        ok = sum(lp_counts) < sum(base_counts)
        checks.append(ok)
        paper = QKV_COUNTS if dataset == "imdb" else {}
        reached, total = _stop_rule_counts(res)
        trained = f"{reached}/{total} at the rule" if res.get("config", {}).get("stop_train_acc") else "short"
        for opt in (LP, base):
            counts = _qkv(agg[opt], "count_above")
            hoyer = _qkv(agg[opt], "hoyer")
            pc = paper.get(opt)
            rows.append([f"{kind}/{dataset}", trained, opt, " / ".join(f"{x:.0f}" for x in counts),
                         " / ".join(fmt(h) for h in hoyer),
                         " / ".join(f"{x:,}" for x in (pc[1], pc[0], pc[2])) if pc else "-"])
        c.figures += _figs(folder, root, ("qkv_hist.png",))
    if not checks:
        c.note = text.missing
        return c
    c.verdict = verdict(all(checks))
    c.numbers = {"checks": checks}
    c.body.append("Entries of the query / key / value weights with |w| above the threshold (0.06, the paper's), "
                  "mean over seeds, and the Hoyer sparsity (1 = one non-zero entry, 0 = all equal).")
    c.body.append("")
    c.body.append("Regime: 'n/m at the rule' = runs trained to the authors' stopping rule (99.5 % training "
                  "accuracy); 'short' = a fixed short budget, not the paper's regime.")
    c.body.append("")
    c.body += table(["experiment", "regime", "optimizer", "Q / K / V count above", "Q / K / V Hoyer",
                     "paper (Q / K / V)"], rows)
    return c


def vision_claim(root: Path, dataset: str = "cifar10") -> Claim:
    c, res, folder = _claim_on(root, "vision", "vision", dataset, stand_in=dataset != "cifar10")
    if res is None:
        return c
    agg = res["aggregate"]
    if LP not in agg or "adam" not in agg:
        c.note = f"needs {LP} and adam in the comparison"
        return c
    m_lp, m_adam = _stat(agg[LP], "test_acc")[0], _stat(agg["adam"], "test_acc")[0]
    c.verdict = verdict(m_lp is not None and m_adam is not None and m_lp >= m_adam - 0.05)
    c.numbers = {"test_acc": {LP: m_lp, "adam": m_adam}}
    cfg = res.get("config", {})
    c.body.append(_setup(f"ViT: depth {cfg.get('depth')}, width {cfg.get('width')}, patch {cfg.get('patch')}",
                         res.get("data", {})))
    c.body.append("")
    c.body.append(regime(res))
    c.body.append("")
    c.body += _accuracy_table(agg, {})
    c.figures = _figs(folder, root, ("curves.png", "attention_maps.png"))
    return c


#: suffix of the folders of short-training comparisons (the quick presets): ``text/imdb-quick`` ...
SHORT_SUFFIX = "-quick"


def short_training_sections(root: Path) -> list[str]:
    """Markdown for every short-training comparison under ``root`` (``text/*-quick``, ``vision/*-quick``), kept
    apart from the claims: they are not the paper's regime, so they give no verdict."""
    lines: list[str] = []
    for kind in ("text", "vision"):
        for path in sorted((root / kind).glob(f"*{SHORT_SUFFIX}/results.json")):
            res = read_json(path, expect=dict)
            cfg = res.get("config") or {}
            lines += [f"### {kind}/{path.parent.name}", "", regime(res), "",
                      _setup(f"Model: {_model_words(kind, cfg)}", res.get("data") or {}), ""]
            lines += _accuracy_table(res.get("aggregate") or {}, {})
            lines.append("")
    if lines:
        lines = ["## Short-training comparisons (quick presets; not the paper's regime, no verdicts)", "",
                 "These runs train for a fixed, short budget (2-10 epochs), far from the authors' 99.5 % training "
                 "accuracy; they show what each optimizer does early in training, not the paper's claims.", "",
                 *lines]
    return lines


def _model_words(kind: str, cfg: dict[str, Any]) -> str:
    if kind == "vision":
        return f"ViT depth {cfg.get('depth')}, width {cfg.get('width')}, patch {cfg.get('patch')}"
    return (f"{cfg.get('blocks')} block(s), width {cfg.get('width')}, pooling {cfg.get('pooling')}, max length "
            f"{cfg.get('max_length')}")


REAL_DATA_CLAIMS = (
    token_selection_claim,
    optimal_token_claim,
    attsvm_direction_claim,
    weight_sparsity_claim,
    lambda root: text_accuracy_claim(root, "imdb"),
    lambda root: text_accuracy_claim(root, "polarity"),
    lambda root: vision_claim(root, "cifar10"),
    lambda root: vision_claim(root, "digits"),
)

__all__ = ["REAL_DATA_CLAIMS", "SHORT_SUFFIX", "attsvm_direction_claim", "optimal_token_claim", "regime",
           "short_training_sections", "text_accuracy_claim", "token_selection_claim", "vision_claim",
           "weight_sparsity_claim"]
