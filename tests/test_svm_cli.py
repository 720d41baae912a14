"""``mirrorattn svm`` end to end on a small NPZ: summary, files written, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mirrorattn.cli import main
from mirrorattn.io import read_json
from mirrorattn.svm import attention_svm, decoder_svm
from svm_data import unit_tokens


@pytest.fixture()
def npz(tmp_path):
    rng = np.random.default_rng(0)
    n, T, d = 6, 8, 10
    X, z = unit_tokens(rng, n, T, d)
    v = rng.standard_normal(d)
    y = rng.choice([-1.0, 1.0], n)
    alpha = np.argmax(y[:, None] * (X @ v), axis=1)
    path = tmp_path / "arrays.npz"
    np.savez(path, X=X, z=z, alpha=alpha, y=y, v=v)
    return path, (X, z, alpha, y, v)


def test_cli_summary_files_and_optimality(npz, tmp_path, capsys):
    path, (X, z, alpha, y, _) = npz
    out, wfile = tmp_path / "o" / "summary.json", tmp_path / "W.npz"
    rc = main(["svm", "--data", str(path), "--p", "1.75", "--out", str(out), "--save-w", str(wfile)])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == read_json(out)
    ref = attention_svm(X, z, alpha, 1.75)
    assert printed["attention"]["objective"] == pytest.approx(ref.objective, rel=1e-9)
    assert printed["attention"]["n_support"] == int(ref.support.sum())
    assert printed["decoder"]["objective"] == pytest.approx(decoder_svm(X, y, alpha, 1.75).objective, rel=1e-9)
    # alpha was chosen as the argmax of gamma, so it is globally and locally optimal
    assert printed["optimality"]["globally_optimal"] is True
    assert printed["optimality"]["locally_optimal"] is True
    saved = np.load(wfile)
    np.testing.assert_allclose(saved["W"], ref.W, rtol=1e-9, atol=1e-12)


def test_cli_nuclear_and_active_set_flag(npz, capsys):
    path, _ = npz
    assert main(["svm", "--data", str(path), "--nuclear", "--active-set", "on"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["attention"]["p"] == "nuclear" and printed["attention"]["method"] == "active-set"


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, X=np.zeros((2, 3, 4)))
    assert main(["svm", "--data", str(bad), "--p", "2"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing arrays ['z', 'alpha']" in err
    junk = tmp_path / "junk.npz"
    junk.write_text("not a zip")
    assert main(["svm", "--data", str(junk), "--p", "2"]) == 1
    assert "not a readable NPZ" in capsys.readouterr().err
    assert main(["svm", "--data", str(tmp_path / "none.npz"), "--p", "2"]) == 1
    assert "no such file" in capsys.readouterr().err


def test_cli_requires_p_and_reports_infeasible(npz, tmp_path, capsys):
    path, (X, z, alpha, y, v) = npz
    assert main(["svm", "--data", str(path)]) == 1
    assert "--p is required" in capsys.readouterr().err
    X2 = X.copy()
    X2[4, (alpha[4] + 1) % 8] = X2[4, alpha[4]]
    dup = tmp_path / "dup.npz"
    np.savez(dup, X=X2, z=z, alpha=alpha)
    assert main(["svm", "--data", str(dup), "--p", "2"]) == 1
    err = capsys.readouterr().err
    assert "infeasible" in err and "[4]" in err
