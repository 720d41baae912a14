"""``mirrorattn reproduce`` end to end on the tiny preset: report against the saved JSON; resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mirrorattn.cli import main
from mirrorattn.data.text_sources import EMBEDDED_POLARITY
from mirrorattn.experiments import reproduce
from mirrorattn.experiments.reproduce import Step, data_available, preset_steps, run_reproduce


def _env(shared_data: Path, cache: Path) -> dict[str, str]:
    env = dict(os.environ, MIRRORATTN_DATA=str(shared_data), MIRRORATTN_CACHE=str(cache), OMP_NUM_THREADS="1")
    return env


@pytest.mark.slow
def test_presets_and_data_detection(tmp_path: Path, shared_data: Path) -> None:
    assert [s.name for s in preset_steps("quick")][0] == "synthetic"
    assert data_available("polarity", str(shared_data), False)[0]
    assert data_available("polarity", str(tmp_path), False)[0]  # the embedded copy
    assert all(step.needs is None for step in preset_steps("quick"))  # make demo needs no data root
    ok, reason = data_available("imdb", str(tmp_path), False)
    assert not ok and "--download" in reason and str(tmp_path) in reason


@pytest.mark.slow
def test_reproduce_tiny_end_to_end(tmp_path: Path, shared_data: Path, cache: Path) -> None:
    out = tmp_path / "rep"
    empty = tmp_path / "no-data"
    empty.mkdir()
    rc = main(["reproduce", "--preset", "tiny", "--out", str(out), "--data-root", str(shared_data), "--no-progress"])
    assert rc == 0
    status = json.loads((out / "reproduce.json").read_text())
    assert {k: v["status"] for k, v in status["steps"].items()} == {
        "synthetic": "done", "vision/digits": "done", "text/polarity": "done"}
    report = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    for claim in report["claims"]:
        assert f"## {claim['title']}" in md and f"**Verdict: {claim['verdict']}.**" in md
        for fig in claim["figures"]:
            assert (out / fig).is_file()
    # verdicts recomputed from the saved JSON with the stated rules
    local = json.loads((out / "synthetic" / "local" / "summary.json").read_text())
    m = np.array(local["final_mean_divergence"])
    first, last = np.array(local["mean_divergence_first_third"]), np.array(local["mean_divergence_last_third"])
    expect = all(np.argmin(m[i]) == i for i in range(3)) and all(last[i, i] <= 0.5 * first[i, i] for i in range(3))
    assert report["verdicts"]["local"] == ("reproduced" if expect else "not reproduced")
    polarity = json.loads((out / "text" / "polarity" / "results.json").read_text())["aggregate"]
    a, b = polarity["lp-md:1.1"]["test_acc"], polarity["lp-md:2"]["test_acc"]
    expect = a["mean"] - b["mean"] > max(a["std"], b["std"])
    assert report["verdicts"]["accuracy-polarity"] == ("reproduced" if expect else "not reproduced")
    assert report["verdicts"]["accuracy-imdb"] == "not run"
    # the report is redrawn from disk alone
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").read_text().split("\n")[4:] == md.split("\n")[4:]  # same but the timestamp line
    # a data root without sentence polarity: the text step runs on the package's embedded copy (same data,
    # so its finished runs are reused), and the report states the regime of each real-data claim
    rc = main(["reproduce", "--preset", "tiny", "--out", str(out), "--data-root", str(empty), "--only",
               "text/polarity", "--no-progress"])
    assert rc == 0
    status = json.loads((out / "reproduce.json").read_text())
    assert status["steps"]["text/polarity"]["status"] == "done"
    results = json.loads((out / "text" / "polarity" / "results.json").read_text())
    assert results["data"]["source"] == str(EMBEDDED_POLARITY)
    assert results["config"]["init"] == "torch" and results["config"]["pooling"] == "cls"
    md = (out / "report.md").read_text()
    assert "Regime: trained to 99.5 % training accuracy (the authors' stopping rule, at most 2 epochs)" in md


def _mtimes(folder: Path) -> dict[str, float]:
    """Modification times of the finished pieces (an .npz counts once its .json, written after it, exists: a kill
    between the two leaves a piece that is rightly redone) and of the trained models' files."""
    def finished(p: Path) -> bool:
        if "pieces" not in p.parts:
            return p.name in ("best_model.pt", "history.json")
        return p.suffix == ".json" or (p.suffix == ".npz" and p.with_suffix(".json").is_file())

    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(".") and finished(p)}


