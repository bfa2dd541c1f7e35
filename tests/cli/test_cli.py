"""The command line: every command has help; `events` lists what is stored."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from bridge import __version__
from bridge.cli import cli
from bridge.events import Event, event_id
from bridge.store import NewEvent
from bridge.store.sqlite import SQLiteStore
from tests.helpers import run_cli


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))


COMMANDS = list(all_commands(cli))


def test_there_are_commands() -> None:
    assert {("run",), ("check",), ("events",)} <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output
    command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    assert command.help, f"bridge {' '.join(path)} has no help text"


def test_version_and_module_entry_point() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["frobnicate"])
    assert result.exit_code == 2


@pytest.fixture
def stored(write_config) -> Path:
    path = write_config("database: events.db\n")
    store = SQLiteStore(path.parent / "events.db")
    store.open()
    events = [
        Event(
            id=event_id(src, str(i)),
            source=src,
            type=f"{src}.created",
            origin="push",
            data={"n": i},
            recorded_ms=1_795_941_000_000 + i,
            subject=f"item-{i}",
        )
        for i, src in enumerate(["orders", "github", "orders"])
    ]
    asyncio.run(store.record_events([NewEvent(e) for e in events]))
    store.close()
    return path


def test_events_json_is_one_array_of_cloudevents_newest_first(stored: Path) -> None:
    result = CliRunner().invoke(cli, ["events", "-c", str(stored), "--json"])
    assert result.exit_code == 0, result.output
    events = json.loads(result.stdout)
    assert [e["subject"] for e in events] == ["item-2", "item-1", "item-0"]
    assert all(e["specversion"] == "1.0" for e in events)
    only = json.loads(
        CliRunner()
        .invoke(cli, ["events", "-c", str(stored), "--json", "--source", "orders", "--limit", "1"])
        .stdout
    )
    assert [e["subject"] for e in only] == ["item-2"]
    by_type = json.loads(
        CliRunner()
        .invoke(cli, ["events", "-c", str(stored), "--json", "--type", "github.created"])
        .stdout
    )
    assert [e["source"] for e in by_type] == ["github"]


def test_events_table(stored: Path) -> None:
    result = CliRunner().invoke(cli, ["events", "-c", str(stored)])
    assert result.exit_code == 0
    assert "orders.created" in result.stdout and "item-1" in result.stdout
