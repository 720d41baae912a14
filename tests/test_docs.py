"""The documentation site builds with ``mkdocs build --strict``, offline, and holds what it promises.

Checked: every page of the nav exists (as a file in ``docs/`` and as a built page), the strict build
passes (no broken link, anchor or mkdocstrings reference), no build step reaches the network, and
the API reference renders the docstrings (``LpMirrorDescent``'s update rule, the config fields'
``#:`` comments through the build's griffe extension). Skipped when the ``docs`` extra is not
installed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _missing_modules() -> list[str]:
    """The modules of the ``docs`` extra that cannot be imported here."""
    missing = []
    for name in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python", "yaml"):
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # the parent package of a dotted name is missing
            found = False
        if not found:
            missing.append(name)
    return missing


_MISSING = _missing_modules()
pytestmark = pytest.mark.skipif(bool(_MISSING), reason=f"docs extra not installed (missing: {', '.join(_MISSING)}); "
                                "pip install -c constraints.txt -e '.[docs]'")


def _nav_pages(nav: Any) -> Iterator[str]:
    """Every page path (docs-relative) of an mkdocs nav; external links are left out."""
    if isinstance(nav, str):
        if "://" not in nav:
            yield nav
    elif isinstance(nav, list):
        for item in nav:
            yield from _nav_pages(item)
    elif isinstance(nav, dict):
        for value in nav.values():
            yield from _nav_pages(value)


def _config() -> dict[str, Any]:
    import yaml

    return yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))


def _built_page(site: Path, page: str) -> Path:
    """Where mkdocs (use_directory_urls) writes the HTML of the docs-relative ``page``."""
    stem = Path(page).with_suffix("")
    if stem.name in ("index", "README"):
        return site / stem.parent / "index.html"
    return site / stem / "index.html"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    # a dead proxy: a build step that fetched anything (fonts, inventories, social cards) would fail the build
    dead = "http://127.0.0.1:9"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", OMP_NUM_THREADS="1", http_proxy=dead, https_proxy=dead,
               HTTP_PROXY=dead, HTTPS_PROXY=dead, no_proxy="", NO_PROXY="")
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
           "--site-dir", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    assert "WARNING" not in proc.stderr, proc.stderr
    return out


def test_config_is_offline() -> None:
    cfg = _config()
    assert cfg["theme"]["font"] is False  # Material would otherwise link Google Fonts
    plugins = [next(iter(p)) if isinstance(p, dict) else p for p in cfg["plugins"]]
    assert "social" not in plugins and "privacy" not in plugins
    handler = cfg["plugins"][plugins.index("mkdocstrings")]["mkdocstrings"]["handlers"]["python"]
    assert not handler.get("inventories") and not handler.get("import")  # no remote objects.inv


def test_every_nav_page_exists(site: Path) -> None:
    pages = list(_nav_pages(_config()["nav"]))
    assert len(pages) >= 15
    missing_sources = [p for p in pages if not (DOCS / p).is_file()]
    assert not missing_sources, f"nav pages missing from docs/: {missing_sources}"
    missing_html = [p for p in pages if not _built_page(site, p).is_file()]
    assert not missing_html, f"nav pages not built: {missing_html}"


def test_api_reference_renders_the_docstrings(site: Path) -> None:
    optim = _built_page(site, "api/optim.md").read_text(encoding="utf-8")
    assert "mirrorattn.optim.LpMirrorDescent" in optim
    assert "l_p mirror descent with the potential psi(w)" in optim  # the class docstring's first line
    assert "Exponent fast paths." in optim and "resync_dual" in optim
    train = _built_page(site, "api/train.md").read_text(encoding="utf-8")
    assert "GLOBAL batch size (split across DDP ranks)" in train  # a #: field comment (docs/_mkdocs extension)
    assert ":class:" not in train and ":func:" not in optim  # Sphinx roles rewritten as code
    for page, name in (("api/svm.md", "attention_svm"), ("api/tokens.md", "selected_tokens"),
                       ("api/metrics.md", "hoyer_sparsity"), ("api/experiments.md", "TextExperimentConfig")):
        assert name in _built_page(site, page).read_text(encoding="utf-8"), (page, name)
