"""Property test over TOML config files (issue 12, "tests that find the next ones").

Random fields of the text, vision and synthetic configs with random TOML values of every kind
(strings, integers, floats with nan/inf, booleans, dates, times, arrays, inline tables) or
plausible ones: building the config the way its command does (preset, then the file) and
validating it either works, or raises ``ConfigError`` / ``ValueError`` with a one-line message
naming a field that the file sets - never another exception.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import tempfile
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirrorattn.config import ConfigError, build_config
from mirrorattn.experiments.synthetic.joint import JointConfig
from mirrorattn.experiments.synthetic.kq import KQConfig
from mirrorattn.experiments.synthetic.local import LocalConfig
from mirrorattn.experiments.synthetic.presets import preset as synthetic_preset
from mirrorattn.experiments.synthetic.regpath import RegPathConfig
from mirrorattn.experiments.text import TextExperimentConfig
from mirrorattn.experiments.text_presets import PRESETS as TEXT_PRESETS
from mirrorattn.experiments.vision import VisionExperimentConfig
from mirrorattn.experiments.vision_presets import preset_values


def _presets() -> dict[str, tuple[type, dict[str, Any]]]:
    """Each config class with the quick preset its command starts from."""
    return {
        "text": (TextExperimentConfig, dict(TEXT_PRESETS["quick"])),
        "vision": (VisionExperimentConfig, preset_values("quick", "digits")),
        "local": (LocalConfig, synthetic_preset("quick", "local")),
        "joint": (JointConfig, synthetic_preset("quick", "joint")),
        "regpath": (RegPathConfig, synthetic_preset("quick", "regpath")),
        "kq": (KQConfig, synthetic_preset("quick", "kq")),
    }


# -- a small TOML writer (tomllib only reads) --------------------------------------------------------------------

def _toml_string(text: str) -> str:
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    """``value`` (str, int, float, bool, date/time, list, dict) as TOML text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def toml_document(table: dict[str, Any]) -> str:
    return "".join(f"{_toml_string(k)} = {toml_value(v)}\n" for k, v in table.items())


# -- values --------------------------------------------------------------------------------------------------------

_ZONES = st.sampled_from([None, dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)),
                          dt.timezone(dt.timedelta(hours=-8))])
_SCALARS = st.one_of(
    st.text(max_size=12),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.dates(),
    st.datetimes(timezones=_ZONES).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)),
    st.times().map(lambda t: t.replace(microsecond=0)),
)
_RANDOM = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)), max_leaves=8)
#: values close to real ones, so that some files build and validate and the checks of validate() are reached
_PLAUSIBLE = st.one_of(
    st.integers(min_value=-2, max_value=70),
    st.floats(min_value=-0.5, max_value=3.5),
    st.sampled_from(["adam", "sgd", "lp-md:1.1", "lp-md:p=2,normalized=true", "foo", "lp-md:0.5", "cpu", "auto",
                     "bogus", "cosine", "attention", "mean", "cls", "wordpiece", "digits", "polarity", "", "none"]),
    st.lists(st.sampled_from(["adam", "sgd", "lp-md:1.1", "lp-md:3", "bogus", ""]), max_size=3),
    st.lists(st.floats(min_value=-1, max_value=10), max_size=4),
    st.lists(st.integers(min_value=-1, max_value=50), max_size=4),
    st.dictionaries(st.sampled_from(["adam", "sgd", "lp-md:1.1"]),
                    st.one_of(st.floats(min_value=-1, max_value=1), st.lists(st.floats(0, 1), max_size=3)),
                    max_size=2),
)


_WORDS = st.sampled_from(["adam", "sgd", "lp-md:1.1", "lp-md:p=2,normalized=true", "foo", "cpu", "auto", "bogus",
                          "constant", "cosine", "attention", "all", "sum", "mean", "cls", "wordpiece", "bpe", "digits",
                          "polarity", "clarabel", ""])
