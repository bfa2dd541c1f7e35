"""The reference pages under docs/reference/ against the code: each committed page is what
docs/gen_reference.py writes from the code now (`make docs` writes them), and every config key,
command, option and metric the code has is in them, found by walks of their own."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import click
import pytest

from bridge.cli import cli
from bridge.config import Config
from bridge.config.keys import known_keys
from tests.test_readme import command_paths, served_names

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference"


def generator() -> ModuleType:
    """docs/gen_reference.py, imported from its path (docs/ is no package)."""
    spec = importlib.util.spec_from_file_location(
        "gen_reference", ROOT / "docs" / "gen_reference.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_reference", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("page", ["config.md", "cli.md", "metrics.md", "api.md"])
def test_the_committed_reference_is_what_the_code_gives(page: str) -> None:
    fresh = {path.name: text for path, text in generator().pages().items()}
    committed = (REFERENCE / page).read_text()
    assert committed == fresh[page], f"docs/reference/{page} is stale: run `make docs`"


def sections(text: str) -> dict[str, str]:
    """A page's text under each `## ` heading, by the heading."""
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def row_keys(text: str) -> set[str]:
    """The first cell of each table row: `key`."""
    return set(re.findall(r"^\| `([^`]+)` \|", text, re.M))


def config_places(
    path: tuple[str, ...] = (), shown: tuple[str, ...] = ()
) -> dict[tuple[str, ...], list[str]]:
    """Every place of the config that takes keys, walked with `known_keys` (the walk `bridge
    check` suggests keys with), by its key path without the names a user chooses."""
    keys = known_keys(Config, path)
    out = {shown: keys} if keys else {}
    for key in keys:
        for step in ((key,), (key, "name")):  # a section, or a mapping's or list's items
            if known_keys(Config, path + step):
                out |= config_places(path + step, (*shown, key))
                break
    return out


def test_every_config_key_is_in_the_reference() -> None:
    page = sections((REFERENCE / "config.md").read_text())
    listed: dict[tuple[str, ...], set[str]] = {}
    for title, text in page.items():
        path = title.strip("`").replace(".NAME", "").replace("[]", "")
        at = () if title == "The top level" else tuple(path.split("."))
        listed[at] = row_keys(text)
    places = config_places()
    assert len(places) > 15  # the walk reaches the nested places
    missing = [
        ".".join((*at, key)) for at, keys in places.items() for key in keys
        if key not in listed.get(at, set())
    ]  # fmt: skip
    assert missing == []


def test_every_command_and_option_is_in_the_reference() -> None:
    page = sections((REFERENCE / "cli.md").read_text())
    missing = []
    for path in sorted(command_paths(cli)):
        title = "`bridge " + " ".join(path) + "`"
        if title not in page:
            missing.append(title)
            continue
        command: click.Command = cli
        for word in path:
            assert isinstance(command, click.Group)
            command = command.commands[word]
        options = [p for p in command.params if isinstance(p, click.Option) and not p.hidden]
        for option in options:
            if f"`{', '.join(option.opts + option.secondary_opts)}`" not in page[title]:
                missing.append(f"{title} {option.opts[-1]}")
    assert missing == []


def test_every_metric_is_in_the_reference() -> None:
    listed = row_keys((REFERENCE / "metrics.md").read_text())
    families = {n for n in served_names() if not n.endswith(("_bucket", "_count", "_sum"))}
    assert families and sorted(families - listed) == []
