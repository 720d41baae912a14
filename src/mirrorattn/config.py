"""Config dataclasses from TOML files, presets and command-line overrides.

Every experiment has a config dataclass. :func:`build_config` starts from a preset (a dict of
field values), applies a TOML file if given, then explicit overrides (``None`` means "not
given"), and checks that every key names a field and that every value has the field's type,
with a clear one-line :class:`ConfigError` otherwise (naming the source, the field, the
expected type and the value given).

Types (from the field annotations): ``int`` takes an integer (an integral float such as
``2.0`` is read as 2; ``1.5`` and booleans are refused); ``float`` a finite number; ``str`` a
string; ``bool`` true or false; ``tuple[X, ...]`` / ``list[X]`` a list of X (a single number
is read as a one-element list for number lists; a bare string is refused, write ``["adam"]``);
``dict[str, X]`` a table of X; ``X | None`` also None; ``Literal[...]`` one of its values.
Ranges and choices beyond that are checked by each config's ``validate()``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import numbers
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override names an unknown field or has a value of the wrong type."""


class _Mismatch(Exception):
    """Raised inside :func:`_convert` when a value does not fit an annotation (reported by :func:`_coerce`)."""


def _is_union(origin: Any) -> bool:
    return origin is typing.Union or origin is types.UnionType


def describe_type(annotation: Any) -> str:
    """How an error message names the type ``annotation``: ``"an integer"``, ``"a list of strings"``..."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if annotation is str:
        return "a string"
    if annotation is type(None):
        return "none"
    if _is_union(origin):
        return " or ".join(describe_type(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (tuple, list):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} values"
        inner = describe_type(args[0]) if args else "values"
        return "a list of " + _plural(inner)
    if origin is dict:
        inner = describe_type(args[1]) if len(args) == 2 else "values"
        return "a table of " + _plural(inner)
    return getattr(annotation, "__name__", str(annotation))


def _plural(description: str) -> str:
    """``"an integer"`` -> ``"integers"``, ``"a list of numbers"`` -> ``"lists of numbers"``."""
    special = {"true or false": "booleans (true or false)", "none": "nones"}
    if description in special:
        return special[description]
    word, _, rest = description.partition(" ")
    if word not in ("a", "an"):
        return description
    head, _, tail = rest.partition(" ")
    return f"{head}s" + (f" {tail}" if tail else "")


def _show(value: Any, limit: int = 80) -> str:
    """``'abc' (str)``: the value (shortened) and its TOML-ish type name."""
    names = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", tuple: "array",
             dict: "table", _dt.datetime: "date-time", _dt.date: "date", _dt.time: "time"}
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{text} ({names.get(type(value), type(value).__name__)})"


def _convert(value: Any, annotation: Any) -> Any:
    """``value`` as the type ``annotation`` describes; :class:`_Mismatch` (with a detail or none) if it is not one."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or isinstance(annotation, TypeVar):
        return value
    if annotation is type(None):
        if value is None:
            return None
        raise _Mismatch()
    if _is_union(origin):
        return _convert_union(value, args)
    if annotation in (bool, int, float, str):
        return _convert_scalar(value, annotation)
    if origin is typing.Literal:
        if any(type(value) is type(a) and value == a for a in args):
            return value
        raise _Mismatch()
    if origin in (tuple, list):
        return _convert_sequence(value, origin, args)
    if origin is dict:
        return _convert_table(value, args)
    return value  # a type this module does not know: the config's validate() checks it


def _convert_union(value: Any, args: tuple[Any, ...]) -> Any:
    """The first alternative of ``X | Y | None`` that takes ``value`` (None for None when allowed)."""
    if value is None and type(None) in args:
        return None
    details = []
    for alternative in (a for a in args if a is not type(None)):
        try:
            return _convert(value, alternative)
        except _Mismatch as exc:
            details += exc.args[:1]
    raise _Mismatch(*details[:1])


def _convert_scalar(value: Any, kind: type) -> Any:
    """bool and str as they are; int from an integer or an integral float below 2**53; float from a finite number."""
    if kind is bool or kind is str:
        if isinstance(value, kind):
            return value
        raise _Mismatch()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _Mismatch()
    if kind is int:
        if isinstance(value, numbers.Integral):
            return int(value)
        if math.isfinite(value) and float(value).is_integer() and abs(value) < 2**53:
            return int(value)  # 2.0 -> 2
        raise _Mismatch()
    number = float(value)
    if not math.isfinite(number):
        raise _Mismatch("not a finite number")
    return number


def _convert_sequence(value: Any, origin: Any, args: tuple[Any, ...]) -> Any:
    """A list (``origin`` list) or tuple of converted items; one number stands for a one-element number list."""
    fixed = origin is tuple and bool(args) and args[-1] is not Ellipsis
    inner = args[0] if args and not fixed else Any
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and inner in (int, float) and not fixed:
        value = [value]  # one number: a one-element list
    if not isinstance(value, (list, tuple)):
        raise _Mismatch()
    if fixed and len(value) != len(args):
        raise _Mismatch(f"{len(value)} values given")
    kinds = args if fixed else [inner] * len(value)
    items = []
    for i, (item, kind) in enumerate(zip(value, kinds)):
        try:
            items.append(_convert(item, kind))
        except _Mismatch as exc:
            detail = exc.args[0] if exc.args else f"not {describe_type(kind)}"
            raise _Mismatch(f"item {i} is {_show(item)}, {detail}") from None
    return tuple(items) if origin is tuple else items


