"""MkDocs hooks (mkdocs.yml `hooks:`): the site's Quickstart page is the README's, taken at
build time, so the quickstart is written once and `tests/test_readme.py` runs that one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

README = Path(__file__).resolve().parent.parent / "README.md"
TITLE = "## Quickstart: five minutes"


def quickstart() -> str:
    """The README's quickstart as a page of the site: its links to `docs/...` made relative
    to the site's root, where the pages are."""
    text = README.read_text()
    start = text.index(TITLE)
    end = text.index("\n## ", start)
    page = "# " + text[start + len("## ") : end].strip() + "\n"
    return page.replace("](docs/", "](")


def on_files(files: Files, config: Any) -> Files:
    files.append(File.generated(config, "quickstart.md", content=quickstart()))
    return files
