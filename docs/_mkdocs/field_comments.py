"""Griffe extension of the docs build: ``#:`` comments as attribute docs, Sphinx roles as code.

- The configs document their fields the way Sphinx autodoc reads them: a ``#:`` comment after the
  field on the same line, or ``#:`` lines right above it (``mirrorattn.config.field_docs`` reads the
  same comments for the command-line help). Griffe reads only docstrings, so this extension turns
  those comments into the attribute's docstring when it has none.
- The docstrings name other objects with Sphinx roles (``:class:`~mirrorattn.svm.SVMError` ``),
  which Markdown would show with the role in front; they are rewritten as inline code
  (``SVMError``, the ``~`` form keeping the last component as Sphinx does), and the literal-block
  marker ``::`` at the end of a line becomes ``:`` (the indented block after it is code either way).

The comment reading is ``mirrorattn.config.comment_doc`` (the one the command-line help uses); the
documented modules themselves are read statically.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import griffe

from mirrorattn.config import comment_doc

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|data|attr|mod|exc|obj|const):`(~?)([^`]+)`")
#: reStructuredText's literal-block marker at the end of a line ("each step)::"), shown as ":" by Sphinx
_LITERAL_MARKER = re.compile(r"(?<=\S)::$", re.MULTILINE)


def _role_as_code(match: re.Match[str]) -> str:
    target = match.group(2).strip()
    if match.group(1):
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def _clean(obj: griffe.Object) -> None:
    if obj.docstring is not None and ":" in obj.docstring.value:
        obj.docstring.value = _LITERAL_MARKER.sub(":", _ROLE.sub(_role_as_code, obj.docstring.value))


class FieldComments(griffe.Extension):
    """Attach ``#:`` comments to attributes without a docstring; rewrite Sphinx roles as inline code."""

    def on_module_instance(self, *, mod: griffe.Module, **kwargs: Any) -> None:
        _clean(mod)

    def on_class_instance(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        _clean(cls)

    def on_function_instance(self, *, func: griffe.Function, **kwargs: Any) -> None:
        _clean(func)

    def on_attribute_instance(self, *, node: ast.AST | griffe.ObjectNode, attr: griffe.Attribute,
                              agent: griffe.Visitor | griffe.Inspector, **kwargs: Any) -> None:
        if attr.docstring is None and attr.lineno is not None:
            text = _field_comment(attr)
            if text:
                attr.docstring = griffe.Docstring(text, lineno=attr.lineno, endlineno=attr.endlineno, parent=attr)
        _clean(attr)


def _field_comment(attr: griffe.Attribute) -> str:
    """The ``#:`` lines right above the attribute and the ``#:`` comment on its last line, joined."""
    try:
        lines = attr.lines_collection[attr.filepath]  # the module's source lines (lineno is 1-based)
    except (KeyError, TypeError):
        return ""
    return comment_doc(list(lines), attr.lineno, attr.endlineno or attr.lineno)