def _convert_table(value: Any, args: tuple[Any, ...]) -> dict[Any, Any]:
    """A dict of converted keys and values (``args``: the key and value annotations)."""
    if not isinstance(value, Mapping):
        raise _Mismatch()
    key_kind, val_kind = args if len(args) == 2 else (Any, Any)
    out: dict[Any, Any] = {}
    for key, item in value.items():
        try:
            out[_convert(key, key_kind)] = _convert(item, val_kind)
        except _Mismatch as exc:
            detail = exc.args[0] if exc.args else f"not {describe_type(val_kind)}"
            raise _Mismatch(f"entry {key!r} is {_show(item)}, {detail}") from None
    return out


def _coerce(value: Any, annotation: Any, name: str, where: str = "the config") -> Any:
    """``value`` converted to the field's type, or a :class:`ConfigError` naming ``where``, the field and the type."""
    try:
        return _convert(value, annotation)
    except _Mismatch as exc:
        detail = exc.args[0] if exc.args else ""
        message = f"{where}: field {name!r} must be {describe_type(annotation)}, got {_show(value)}"
        if detail:
            message += f": {detail}" if isinstance(value, (list, tuple, dict)) else f", {detail}"
        if isinstance(value, str) and typing.get_origin(_strip_none(annotation)) in (tuple, list):
            message += f"; write a list: {name} = [{_toml_string(value)}]"
        elif isinstance(value, str) and typing.get_origin(_strip_none(annotation)) is dict:
            message += f"; write a table, e.g. {name} = {{ adam = 1e-3 }}"
        raise ConfigError(message) from None


def _strip_none(annotation: Any) -> Any:
    """``X | None`` -> ``X`` (other annotations unchanged)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if _is_union(typing.get_origin(annotation)) and len(args) == 1:
        return args[0]
    return annotation


def _toml_string(text: str) -> str:
    """``text`` as a TOML basic string (for the hints of error messages)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in escaped) + '"'


def _read_toml(path: Path) -> dict[str, Any]:
    """The table of a TOML file; :class:`ConfigError` (one line) when it is missing, unreadable or not TOML."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None


def build_config(
    cls: type[T],
    preset: Mapping[str, Any] | None = None,
    file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    section: str | None = None,
) -> T:
    """Make a ``cls`` instance from a preset, then a TOML file, then overrides (in that order).

    Every key must name a setting (:func:`flat_fields`: a field, or a field of a nested config by its
    own name, or a table named after the nested config) and every value have the field's type (see the
    module's docstring); :class:`ConfigError` otherwise, naming the source, the field and the value. The
    class's constructor takes the nested configs' fields by their own names (e.g.
    :class:`~mirrorattn.experiments.classification.ClassificationConfig`).
    ``section``: take the fields from the file's table ``[section]`` (none when it has no such table).
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    settings = {name: annotation for name, (annotation, _, _) in flat_fields(cls).items()}
    nested = getattr(cls, "FLATTENED", {})
    values: dict[str, Any] = {}

    def apply(source: Mapping[str, Any], where: str, table: str = "") -> None:
        for key, val in source.items():
            k = str(key).replace("-", "_")
            if k in nested and not table:  # a table of a nested config's fields: [train] epochs = 3
                if not isinstance(val, Mapping):
                    raise ConfigError(f"{where}: field {k!r} must be a table of its fields, got {_show(val)}")
                apply(val, where, k)
                continue
            if k not in settings or k in nested:
                known = ", ".join(sorted(settings))
                raise ConfigError(f"unknown config field {table + '.' if table else ''}{key!r} in {where}; "
                                  f"known fields: {known}")
            if val is None:
                continue
            values[k] = _coerce(val, settings[k], k, where)

    if preset:
        apply(preset, "the preset")
    if file is not None:
        path = Path(file)
        data = _read_toml(path)
        if section is None:
            apply(data, f"config file {path}")
        elif not isinstance(data.get(section, {}), dict):
            got = _show(data[section])
            raise ConfigError(f"config file {path}: {section!r} must be a table ([{section}]), got {got}")
        else:
            apply(data.get(section, {}), f"config file {path}, table [{section}]")
    if overrides:
        apply(overrides, "the command-line options")
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"bad config for {cls.__name__}: {exc}") from None


__all__ = ["NONE", "ConfigError", "add_field_options", "build_config", "describe_type", "field_docs", "flat_fields"]


class _NoneValue:
    """``--grad-clip none``: set the field to None (build_config treats None as "not given")."""

    def __repr__(self) -> str:
        return "none"


#: what an option of :func:`add_field_options` gives for ``none`` (``null``, ``off``): set the field to None
NONE = _NoneValue()


