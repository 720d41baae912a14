"""Every bad input to the ``mirrorattn`` command is one line on stderr, exit code 1, no traceback (issue 12).

Unwritable / misplaced ``--out`` for every subcommand (item 9), ``--device bogus``, TOML type errors
(item 13), ``--lr =1e-3`` (item 18), ``reproduce --only bogus`` (item 12).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from mirrorattn import cli
from mirrorattn.cli import main

#: one argv per subcommand, without --out (report takes DIR instead)
COMMANDS: dict[str, list[str]] = {
    "svm": ["svm", "--data", "missing.npz", "--p", "2"],
    "synthetic local": ["synthetic", "local", "--preset", "quick"],
    "synthetic joint": ["synthetic", "joint", "--preset", "quick"],
    "synthetic regpath": ["synthetic", "regpath", "--preset", "quick"],
    "synthetic kq": ["synthetic", "kq", "--preset", "quick"],
    "synthetic all": ["synthetic", "all", "--preset", "quick"],
    "text": ["text", "--dataset", "polarity"],
    "text-sweep": ["text-sweep", "--dataset", "polarity"],
    "vision": ["vision", "--dataset", "digits"],
    "vision-sweep": ["vision-sweep", "--dataset", "digits"],
    "reproduce": ["reproduce", "--preset", "tiny"],
    "report": ["report"],
}


def _argv(name: str, out: Path) -> list[str]:
    if name == "report":
        return ["report", str(out)]
    target = out / "summary.json" if name == "svm" else out
    return [*COMMANDS[name], "--out", str(target)]


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], *words: str) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 1, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("mirrorattn "), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture()
def a_file(tmp_path: Path) -> Path:
    f = tmp_path / "a-file"
    f.write_text("not a folder\n")
    return f


# -- item 9: --out under an existing file (fails even for root), an existing file, an unwritable folder --------------

@pytest.mark.parametrize("name", list(COMMANDS))
def test_out_under_an_existing_file(name: str, a_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(capsys, _argv(name, a_file / "sub"), str(a_file), "is a file, not a folder", "choose another")


@pytest.mark.parametrize("name", [n for n in COMMANDS if n != "svm"])
def test_out_is_an_existing_file(name: str, a_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["report", str(a_file)] if name == "report" else [*COMMANDS[name], "--out", str(a_file)]
    _one_line_error(capsys, argv, str(a_file), "is an existing file, not a folder")
    assert a_file.read_text() == "not a folder\n"


def test_svm_out_is_an_existing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(capsys, [*COMMANDS["svm"], "--out", str(tmp_path)], "is an existing folder, not a file name")
    _one_line_error(capsys, [*COMMANDS["svm"], "--save-w", str(tmp_path)], "--save-w", "not a file name")


def _chmod_stops_writes(folder: Path) -> bool:
    """Whether a 0o500 folder refuses this process's writes (not for root, unless it lacks CAP_DAC_OVERRIDE)."""
    probe = folder / "probe"
    probe.mkdir()
    probe.chmod(0o500)
    try:
        (probe / "x").write_text("x")
    except PermissionError:
        return True
    finally:
        probe.chmod(0o700)
    return False