@pytest.mark.slow
def test_killed_reproduce_resumes_without_redoing(tmp_path: Path, shared_data: Path, cache: Path) -> None:
    out = tmp_path / "rep"
    cmd = [sys.executable, "-m", "mirrorattn", "reproduce", "--preset", "tiny", "--out", str(out), "--no-progress"]
    env = _env(shared_data, cache)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 600
    marker = out / "synthetic" / "kq" / "summary.json"
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert marker.exists(), "the synthetic step never finished"
    os.killpg(proc.pid, signal.SIGKILL)  # kill mid-way: the vision step is running or about to
    proc.wait()
    before = _mtimes(out / "synthetic")
    assert before
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    after = _mtimes(out / "synthetic")
    assert {k: after[k] for k in before} == before  # finished pieces were reused, not recomputed
    status = json.loads((out / "reproduce.json").read_text())
    assert all(v["status"] == "done" for v in status["steps"].values())
    assert (out / "report.md").is_file()


def test_only_rejects_unknown_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 12, item 12: ``--only bogus`` used to exit 0 having run nothing."""
    out = tmp_path / "rep"
    rc = main(["reproduce", "--preset", "tiny", "--out", str(out), "--only", "synthetic", "bogus", "text/imdb"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    assert "unknown step(s) 'bogus', 'text/imdb' for preset 'tiny'" in err[0]
    assert "its steps are: synthetic, vision/digits, text/polarity" in err[0]
    assert not out.exists()  # nothing was run or created
    with pytest.raises(ValueError, match="unknown step"):
        run_reproduce("quick", out, only=["vision/cifar10"])


@pytest.mark.parametrize("content", [b"", b'{"preset": "tiny", "steps": {', b"\xff\xfe", b"[1, 2]",
                                     b'{"steps": "none"}'])
def test_corrupt_status_record_is_started_afresh(content: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12, item 10: a corrupt reproduce.json gave "Expecting value: line 1 column 1 (char 0)"."""
    # a step whose data is missing (skipped with the reason): nothing trains
    monkeypatch.setattr(reproduce, "preset_steps", lambda preset: [
        Step("text/polarity", "text", "quick", {"dataset": "imdb"}, needs="imdb")])
    out, empty = tmp_path / "rep", tmp_path / "no-data"
    out.mkdir()
    empty.mkdir()
    (out / "reproduce.json").write_bytes(content)
    rc = main(["reproduce", "--preset", "tiny", "--out", str(out), "--data-root", str(empty), "--only",
               "text/polarity", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 0
    assert len(err) == 1 and str(out / "reproduce.json") in err[0] and "starting a new record" in err[0], err
    status = json.loads((out / "reproduce.json").read_text())
    assert status["preset"] == "tiny" and status["steps"]["text/polarity"]["status"] == "skipped"


#: the command lines reproduce ran through the CLI before it called the experiments itself (issue 13, item 5):
#: each step's config must be the one the CLI builds from them (the same config hash, so finished runs are reused)
_ARGV = {
    ("tiny", "synthetic"): ["synthetic", "all", "--preset", "quick", "--seeds", "2", "--iterations", "300",
                            "--grid-points", "8"],
    ("tiny", "vision/digits"): ["vision", "--dataset", "digits", "--preset", "quick", "--seeds", "1", "--epochs", "1",
                                "--optimizers", "adam,lp-md:1.1", "--width", "16", "--depth", "1", "--heads", "2",
                                "--mlp-hidden", "32", "--max-train", "400", "--max-test", "200"],
    ("tiny", "text/polarity"): ["text", "--dataset", "polarity", "--preset", "converge", "--seeds", "1", "--epochs",
                                "2", "--warmup-epochs", "1", "--optimizers", "lp-md:1.1,lp-md:2", "--max-train",
                                "400", "--max-test", "200", "--width", "16", "--vocab-size", "2000", "--max-length",
                                "32", "--analysis-samples", "100"],
    ("quick", "synthetic"): ["synthetic", "all", "--preset", "quick"],
    ("quick", "vision/digits"): ["vision", "--dataset", "digits", "--preset", "quick", "--seeds", "2", "--optimizers",
                                 "adam,lp-md:1.1,sgd", "--threads", "1"],
    ("quick", "text/polarity"): ["text", "--dataset", "polarity", "--preset", "converge", "--seeds", "2",
                                 "--optimizers", "lp-md:1.1,lp-md:2,adam", "--max-train", "2000", "--width", "64",
                                 "--epochs", "150", "--workers", "2", "--threads", "1"],
    ("cpu", "synthetic"): ["synthetic", "all", "--preset", "paper"],
    ("cpu", "vision/digits"): ["vision", "--dataset", "digits", "--preset", "quick"],
    ("cpu", "text/polarity"): ["text", "--dataset", "polarity", "--preset", "converge"],
    ("cpu", "text/imdb-quick"): ["text", "--dataset", "imdb", "--preset", "quick"],
    ("cpu", "vision/cifar10-quick"): ["vision", "--dataset", "cifar10", "--preset", "quick"],
    ("paper", "synthetic"): ["synthetic", "all", "--preset", "paper"],
    ("paper", "text/imdb"): ["text", "--dataset", "imdb", "--preset", "paper"],
    ("paper", "vision/cifar10"): ["vision", "--dataset", "cifar10", "--preset", "paper"],
}


def _cli_configs(argv: list[str], data_root: str | None, download: bool) -> dict[str, object]:
    """What the ``mirrorattn`` command line builds from ``argv`` (config name -> config), without running it."""
    from mirrorattn.cli import build_parser
    from mirrorattn.config import build_config
    from mirrorattn.experiments.synthetic import cli as synthetic_cli
    from mirrorattn.experiments.synthetic.presets import preset
    from mirrorattn.experiments.text_cli import build_text_config
    from mirrorattn.experiments.vision_cli import build_vision_config

    extra = ([] if argv[0] == "synthetic" or not data_root else ["--data-root", data_root]) + \
        (["--download"] if download and argv[0] != "synthetic" else [])
    args = build_parser().parse_args([*argv, "--out", "unused", *extra])
    if argv[0] == "text":
        return {"text": build_text_config(args)}
    if argv[0] == "vision":
        return {"vision": build_vision_config(args)}
    classes = synthetic_cli._experiments()
    return {name: build_config(classes[name][0], preset(args.preset, name), None,
                               synthetic_cli.experiment_overrides(name, vars(args)))
            for name in synthetic_cli.EXPERIMENTS}


@pytest.mark.parametrize(("preset", "name"), list(_ARGV))
@pytest.mark.parametrize(("data_root", "download"), [(None, False), ("/some/data", True)])
def test_steps_build_the_configs_the_command_line_built(preset: str, name: str, data_root: str | None,
                                                        download: bool) -> None:
    """Each step's config equals the CLI's from the command line reproduce used to run (same config hash)."""
    from mirrorattn.config import build_config
    from mirrorattn.experiments.synthetic import cli as synthetic_cli
    from mirrorattn.experiments.synthetic.presets import preset as synthetic_preset
    from mirrorattn.io import config_hash

    step = {s.name: s for s in preset_steps(preset)}[name]
    assert set(_ARGV) >= {(preset, s.name) for s in preset_steps(preset)}  # the table covers every step
    if step.needs is None and download:
        download = False  # reproduce passes --download only to the steps that need IMDb or CIFAR-10
    expected = _cli_configs(_ARGV[(preset, name)], data_root, download and step.needs in ("imdb", "cifar10"))
    if step.experiment == "synthetic":
        classes = synthetic_cli._experiments()
        got = {job[0]: build_config(classes[job[0]][0], synthetic_preset(step.preset, job[0]), job[2], job[3])
               for job in reproduce.synthetic_jobs(step, Path("unused"))}
    else:
        got = {step.experiment: reproduce.step_config(step, data_root, download)}
    assert got.keys() == expected.keys()
    for key in got:
        assert got[key] == expected[key], key
        assert config_hash(got[key]) == config_hash(expected[key])
    argv = _ARGV[(preset, name)]
    threads = argv[argv.index("--threads") + 1] if "--threads" in argv else None
    workers = argv[argv.index("--workers") + 1] if "--workers" in argv else "1"
    assert (step.threads, step.workers) == (int(threads) if threads else None, int(workers))