def _parse_scalar(kind: Any, text: str, flag: str) -> Any:
    import argparse

    if text.strip().lower() in ("none", "null", "off"):
        return NONE
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{flag}: expected a {kind.__name__} or 'none', got {text!r}") from None


def _option_kind(annotation: Any) -> tuple[Any, bool]:
    """(scalar type, takes several values) of a field annotation: ``float | None`` -> (float, False),
    ``tuple[int, ...]`` and ``int | tuple[int, ...]`` -> (int, True); (None, False) for what no option gives."""
    scalars = (bool, int, float, str)
    options = [a for a in typing.get_args(annotation) if a is not type(None)] if _is_union(
        typing.get_origin(annotation)) else [annotation]
    for alternative in options:
        origin, args = typing.get_origin(alternative), typing.get_args(alternative)
        if origin in (tuple, list) and args and args[0] in scalars and (origin is list or args[-1] is Ellipsis):
            return args[0], True
    return (options[0], False) if len(options) == 1 and options[0] in scalars else (None, False)


def add_field_options(group: Any, fields: Mapping[str, tuple[Any, Any, str]], help_text: Callable[[str, Any, str], str],
                      aliases: Mapping[str, tuple[str, ...]] | None = None) -> None:
    """One option ``--field-name`` per config field of ``fields`` (name -> (annotation, default, documentation),
    e.g. :func:`flat_fields`) on the argparse parser or group ``group``: the one generator of the experiments'
    options. Booleans get ``--x`` / ``--no-x``; numbers and strings take one value (parsed by the field's type,
    ``none`` giving :data:`NONE`), lists of them one or more (``--ps 1.75 2``); tables get no option.
    ``help_text(name, default, documentation)``: the option's help; ``aliases``: more option strings (``-p``).
    Every option's value is None when it is not given."""
    import argparse

    for name, (annotation, default, doc) in fields.items():
        kind, several = _option_kind(annotation)
        if kind is None:
            continue
        flags = ["--" + name.replace("_", "-"), *(aliases or {}).get(name, ())]
        text = help_text(name, default, doc)
        if kind is bool and not several:
            group.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            group.add_argument(*flags, dest=name, default=None, metavar=kind.__name__.upper(), help=text,
                               nargs="+" if several else None,
                               type=(lambda s, k=kind, fl=flags[0]: _parse_scalar(k, s, fl)))


def _default(f: dataclasses.Field) -> Any:
    """A field's default value (from its factory if it has one); ``dataclasses.MISSING`` without one."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def flat_fields(cls: type) -> dict[str, tuple[Any, Any, str]]:
    """Name -> (type annotation, default, documentation) of every setting of the config dataclass ``cls``.

    Its own fields, except that a nested config named in the class attribute ``FLATTENED`` (field name ->
    names left out) stands for its own fields, by their names, in its place: the default is the nested
    default's value, the documentation the nested class's ``#:`` comment (:func:`field_docs`).
    """
    hints, docs = typing.get_type_hints(cls), field_docs(cls)
    nested = getattr(cls, "FLATTENED", {})
    out: dict[str, tuple[Any, Any, str]] = {}
    for f in dataclasses.fields(cls):
        if f.name not in nested:
            out[f.name] = (hints.get(f.name, Any), _default(f), docs.get(f.name, ""))
            continue
        inner, inner_hints, inner_docs = _default(f), typing.get_type_hints(hints[f.name]), field_docs(hints[f.name])
        for g in dataclasses.fields(inner):
            if g.name not in nested[f.name]:
                out[g.name] = (inner_hints.get(g.name, Any), getattr(inner, g.name), inner_docs.get(g.name, ""))
    return out


def comment_doc(lines: list[str], first: int, last: int) -> str:
    """The ``#:`` documentation of the statement on lines ``first`` .. ``last`` (1-based) of ``lines``: the
    ``#:`` lines right above it and the ``#:`` comment on its last line, joined ('' when there is none).
    Shared with the docs build (docs/_mkdocs/field_comments.py)."""
    above, i = [], first - 2
    while i >= 0 and lines[i].strip().startswith("#:"):
        above.insert(0, lines[i].strip()[2:].strip())
        i -= 1
    inline = lines[last - 1].partition("#:")[2].strip()
    return " ".join(part for part in (*above, inline) if part).strip()


def _class_field_docs(cls: type) -> dict[str, str]:
    """The ``#:`` comments of the fields declared in ``cls`` itself (inline after the field, or the ``#:`` lines
    right above it, as Sphinx autodoc reads them)."""
    import ast
    import inspect
    import textwrap

    try:
        lines = textwrap.dedent(inspect.getsource(cls)).splitlines()
    except (OSError, TypeError):  # no source (e.g. a class made at run time)
        return {}
    body = ast.parse("\n".join(lines)).body[0]
    docs: dict[str, str] = {}
    for node in getattr(body, "body", []):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        text = comment_doc(lines, node.lineno, node.end_lineno or node.lineno)
        if text:
            docs[node.target.id] = text
    return docs


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its documentation (the ``#:`` comment) for the dataclass ``cls`` and its bases, the
    subclass's comment winning; fields without one are left out."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_class_field_docs(klass))
    return docs