@pytest.mark.parametrize("name", list(COMMANDS))
def test_out_in_a_read_only_folder(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not _chmod_stops_writes(tmp_path):
        pytest.skip("runs as root (geteuid 0): chmod does not stop its writes; covered by the simulated tests below")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        _one_line_error(capsys, _argv(name, ro / "out"), "cannot write results to", "permission denied")
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_out_without_write_permission_simulated(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != ro and real(p, mode, **kw))
    _one_line_error(capsys, _argv(name, ro / "out"), f"cannot write results to {ro / 'out'}", "permission denied",
                    "choose another")


def test_out_on_a_read_only_file_system_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    real = os.statvfs

    class _ReadOnly:
        def __init__(self, st: os.statvfs_result) -> None:
            self.f_flag = st.f_flag | os.ST_RDONLY

    monkeypatch.setattr(os, "statvfs", lambda p: _ReadOnly(real(p)) if Path(p) == tmp_path else real(p))
    for name in ("text", "synthetic all", "reproduce", "svm"):
        _one_line_error(capsys, _argv(name, tmp_path / "out"), "read-only file system")


# -- item 9: operating-system errors while a subcommand runs --------------------------------------------------------

def test_write_failure_during_a_real_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "local"
    out.mkdir()
    (out / "pieces").write_text("in the way\n")  # the run's own subfolder is a file: fails for root too
    _one_line_error(capsys, ["synthetic", "local", "--preset", "quick", "--out", str(out), "--iterations", "5",
                             "--seeds", "1", "--grid-points", "2", "--no-progress", "--workers", "1"],
                    f"cannot write results to {out / 'pieces'}", "choose another --out")


@pytest.mark.parametrize(("code", "cause"), [
    (errno.EACCES, "permission denied"),
    (errno.EROFS, "read-only file system"),
    (errno.ENOSPC, "no space left on device"),
    (errno.ENOTDIR, "not a directory (a part of the path is a file)"),
    (errno.EEXIST, "a file of that name exists"),
    (errno.EISDIR, "is a folder, not a file"),
    (errno.EIO, "input/output error"),
])
def test_os_errors_become_one_line(code: int, cause: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    from mirrorattn.experiments.synthetic import cli as synthetic_cli

    out = tmp_path / "run"
    inside = out / "pieces" / "x.npz"

    def fail(args: object) -> int:
        raise OSError(code, os.strerror(code), str(inside))

    monkeypatch.setattr(synthetic_cli, "_main", fail)
    _one_line_error(capsys, ["synthetic", "local", "--out", str(out)],
                    f"cannot write results to {inside}: {cause}; choose another --out")
    elsewhere = tmp_path / "data.bin"
    monkeypatch.setattr(synthetic_cli, "_main", lambda args: (_ for _ in ()).throw(
        OSError(code, os.strerror(code), str(elsewhere))))
    _one_line_error(capsys, ["synthetic", "local", "--out", str(out)], f"cannot use {elsewhere}: {cause}")


def test_os_error_without_a_path_and_debug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from mirrorattn.experiments.synthetic import cli as synthetic_cli

    monkeypatch.setattr(synthetic_cli, "_main", lambda args: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    _one_line_error(capsys, ["synthetic", "local", "--out", str(tmp_path / "o")], "no space left on device")
    with pytest.raises(OSError):
        main(["--debug", "synthetic", "local", "--out", str(tmp_path / "o")])


def test_describe_os_error_paths_above_the_output() -> None:
    exc = PermissionError(errno.EACCES, "Permission denied", "/srv/results")
    line = cli.describe_os_error(exc, [("--out", Path("/srv/results/run1"), True)])
    assert line == "cannot write results to /srv/results: permission denied; choose another --out"


def test_train_entry_point_checks_out_too(a_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mirrorattn.torchrun import main as train_main

    rc = train_main(["vision", "--out", str(a_file)])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "is an existing file" in err


# -- --device, TOML types, --lr, reproduce --only ------------------------------------------------------------------

@pytest.mark.parametrize("command", ["text", "vision", "text-sweep", "vision-sweep"])
def test_bad_device(command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    out = str(tmp_path / "o")
    _one_line_error(capsys, [command, "--out", out, "--device", "bogus"], "device 'bogus' is not a device name")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _one_line_error(capsys, [command, "--out", out, "--device", "cuda"], "CUDA is not available")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("toml", "words"), [
    ("seeds = 1.5", ["field 'seeds' must be an integer, got 1.5"]),
    ('dropout = "0.1"', ["field 'dropout' must be a number, got '0.1'"]),
    ('epochs = "abc"', ["field 'epochs' must be an integer, got 'abc'"]),
    ("epochs = 1.5", ["field 'epochs' must be an integer, got 1.5"]),
    ('lrs = "x"', ["field 'lrs' must be a table of numbers"]),
    ('optimizers = "adam"', ["field 'optimizers' must be a list of strings", 'optimizers = ["adam"]']),
    ("epochs = [", ["is not valid TOML"]),
])
@pytest.mark.parametrize("command", ["text", "vision"])
def test_toml_type_errors(command: str, toml: str, words: list[str], tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml + "\n")
    line = _one_line_error(capsys, [command, "--out", str(tmp_path / "o"), "--config", str(path)], *words)
    assert str(path) in line


def test_synthetic_toml_type_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.toml"
    path.write_text("seeds = 1.5\n")
    _one_line_error(capsys, ["synthetic", "local", "--out", str(tmp_path / "o"), "--config", str(path)],
                    "field 'seeds' must be an integer, got 1.5")
    path.write_text('[local]\nps = "2"\n')
    _one_line_error(capsys, ["synthetic", "all", "--out", str(tmp_path / "o"), "--config", str(path), "--workers", "1"],
                    "field 'ps' must be a list of numbers")


@pytest.mark.parametrize(("lr", "words"), [
    ("=1e-3", ["--lr: '=1e-3' has no optimizer name before '='; write OPTIMIZER=STEP"]),
    ("adam=fast", ["--lr: cannot read 'adam=fast'"]),
    ("-1", ["--lr: the step must be a positive number"]),
])
def test_bad_lr(lr: str, words: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(capsys, ["vision", "--out", str(tmp_path / "o"), f"--lr={lr}"], *words)


def test_reproduce_only_unknown_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(capsys, ["reproduce", "--preset", "tiny", "--out", str(tmp_path / "r"), "--only", "bogus"],
                    "--only: unknown step(s) 'bogus'", "synthetic, vision/digits, text/polarity")
    assert not (tmp_path / "r").exists()


def test_report_dir_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(capsys, ["report", str(tmp_path / "none")], "is not a folder")
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("argv", [
    ["vision", "--threads", "-1"], ["vision-sweep", "--workers", "0"], ["text", "--workers", "-2"],
    ["text-sweep", "--threads", "0"], ["reproduce", "--workers", "0"],
])
def test_process_counts_must_be_positive(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    option = argv[1]
    _one_line_error(capsys, [*argv, "--out", str(tmp_path / "o")], f"{option} must be a positive integer")
    assert not (tmp_path / "o").exists()


def test_overwrite_option_reaches_the_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A finished run of other settings is refused in one line naming --overwrite; --overwrite replaces it."""
    out = tmp_path / "v"
    argv = ["vision", "--dataset", "digits", "--out", str(out), "--seeds", "1", "--epochs", "1", "--optimizers", "adam",
            "--patch", "2", "--width", "8", "--depth", "1", "--heads", "2", "--mlp-hidden", "8", "--max-train", "200",
            "--max-test", "50", "--analysis-samples", "20", "--attention-images", "1", "--no-progress",
            "--device", "cpu", "--threads", "1"]
    assert main([*argv, "--lr", "1e-3"]) == 0
    capsys.readouterr()
    _one_line_error(capsys, [*argv, "--lr", "2e-3"], "--overwrite")
    assert main([*argv, "--lr", "2e-3", "--overwrite"]) == 0


def test_missing_data_is_the_loaders_message_not_a_system_error(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    # DataNotFoundError is a FileNotFoundError: it must keep its own advice, not read as an OS error
    line = _one_line_error(capsys, ["vision", "--dataset", "cifar10", "--data-root", str(tmp_path / "none"),
                                    "--out", str(tmp_path / "out")], "CIFAR-10 not found", "--download")
    assert "system error" not in line and "cannot use" not in line


@pytest.mark.parametrize("command", ["text", "text-sweep", "vision", "vision-sweep"])
@pytest.mark.parametrize("flag", [[], ["--no-progress"]])
def test_no_progress_reaches_the_data_loaders(command: str, flag: list[str], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    # item 17: --no-progress silences the download bars too (the loaders get progress=False)
    import mirrorattn.data.text as data_text
    import mirrorattn.experiments.vision as vision
    from mirrorattn.data.paths import DataNotFoundError

    seen: list[bool] = []

    def loader(*args, progress: bool = True, **kwargs):
        seen.append(progress)
        raise DataNotFoundError("stopped by the test")

    monkeypatch.setattr(data_text, "load_text_dataset", loader)
    monkeypatch.setattr(vision, "load_vision_dataset", loader)
    dataset = "polarity" if command.startswith("text") else "digits"
    _one_line_error(capsys, [command, "--dataset", dataset, *flag, "--out", str(tmp_path / "o")], "stopped by the test")
    assert seen == [not flag]
