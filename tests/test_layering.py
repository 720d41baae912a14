"""The README's layering holds: each layer of ``mirrorattn`` imports no module of a layer above it.

The layers, bottom to top (README "Layout"): the base (``mirror``, ``io``, ``config``, ``paper``, ``checks``) ->
``data`` -> ``models`` -> ``optim`` -> ``train``; the analysis (``svm``, ``tokens``, ``metrics``) on the base
alone; ``experiments`` on all of these; ``report`` on top of them (it reads results folders); the command line
(``cli``, ``__main__``, ``torchrun``) outermost, imported by nothing.

Two checks: each layer's modules imported together in a fresh interpreter load no module of a layer they may
not use (what ``import`` really does), and no ``import`` statement in ``src/`` - including the ones inside
functions, which the first check cannot see - names such a module.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "mirrorattn"

#: layer -> the layers whose modules it may import (besides its own)
ALLOWED: dict[str, set[str]] = {
    "base": set(),
    "data": {"base"},
    "models": {"base", "data"},
    "optim": {"base", "data", "models"},
    "train": {"base", "data", "models", "optim"},
    "analysis": {"base"},
    "experiments": {"base", "data", "models", "optim", "train", "analysis"},
    "report": {"base", "data", "models", "optim", "train", "analysis", "experiments"},
    "cli": {"base", "data", "models", "optim", "train", "analysis", "experiments", "report"},
}

#: first part of a module name below ``mirrorattn`` -> its layer (the package itself is "base")
_TOP: dict[str, str] = {
    "mirror": "base", "io": "base", "config": "base", "paper": "base", "resources": "base", "checks": "base",
    "data": "data", "models": "models", "optim": "optim", "train": "train",
    "svm": "analysis", "tokens": "analysis", "metrics": "analysis",
    "experiments": "experiments", "report": "report",
    "cli": "cli", "__main__": "cli", "torchrun": "cli",
}


def layer_of(module: str) -> str:
    """The layer of ``mirrorattn...`` module ``module``; ``KeyError`` for a module the table does not place."""
    parts = module.split(".")
    return "base" if len(parts) == 1 else _TOP[parts[1]]


def source_modules() -> dict[str, Path]:
    """Every module under ``src/mirrorattn`` (dotted name -> file)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_names(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, module) of every ``mirrorattn`` import statement in ``path`` (relative imports resolved)."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            names = [".".join([*base, *([node.module] if node.module else [])])]
        else:
            continue
        found += [(node.lineno, name) for name in names if name.split(".")[0] == "mirrorattn"]
    return found


def upward_imports(layer: str, loaded: list[str]) -> list[str]:
    """The modules of ``loaded`` that ``layer`` may not import."""
    return sorted(m for m in loaded if layer_of(m) != layer and layer_of(m) not in ALLOWED[layer])


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in source_modules() if m.split(".")[1:2] and m.split(".")[1] not in _TOP]
    assert not unplaced, f"modules without a layer (add them to _TOP): {unplaced}"


def test_no_import_statement_names_a_layer_above() -> None:
    bad = []
    for module, path in source_modules().items():
        for line, name in imported_names(module, path):
            if upward_imports(layer_of(module), [name]):
                bad.append(f"{path.relative_to(SRC)}:{line} ({layer_of(module)}) imports {name} ({layer_of(name)})")
    assert not bad, "imports of a layer above:\n" + "\n".join(bad)


_PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(m for m in sys.modules if m == "mirrorattn" or m.startswith("mirrorattn."))))
"""


@pytest.mark.parametrize("layer", [layer for layer in ALLOWED if layer != "cli"])
def test_importing_a_layer_loads_nothing_above_it(layer: str) -> None:
    """All modules of ``layer`` imported together in a fresh interpreter: ``sys.modules`` holds none above it."""
    names = [m for m in source_modules() if layer_of(m) == layer]
    assert names
    run = subprocess.run([sys.executable, "-c", _PROBE, *names], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(SRC)))
    assert run.returncode == 0, run.stderr[-3000:]
    loaded = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(names) <= set(loaded)
    assert upward_imports(layer, loaded) == []


def test_layer_table_refuses_an_upward_import() -> None:
    """The checks can fail: train importing the CLI, data importing models, analysis importing experiments."""
    assert upward_imports("train", ["mirrorattn.cli", "mirrorattn.optim.lpmd"]) == ["mirrorattn.cli"]
    assert upward_imports("data", ["mirrorattn.models.vit", "mirrorattn.io"]) == ["mirrorattn.models.vit"]
    assert upward_imports("analysis", ["mirrorattn.experiments.token_selection"]) != []
    assert upward_imports("experiments", ["mirrorattn.report.build"]) == ["mirrorattn.report.build"]
    assert upward_imports("cli", ["mirrorattn.report.build", "mirrorattn.experiments.text"]) == []