_SMALL_FLOATS = st.floats(min_value=-0.5, max_value=5.0)


def typed_values(annotation: Any) -> st.SearchStrategy[Any]:
    """Values of the field's own type (TOML-representable), often in range, so that validate() is reached."""
    origin, args = typing.get_origin(annotation), [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(typed_values(a) for a in args))
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return st.one_of(st.integers(min_value=-2, max_value=80), st.integers(min_value=-(2**63), max_value=2**63 - 1))
    if annotation is float:
        return st.one_of(_SMALL_FLOATS, st.floats(allow_nan=False, allow_infinity=False))
    if annotation is str:
        return _WORDS
    if origin in (tuple, list):
        inner = args[0] if args and args[-1] is Ellipsis or len(args) == 1 else Any
        return st.lists(typed_values(inner), max_size=4)
    if origin is dict:
        return st.dictionaries(_WORDS, typed_values(args[1] if len(args) == 2 else Any), max_size=3)
    return _PLAUSIBLE


@st.composite
def config_files(draw: st.DrawFn, name: str) -> dict[str, Any]:
    """A TOML table: 1-4 entries, keys mostly the config's field names (sometimes unknown ones), values of the
    field's type half of the time, else plausible or random TOML values."""
    cls, _ = _presets()[name]
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    table: dict[str, Any] = {}
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        unknown = draw(st.integers(min_value=0, max_value=9)) == 0
        key = draw(st.text(min_size=1, max_size=8) if unknown else st.sampled_from(names))
        kind = draw(st.sampled_from(["typed", "typed", "plausible", "random"]))
        values = {"typed": typed_values(hints.get(key, Any)), "plausible": _PLAUSIBLE, "random": _RANDOM}[kind]
        table[key] = draw(values)
    return table


def _named(message: str, keys: list[str]) -> bool:
    """Whether ``message`` names one of the fields ``keys`` (a singular or 'step size' for lrs counts)."""
    low = message.lower()
    for key in keys:
        k = key.lower()
        forms = {k, k.replace("_", " "), k.rstrip("s"), repr(key)}
        if k == "lrs":
            forms.add("step size")
        if k in ("sweep_lrs", "sweep_grids"):
            forms.add("sweep grid")
        if any(f and f in low for f in forms) or repr(key) in message:
            return True
    return False


@pytest.mark.parametrize("name", list(_presets()))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_toml_builds_a_valid_config_or_one_clear_error(name: str, data: st.DataObject) -> None:
    table = data.draw(config_files(name))
    text = toml_document(table)
    cls, preset = _presets()[name]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        path.write_text(text, encoding="utf-8")
        try:
            cfg = build_config(cls, preset, path)
            if hasattr(cfg, "validate"):
                cfg.validate()
        except ValueError as exc:  # ConfigError, SVMError are ValueErrors
            message = str(exc)
            assert message and "\n" not in message, f"{type(exc).__name__} over several lines for\n{text}"
            assert _named(message, list(table)), f"{message!r} names no field of\n{text}"
            if isinstance(exc, ConfigError) and "unknown config field" not in message:
                assert str(path) in message, message
        except Exception as exc:  # noqa: BLE001 - the property: nothing else escapes
            pytest.fail(f"{type(exc).__name__}: {exc} for the TOML file\n{text}")


@pytest.mark.parametrize("value", [
    "plain", 'quote " and \\ backslash', "tab\tnewline\n\x00", 3, -(2**63), 1.5, float("nan"), float("-inf"),
    True, dt.date(1979, 5, 27), dt.datetime(1979, 5, 27, 7, 32, tzinfo=dt.UTC), dt.time(7, 32),
    [1, "a", [2.5]], {"k": [1, {"x": False}]},
])
def test_toml_writer_round_trips(value: Any) -> None:
    import tomllib

    back = tomllib.loads(toml_document({"v": value}))["v"]
    if isinstance(value, float) and math.isnan(value):
        assert math.isnan(back)
    else:
        assert back == value
