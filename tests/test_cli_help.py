"""Every option of every ``mirrorattn`` subcommand says what it means (issue 16, item 3)."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from mirrorattn.cli import build_parser
from mirrorattn.config import field_docs
from mirrorattn.experiments import classification_cli as options


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update({f"{name} {k}": v for k, v in _subparsers(sub).items()})
    return found


def test_every_option_of_every_subcommand_has_a_help_text():
    subs = _subparsers(build_parser())
    assert {"text", "vision", "text-sweep", "vision-sweep", "svm", "reproduce", "report", "analyse"} <= set(subs)
    missing = [f"{name}: {'/'.join(a.option_strings) or a.dest}" for name, sub in subs.items() for a in sub._actions
               if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
               and not (a.help or "").strip()]
    assert not missing, missing


@pytest.mark.parametrize("module", ["text", "vision"])
def test_every_experiment_field_is_documented(module):
    from mirrorattn.experiments.text import TextExperimentConfig
    from mirrorattn.experiments.vision import VisionExperimentConfig

    cls = TextExperimentConfig if module == "text" else VisionExperimentConfig
    docs = field_docs(cls)
    assert [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)] == []


def test_field_docs_read_inline_and_preceding_comments_and_the_subclass_wins():
    @dataclasses.dataclass
    class Base:
        a: int = 1  #: the a
        #: the b, on two
        #: lines
        b: float = 2.0
        c: str = "x"

    @dataclasses.dataclass
    class Child(Base):
        a: int = 3  #: the child's a
        c: str = "y"

    assert field_docs(Base) == {"a": "the a", "b": "the b, on two lines"}
    assert field_docs(Child) == {"a": "the child's a", "b": "the b, on two lines"}


def test_the_help_shows_the_default_and_each_presets_value():
    presets = {"quick/digits": {"epochs": 20}, "quick/cifar10": {"epochs": 7}, "paper/digits": {"epochs": 100},
               "paper/cifar10": {"epochs": 100}, "converge/cifar10": {}}
    assert options.preset_note("epochs", 10, presets) == "quick: digits 20, cifar10 7; paper 100"
    assert options.preset_note("epochs", 10, {"a": {}, "b": {"epochs": 10}}) == ""
    assert options.option_help("share in ``(0, 1)``, 5 %", 0.1, "") == "share in (0, 1), 5 %% (default 0.1)"
    p = argparse.ArgumentParser()
    from mirrorattn.experiments import vision_cli

    vision_cli.register(p.add_subparsers())
    text = " ".join(p._subparsers._group_actions[0].choices["vision"].format_help().split())
    assert "maximum number of epochs" in text and "quick: digits 20" in text and "converge 100" in text


def _option_helps(sub: argparse.ArgumentParser) -> dict[str, str]:
    """dest -> help of the generated options (the "experiment settings" group)."""
    group = next(g for g in sub._action_groups if g.title.startswith("experiment settings"))
    return {a.dest: a.help or "" for a in group._group_actions}


@pytest.mark.parametrize("command", ["text", "vision-sweep", "synthetic local", "synthetic kq", "synthetic all"])
def test_one_option_generator_gives_every_experiment_its_fields_with_their_documentation(command):
    """Text, vision and synthetic options come from one generator (mirrorattn.config.add_field_options) over
    the config's fields (a nested TrainConfig's by their own names), each help the field's #: comment."""
    from mirrorattn.config import flat_fields
    from mirrorattn.experiments.synthetic.cli import _fields
    from mirrorattn.experiments.text import TextExperimentConfig
    from mirrorattn.experiments.vision import VisionExperimentConfig
    from mirrorattn.train import TrainConfig

    helps = _option_helps(_subparsers(build_parser())[command])
    if command.startswith("synthetic"):
        fields = _fields()  # the four experiments' fields, the first documented one of each name
        # the options of before the generator, unchanged (every subcommand has every experiment's fields)
        assert {"ps", "iterations", "n", "T", "d", "seeds", "eta", "normalized", "init_scale", "grid_points"} <= set(
            helps)
    else:
        fields = flat_fields(TextExperimentConfig if command == "text" else VisionExperimentConfig)
        train_docs = field_docs(TrainConfig)
        for name in ("epochs", "batch_size", "weight_decay", "stop_train_acc", "length_buckets"):
            assert helps[name].startswith(train_docs[name].replace("``", "").rstrip(".")), name
    assert set(helps) <= set(fields)
    for name, help_text in helps.items():
        doc = fields[name][2].replace("``", "").rstrip(".")
        assert doc and help_text.replace("%%", "%").startswith(doc) or name in ("svm_solver", "eps"), name


def test_synthetic_options_parse_lists_and_the_short_alias():
    args = build_parser().parse_args(["synthetic", "joint", "-p", "2", "3", "--iterations", "5", "--no-normalized"])
    assert (args.ps, args.iterations, args.normalized, args.n) == ([2.0, 3.0], [5], False, None)
