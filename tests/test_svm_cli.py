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
    assert "not an NPZ file" in capsys.readouterr().err  # not "contains pickled data": it is text
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


# ------------------------------------------------------------ issue 12: bad input files and outputs


def _one_line_error(capsys, argv):
    assert main(argv) == 1
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert captured.out == ""  # nothing printed as a result
    return err


def test_nan_in_v_is_rejected_not_reported_optimal(npz, tmp_path, capsys):
    _, (X, z, alpha, y, v) = npz
    bad = tmp_path / "nan_v.npz"
    np.savez(bad, X=X, z=z, alpha=alpha, y=y, v=np.where(np.arange(len(v)) == 3, np.nan, v))
    err = _one_line_error(capsys, ["svm", "--data", str(bad), "--p", "2"])
    assert "v holds NaN or inf (first at v[3])" in err and str(bad) in err
    np.savez(bad, X=X, z=z, alpha=alpha, y=np.where(np.arange(len(y)) == 1, np.inf, y), v=v)
    assert "y holds NaN or inf (first at y[1])" in _one_line_error(capsys, ["svm", "--data", str(bad), "--p", "2"])
    np.savez(bad, X=X, z=z, alpha=alpha, y=y, v=v[:-1])
    assert "v must have shape (d,) = (10,)" in _one_line_error(capsys, ["svm", "--data", str(bad), "--p", "2"])


def test_complex_X_is_rejected_without_a_warning(npz, tmp_path, capsys, recwarn):
    _, (X, z, alpha, y, v) = npz
    bad = tmp_path / "complex.npz"
    np.savez(bad, X=X + 1e-3j, z=z, alpha=alpha)
    err = _one_line_error(capsys, ["svm", "--data", str(bad), "--p", "2"])
    assert "X is complex (dtype complex128)" in err
    assert not [w for w in recwarn if "complex" in str(w.message).lower()]


def test_integer_arrays_are_accepted(tmp_path, capsys):
    rng = np.random.default_rng(2)
    X = rng.integers(-3, 4, size=(4, 3, 2))
    z = np.ones((4, 2), dtype=np.int32)
    alpha = np.argmax(X @ np.array([1.0, 0.3]), axis=1)  # W = [1, 0.3]^T [1, 1] / 2 separates them
    X[np.arange(4), alpha] += 1  # no ties with the selected token
    path = tmp_path / "ints.npz"
    np.savez(path, X=X, z=z, alpha=alpha.astype(np.int16), extra=np.zeros(2))
    assert main(["svm", "--data", str(path), "--p", "2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    ref = attention_svm(X.astype(float), z.astype(float), alpha, 2.0)
    assert printed["attention"]["objective"] == pytest.approx(ref.objective, rel=1e-9)
    assert printed["ignored_arrays"] == ["extra"]


def _npz_bytes(tmp_path):
    path = tmp_path / "good.npz"
    np.savez(path, X=np.zeros((2, 3, 2)), z=np.ones((2, 2)), alpha=np.zeros(2, dtype=int))
    return path.read_bytes()


@pytest.mark.parametrize("kind,expected", [
    ("empty", "the file is empty (0 bytes)"),
    ("text", "not an NPZ file"),
    ("npy", "not an NPZ file"),
    ("truncated", "not a readable NPZ file, damaged or truncated"),
    ("garbled", "not a readable NPZ file"),
    ("pickle", "holds object arrays, which only pickle could load"),
])
def test_unreadable_npz_is_one_line_naming_the_file(tmp_path, capsys, kind, expected):
    path = tmp_path / f"{kind}.npz"
    good = _npz_bytes(tmp_path)
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("X,z,alpha\n1,2,3\n")
    elif kind == "npy":
        with open(path, "wb") as fh:
            np.save(fh, np.zeros(3))
    elif kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "garbled":  # the member data (not the directory) overwritten: a CRC or header error
        path.write_bytes(good[:40] + b"\xff" * 60 + good[100:])
    else:
        np.savez(path, X=np.array([{"a": 1}, None], dtype=object), z=np.ones((2, 2)), alpha=np.zeros(2, dtype=int))
    err = _one_line_error(capsys, ["svm", "--data", str(path), "--p", "2"])
    assert expected in err and str(path) in err


@pytest.mark.parametrize("p", ["2049", "1e6", "1.0001"])
def test_p_out_of_range_is_one_line(npz, capsys, p):
    path, _ = npz
    err = _one_line_error(capsys, ["svm", "--data", str(path), "--p", p])
    assert "--p = " in err and "outside [1.001, 100]" in err


def test_save_w_is_not_left_behind_when_out_fails(npz, tmp_path, capsys):
    import argparse

    from mirrorattn.svm.cli import run

    path, _ = npz
    (tmp_path / "bad").write_text("a file where --out wants a folder")
    wfile = tmp_path / "W.npz"
    args = argparse.Namespace(data=path, p=1.75, nuclear=False, out=tmp_path / "bad" / "x.json", save_w=wfile,
                              active_set="auto", tol=1e-8, solver="clarabel")
    with pytest.raises(OSError):
        run(args)  # the solve succeeded, writing --out failed: neither file may appear
    assert not wfile.exists() and capsys.readouterr().out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arrays.npz", "bad"]  # no temporary files either
    # through the command: one line, nothing written
    assert main(["svm", "--data", str(path), "--p", "1.75", "--save-w", str(wfile),
                 "--out", str(tmp_path / "bad" / "x.json")]) == 1
    assert not wfile.exists()


def test_save_w_that_existed_is_kept_when_out_fails(npz, tmp_path, monkeypatch):
    import argparse
    import errno
    import os

    from mirrorattn.svm.cli import run

    path, _ = npz
    wfile, out = tmp_path / "W.npz", tmp_path / "s.json"
    wfile.write_bytes(b"an older result")
    args = argparse.Namespace(data=path, p=1.75, nuclear=False, out=out, save_w=wfile,
                              active_set="auto", tol=1e-8, solver="clarabel")
    real_replace, renamed = os.replace, []

    def replace_then_fail(src, dst):  # the second rename fails (say the disk filled up)
        renamed.append(os.fspath(dst))
        if len(renamed) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", os.fspath(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_fail)
    with pytest.raises(OSError):
        run(args)
    monkeypatch.undo()
    assert len(renamed) == 2
    # the file this call created is removed again; the one that was there before the call stays as it was
    assert not out.exists() and wfile.read_bytes() == b"an older result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["W.npz", "arrays.npz"]


def test_same_file_for_out_and_save_w_is_refused(npz, tmp_path, capsys):
    path, _ = npz
    both = tmp_path / "both"
    err = _one_line_error(capsys, ["svm", "--data", str(path), "--p", "2", "--save-w", str(both), "--out", str(both)])
    assert "also given to another option" in err and not both.exists()


def test_nan_on_padding_tokens_is_allowed_with_optimality(npz, tmp_path, capsys):
    path, (X, z, alpha, y, v) = npz
    mask = np.ones(X.shape[:2], dtype=bool)
    pad = (alpha + 1) % X.shape[1]
    mask[np.arange(len(alpha)), pad] = False
    Xp = X.copy()
    Xp[np.arange(len(alpha)), pad] = np.nan
    padded = tmp_path / "padded.npz"
    np.savez(padded, X=Xp, z=z, alpha=alpha, y=y, v=v, mask=mask)
    assert main(["svm", "--data", str(padded), "--p", "2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["optimality"]["locally_optimal"] is True
    assert printed["attention"]["objective"] == pytest.approx(attention_svm(X, z, alpha, 2.0, mask=mask).objective,
                                                             rel=1e-9)
