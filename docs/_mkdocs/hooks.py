"""MkDocs hooks of the docs build (local, no network).

``OPTIONAL_PAGES``: pages that the nav and other pages link to but that a concurrent change may not
have added to ``docs/`` yet. While such a file is missing, the build generates a one-paragraph
placeholder in its place (an INFO line says so; nothing is written to ``docs/``), so the strict
build still checks every other link. Once the real page exists it is built and checked like every
other page, and its entry here can go.
"""

from __future__ import annotations

import logging
from typing import Any

from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.optional_pages")

#: docs-relative path -> (title, what the page will hold) of the pages that may be absent
OPTIONAL_PAGES: dict[str, tuple[str, str]] = {
    "byo-data.md": ("Bring your own data",
                    "Training on image folders, text split files and files of your own."),
}


def on_files(files: Files, config: Any, **kwargs: Any) -> Files:
    for src_uri, (title, what) in OPTIONAL_PAGES.items():
        if files.get_file_from_path(src_uri) is None:
            log.info("optional page %s is not in docs/ yet: the build uses a placeholder", src_uri)
            content = f"# {title}\n\n{what} This page is being written.\n"
            files.append(File.generated(config, src_uri, content=content))
    return files
