"""Config dataclasses from TOML files, presets and command-line overrides.

Every experiment has a config dataclass. :func:`build_config` starts from a preset (a dict of
field values), applies a TOML file if given, then explicit overrides (``None`` means "not
given"), and checks that every key names a field, with a clear error otherwise.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override names an unknown field or has a value of the wrong type."""


def _coerce(value: Any, annotation: Any, name: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation in (float,) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, bool):
        raise ConfigError(f"config field {name!r} must be an integer, got {value!r}")
    if origin in (tuple, list) and isinstance(value, (list, tuple)):
        inner = args[0] if args else Any
        conv = [_coerce(v, inner, name) if inner is not Ellipsis else v for v in value]
        return tuple(conv) if origin is tuple else conv
    return value


def build_config(
    cls: type[T],
    preset: Mapping[str, Any] | None = None,
    file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> T:
    """Make a ``cls`` instance from a preset, then a TOML file, then overrides (in that order)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}

    def apply(source: Mapping[str, Any], where: str) -> None:
        for key, val in source.items():
            k = key.replace("-", "_")
            if k not in fields:
                known = ", ".join(sorted(fields))
                raise ConfigError(f"unknown config field {key!r} in {where}; known fields: {known}")
            if val is None:
                continue
            values[k] = _coerce(val, hints.get(k, Any), k)

    if preset:
        apply(preset, "the preset")
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        apply(data, f"config file {path}")
    if overrides:
        apply(overrides, "the command-line options")
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"bad config for {cls.__name__}: {exc}") from None


__all__ = ["ConfigError", "build_config"]
