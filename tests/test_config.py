"""Config building and validation: per-field types from TOML / presets / options (issue 12, items 9, 11, 13, 18)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import pytest

from mirrorattn.config import ConfigError, build_config, describe_type
from mirrorattn.experiments.classification_cli import apply_lr_option
from mirrorattn.experiments.synthetic.kq import KQConfig
from mirrorattn.experiments.synthetic.local import LocalConfig
from mirrorattn.experiments.text import TextExperimentConfig
from mirrorattn.experiments.vision import VisionExperimentConfig
from mirrorattn.optim.registry import parse_optimizer_spec, split_optimizer_list
from mirrorattn.train.config import TrainConfig


@dataclass
class _Kinds:
    n: int = 1
    x: float = 0.5
    name: str = "a"
    flag: bool = False
    cap: int | None = None
    names: tuple[str, ...] = ("a",)
    steps: tuple[float, ...] = (1.0,)
    table: dict[str, float] = field(default_factory=dict)
    grids: dict[str, tuple[float, ...]] = field(default_factory=dict)
    pair: tuple[int, int] = (1, 2)
    mode: Literal["fast", "slow"] = "fast"


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    return path


# -- item 13: every field's type, with the file, the field, the expected type and the value in the message --------

@pytest.mark.parametrize(("line", "words"), [
    ('epochs = "abc"', ["field 'epochs'", "an integer", "'abc'"]),
    ("epochs = 1.5", ["field 'epochs'", "an integer", "1.5"]),
    ("seeds = 1.5", ["field 'seeds'", "an integer", "1.5"]),
    ("seeds = true", ["field 'seeds'", "an integer", "True"]),
    ('dropout = "0.1"', ["field 'dropout'", "a number", "'0.1'"]),
    ('lrs = "x"', ["field 'lrs'", "a table of numbers", "lrs = {"]),
    ('lrs = { adam = "fast" }', ["field 'lrs'", "entry 'adam'", "'fast'"]),
    ('optimizers = "adam"', ["field 'optimizers'", "a list of strings", 'optimizers = ["adam"]']),
    ('optimizers = ["adam", 3]', ["field 'optimizers'", "item 1"]),
    ("bias = 1", ["field 'bias'", "true or false"]),
    ("max_train = 2.5", ["field 'max_train'", "an integer or none"]),
    ("grad_clip = nan", ["field 'grad_clip'", "finite"]),
    ("sweep_grids = { adam = [1e-3, \"x\"] }", ["field 'sweep_grids'", "entry 'adam'", "item 1"]),
    ("dataset = 1979-05-27", ["field 'dataset'", "a string", "date"]),
])
def test_toml_type_errors_name_the_file_field_type_and_value(tmp_path: Path, line: str, words: list[str]) -> None:
    path = _toml(tmp_path, line + "\n")
    with pytest.raises(ConfigError) as info:
        build_config(TextExperimentConfig, None, path)
    message = str(info.value)
    assert message.startswith(f"config file {path}: ") and "\n" not in message
    for word in words:
        assert word in message


def test_sources_are_named_preset_file_and_options() -> None:
    with pytest.raises(ConfigError, match=r"^the preset: field 'epochs' must be an integer"):
        build_config(TextExperimentConfig, {"epochs": "2"})
    with pytest.raises(ConfigError, match=r"^the command-line options: field 'lr' must be a number, got True"):
        build_config(TextExperimentConfig, None, None, {"lr": True})


def test_values_of_the_right_type_are_converted() -> None:
    cfg = build_config(_Kinds, None, None, {"n": 3.0, "x": 2, "cap": 7, "names": ["b", "c"], "steps": [1, 2],
                                            "table": {"adam": 1}, "grids": {"sgd": [1, 0.5]}, "pair": [3, 4],
                                            "mode": "slow", "flag": True})
    assert cfg.n == 3 and type(cfg.n) is int and cfg.x == 2.0 and type(cfg.x) is float
    assert cfg.names == ("b", "c") and cfg.steps == (1.0, 2.0) and cfg.table == {"adam": 1.0}
    assert cfg.grids == {"sgd": (1.0, 0.5)} and cfg.pair == (3, 4) and cfg.mode == "slow" and cfg.flag is True
    # one number where a list of numbers is wanted is a one-element list (synthetic's ps = 2.0, iterations = 500)
    assert build_config(_Kinds, None, None, {"steps": 0.1}).steps == (0.1,)
    assert build_config(LocalConfig, None, None, {"ps": 2, "iterations": 5}).iterations == (5,)
    assert build_config(KQConfig, None, None, {"iterations": 40}).iterations == 40


@pytest.mark.parametrize(("values", "words"), [
    ({"pair": [1, 2, 3]}, ["a list of 2 values", "3 values given"]),
    ({"mode": "medium"}, ["one of 'fast', 'slow'"]),
    ({"name": 3}, ["a string", "3 (integer)"]),
    ({"flag": "yes"}, ["true or false"]),
    ({"x": float("inf")}, ["finite"]),
    ({"names": "a"}, ['names = ["a"]']),
    ({"n": 1e300}, ["an integer", "1e+300"]),
])
def test_more_mismatches(values: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(_Kinds, None, None, values)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_describe_type() -> None:
    assert describe_type(int | None) == "an integer or none"
    assert describe_type(dict[str, tuple[float, ...]]) == "a table of lists of numbers"
    assert describe_type(tuple[bool, ...]) == "a list of booleans (true or false)"


def test_bad_toml_and_unknown_fields(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not valid TOML"):
        build_config(TextExperimentConfig, None, _toml(tmp_path, "epochs = = 1\n"))
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'dataset = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        build_config(TextExperimentConfig, None, bad)
    with pytest.raises(ConfigError, match="unknown config field 'epoch'"):
        build_config(TextExperimentConfig, None, _toml(tmp_path, "epoch = 1\n"))


# -- validate(): devices, optimizer specs, choices ----------------------------------------------------------------

@pytest.mark.parametrize("device", ["bogus", "meta", "", " cpu", "cuda:-1", "gpu"])
def test_device_names_are_checked(device: str) -> None:
    with pytest.raises(ValueError, match="not a device name; use auto, cpu, cuda, cuda:N or mps"):
        TrainConfig(device=device).validate()


def test_cuda_asked_but_missing_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        TrainConfig(device="cuda").validate()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    TrainConfig(device="cuda:1").validate()
    with pytest.raises(ValueError, match=r"has 2 CUDA device\(s\)"):
        TrainConfig(device="cuda:2").validate()
    for ok in ("auto", "cpu", "cpu:0"):
        TrainConfig(device=ok).validate()


@pytest.mark.parametrize(("spec", "words"), [
    ("foo", "unknown optimizer 'foo'"),
    ("lp-md:p=0.5", "'lp-md:p=0.5'"),
    ("adam:foo=1", "unexpected keyword"),
    ("lp-md", "needs p"),
])
def test_optimizer_specs_are_checked_by_train_config(spec: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        TrainConfig(optimizer=spec).validate()
    TrainConfig(optimizer="lp-md:p=1.1,normalized=true").validate()


def test_text_and_vision_validate_choices_and_ranges() -> None:
    for bad, words in [({"tokenizer": "chars"}, "tokenizer must be one of"), ({"vocab_size": 4}, "vocab_size"),
                       ({"min_frequency": 0}, "min_frequency"), ({"test_fraction": 1.0}, "test_fraction"),
                       ({"device": "bogus"}, "not a device name")]:
        with pytest.raises(ValueError, match=words):
            build_config(TextExperimentConfig, None, None, bad).validate()
    with pytest.raises(ValueError, match="dataset must be one of"):
        build_config(VisionExperimentConfig, None, None, {"dataset": "mnist"}).validate()
    build_config(TextExperimentConfig).validate()
    build_config(VisionExperimentConfig).validate()


# -- item 11: lists of optimizer specs with multi-key specs ----------------------------------------------------------

@pytest.mark.parametrize(("text", "specs"), [
    ("adam,lp-md:p=1.1,normalized=true,sgd", ["adam", "lp-md:p=1.1,normalized=true", "sgd"]),
    ("lp-md:1.1, lp-md:2,sgd,adam", ["lp-md:1.1", "lp-md:2", "sgd", "adam"]),
    ("a, b,,c", ["a", "b", "c"]),
    ("adam;lp-md:p=1.1,normalized=true; sgd", ["adam", "lp-md:p=1.1,normalized=true", "sgd"]),
    ("lp-md:p=3,normalized=true,adam:betas=x", ["lp-md:p=3,normalized=true", "adam:betas=x"]),
    ("p=1.1,adam", ["p=1.1", "adam"]),  # no spec to continue: stays a (bad) spec of its own
    ("adam,sgd:momentum=0.9,nesterov=true", ["adam", "sgd:momentum=0.9,nesterov=true"]),
])
def test_split_optimizer_list(text: str, specs: list[str]) -> None:
    assert split_optimizer_list(text) == specs


def test_multi_key_spec_parses_after_splitting() -> None:
    specs = split_optimizer_list("adam,lp-md:p=1.1,normalized=true,sgd")
    assert parse_optimizer_spec(specs[1]) == ("lp-md", {"p": 1.1, "normalized": True})


def test_optimizers_option_keeps_multi_key_specs() -> None:
    from mirrorattn.cli import build_parser
    from mirrorattn.experiments.vision_cli import build_vision_config

    args = build_parser().parse_args(["vision", "--out", "x", "--optimizers", "adam,lp-md:p=1.1,normalized=true",
                                      "--lr", "lp-md:p=1.1,normalized=true=5e-2,adam=1e-3"])
    cfg = build_vision_config(args)
    assert cfg.optimizers == ("adam", "lp-md:p=1.1,normalized=true")
    assert cfg.lrs == {"lp-md:p=1.1,normalized=true": 5e-2, "adam": 1e-3}


# -- item 18: --lr wording --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "words"), [
    ("=1e-3", "--lr: '=1e-3' has no optimizer name before '='; write OPTIMIZER=STEP"),
    ("adam=x", "cannot read 'adam=x'"),
    ("adam=-1", "positive number"),
    ("adam=nan", "positive number"),
    ("inf", "positive number"),
    ("fast", "expected a number or OPT=STEP pairs"),
    ("lp-md:1.1=1e-2,foo=2", "unknown optimizer 'foo'"),
])
def test_lr_option_errors(text: str, words: str) -> None:
    cfg = SimpleNamespace(lr=1e-3, lrs={})
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        apply_lr_option(cfg, text, {})


def test_lr_option_values() -> None:
    cfg = SimpleNamespace(lr=1e-3, lrs={})
    apply_lr_option(cfg, "lp-md:1.1=3e-3, adam=1e-3", {"sgd": 0.1})
    assert cfg.lrs == {"sgd": 0.1, "lp-md:1.1": 3e-3, "adam": 1e-3}
    apply_lr_option(cfg, "2e-3", {"sgd": 0.1})
    assert cfg.lr == 2e-3 and cfg.lrs == {}


def test_a_table_of_the_file(tmp_path: Path) -> None:
    """``section=``: the fields of one table (for ``synthetic all``, whose file has one table per experiment)."""
    path = _toml(tmp_path, "[local]\nseeds = 2\nfirst_seed = 7\n[kq]\nseeds = 1.5\n")
    cfg = build_config(LocalConfig, None, path, section="local")
    assert cfg.seeds == 2 and cfg.first_seed == 7
    with pytest.raises(ConfigError, match=r"table \[kq\]: field 'seeds' must be an integer, got 1.5"):
        build_config(KQConfig, None, path, section="kq")
    assert build_config(KQConfig, None, path, section="joint").seeds == KQConfig().seeds
    with pytest.raises(ConfigError, match="must be a table"):
        build_config(KQConfig, None, _toml(tmp_path, "kq = 3\n"), section="kq")


# ------------------------------------------------------------------ the experiment config holds a TrainConfig

def test_the_experiment_configs_nest_the_train_config_and_redeclare_none_of_it(tmp_path) -> None:
    import dataclasses
    import pickle

    from mirrorattn.experiments.classification import PER_RUN_FIELDS, TRAIN_SETTINGS
    from mirrorattn.experiments.text import TextExperimentConfig
    from mirrorattn.experiments.vision import VisionExperimentConfig
    from mirrorattn.train import TrainConfig

    train_names = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(TRAIN_SETTINGS) == train_names - set(PER_RUN_FIELDS)
    for cls in (TextExperimentConfig, VisionExperimentConfig):
        assert not {f.name for f in dataclasses.fields(cls)} & train_names  # nested, not re-declared
    text = TextExperimentConfig(epochs=3, lr=0.1, width=8)
    assert isinstance(text.train, TrainConfig) and (text.train.epochs, text.train.lr, text.width) == (3, 0.1, 8)
    assert text.train.stop_train_acc == 0.995 and VisionExperimentConfig().train.eval_batch_size == 500
    assert (text.epochs, text.lr) == (3, 0.1)  # read by their own names
    text.batch_size = 7
    assert text.train.batch_size == 7
    other = dataclasses.replace(text, lr=0.2)  # the copy has a train config of its own
    other.epochs = 9
    assert (text.lr, text.epochs, other.lr, other.epochs, other.batch_size) == (0.1, 3, 0.2, 9, 7)
    assert pickle.loads(pickle.dumps(text)) == text  # worker processes take it
    run = text.train_config("sgd", 0.5, 2, epochs=1)
    assert (run.optimizer, run.lr, run.seed, run.epochs, run.batch_size) == ("sgd", 0.5, 2, 1, 7)
    record = text.record()
    assert record["epochs"] == 3 and record["width"] == 8 and not {"train", "optimizer", "seed"} & set(record)
    with pytest.raises(AttributeError):
        text.seed  # noqa: B018 - per run, not a setting


def test_build_config_takes_training_settings_flat_or_as_a_train_table(tmp_path) -> None:
    from mirrorattn.experiments.text import TextExperimentConfig

    flat, table = tmp_path / "flat.toml", tmp_path / "table.toml"
    flat.write_text('epochs = 3\nlr_schedule = "cosine"\nwidth = 8\n')
    table.write_text('width = 8\n[train]\nepochs = 3\nlr_schedule = "cosine"\n')
    a, b = build_config(TextExperimentConfig, {"batch_size": 10}, flat), build_config(
        TextExperimentConfig, {"batch_size": 10}, table)
    assert a == b and (a.epochs, a.lr_schedule, a.batch_size, a.width) == (3, "cosine", 10, 8)
    with pytest.raises(ConfigError, match=r"field 'epochs' must be an integer, got 'x'"):
        build_config(TextExperimentConfig, overrides={"epochs": "x"})
    for bad, pattern in ((table.with_name("b1.toml"), r"unknown config field train\.'foo'"),
                         (table.with_name("b2.toml"), r"unknown config field 'seed'"),
                         (table.with_name("b3.toml"), r"field 'train' must be a table")):
        bad.write_text({"b1.toml": "[train]\nfoo = 1\n", "b2.toml": "seed = 3\n", "b3.toml": "train = 3\n"}[bad.name])
        with pytest.raises(ConfigError, match=pattern):
            build_config(TextExperimentConfig, file=bad)
