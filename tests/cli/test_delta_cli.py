"""Delta sources from the outside: `bridge presets`, `bridge poll --dry-run` against each
simulated provider, mistakes as one line and exit 2, and the real daemon killed (SIGKILL)
between two pages of a delta walk: nothing lost, nothing invented
(tests/poll/sync_providers.py on 127.0.0.1)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import DaemonProcess, run_cli, wait_until
from tests.poll.sync_providers import (
    DROPBOX_TOKEN,
    GOOGLE_TOKEN,
    GRAPH_TOKEN,
    Calendar,
    DeltaSimulation,
    Drive,
    Dropbox,
    Graph,
)
from tests.scripted_server import Script, scripted_server

SOURCES = """
sources:
  graph-users:
    poll: {{preset: microsoft-graph, resource: users, token: {graph}, api_url: "{base}/v1.0",
            every: 300ms}}
  calendar:
    poll: {{preset: google-calendar, resource: events, token: {google}, api_url: "{base}",
            every: 300ms}}
  drive:
    poll: {{preset: google-drive, resource: changes, token: {google}, api_url: "{base}",
            every: 300ms}}
  files:
    poll: {{preset: dropbox, resource: files, token: {dropbox}, api_url: "{base}",
            every: 300ms}}
"""


@pytest.fixture
def sims() -> Iterator[tuple[list[DeltaSimulation], Script, str]]:
    with scripted_server() as (script, base):
        graph, calendar, drive, box = Graph(), Calendar(), Drive(), Dropbox()
        for sim in (graph, calendar, drive, box):
            sim.install(script)  # type: ignore[attr-defined]
        for n in (1, 2, 3):
            graph.data.put(f"u{n}", displayName=f"U{n}")
            calendar.data.put(f"e{n}", summary=f"E{n}", etag=f'"{n}"', status="confirmed")
            drive.data.put(f"f{n}", name=f"f{n}.txt")
            box.data.put(f"/f{n}.txt", name=f"f{n}.txt", rev="1")
        yield [graph, calendar, drive, box], script, base
        assert [line for sim in (graph, calendar, drive, box) for line in sim.refused] == []


@pytest.fixture
def config_file(tmp_path: Path, sims: tuple[list[DeltaSimulation], Script, str]) -> Path:
    path = tmp_path / "config.yaml"
    text = SOURCES.format(base=sims[2], graph=GRAPH_TOKEN, google=GOOGLE_TOKEN,
                          dropbox=DROPBOX_TOKEN)  # fmt: skip
    path.write_text("database: bridge.db\n" + text)
    return path


def test_presets_lists_the_delta_presets_and_how_each_signs_in() -> None:
    result = run_cli("presets")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for line in (
        "microsoft-graph: Microsoft Graph delta query",
        "sign in    tenant, client_id, client_secret: OAuth2 client credentials against"
        " login.microsoftonline.com/{tenant}",
        "google-calendar:", "google-drive:", "dropbox:",
        "sign in    key_file, subject: a service account (OAuth2 JWT bearer)",
        "sign in    app_key, app_secret, refresh_token: OAuth2 refresh token",
        "drive-items", "users", "groups", "messages", "events", "changes", "files",
    ):  # fmt: skip
        assert line in out


@pytest.mark.parametrize(("name", "items"), [("graph-users", 3), ("calendar", 3), ("files", 3)])
def test_dry_run_of_a_delta_preset_shows_its_full_walk(
    config_file: Path, name: str, items: int
) -> None:
    result = run_cli("poll", "-c", str(config_file), name, "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == 200 and summary["requests"] == 2  # two pages of two
    assert summary["items"] == items and len(summary["events"]) == items
    assert all(e["type"] == f"{name}.created" for e in summary["events"])
    assert not (config_file.parent / "bridge.db").exists()  # a dry run creates nothing
    assert GRAPH_TOKEN not in result.stdout + result.stderr


def test_dry_run_of_drive_asks_only_for_the_start_token(config_file: Path) -> None:
    result = run_cli("poll", "-c", str(config_file), "drive", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("drive: HTTP 200, 1 requests, 0 items"), result.stdout


@pytest.mark.parametrize(
    ("poll", "message"),
    [
        ("{preset: microsoft-graph, resource: users}",
         "c.yaml:3: sources.s.poll.token: is required (or the preset's OAuth2 keys)"
         " (preset microsoft-graph)"),
        ("{preset: microsoft-graph, resource: events, token: t, user: u}",
         "c.yaml:3: sources.s.poll.start: is required by resource events"),
        ("{preset: google-calendar, resource: events, refresh_token: r}",
         "c.yaml:3: sources.s.poll.client_id: is required by a Google refresh token"),
        ("{url: 'https://x.example/d', every: 1m, id: id, mode: delta,"
         " delta: {token: {param: t}, next: n}}",
         "c.yaml:3: sources.s.poll.delta.final:"),
    ],
)  # fmt: skip
def test_delta_mistakes_exit_2_with_one_line(tmp_path: Path, poll: str, message: str) -> None:
    (tmp_path / "c.yaml").write_text(f"sources:\n  s:\n    poll: {poll}\n")
    result = run_cli("check", "-c", "c.yaml", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(message), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


# -- the daemon ------------------------------------------------------------------------------


def stored(db: Path) -> list[tuple[str, str | None, str | None]]:
    """(source, change, subject) of every stored event, read beside the daemon."""
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        try:
            query = "SELECT source, change, subject FROM events ORDER BY seq"
            return conn.execute(query).fetchall()
        except sqlite3.OperationalError:
            return []


def token_of(db: Path, source: str) -> str | None:
    if not db.exists():
        return None
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        try:
            row = conn.execute(
                "SELECT cursor FROM poll_state WHERE source = ? AND baselined = 1", (source,)
            ).fetchone()
        except sqlite3.OperationalError:
            return None
    token = json.loads(row[0]).get("token") if row and row[0] else None
    return token if isinstance(token, str) else None


@pytest.mark.slow
def test_sigkill_between_two_pages_of_a_delta_walk_loses_and_invents_nothing(
    daemon: Callable[..., DaemonProcess],
    sims: tuple[list[DeltaSimulation], Script, str],
    tmp_path: Path,
) -> None:
    (graph, *_), script, base = sims
    config = (
        "database: bridge.db\n"
        + SOURCES.format(
            base=base, graph=GRAPH_TOKEN, google=GOOGLE_TOKEN, dropbox=DROPBOX_TOKEN
        ).split("  calendar:")[0]
    )
    db = tmp_path / "bridge.db"
    first = daemon(config)
    wait_until(lambda: token_of(db, "graph-users") is not None, timeout_s=30)
    baseline_token = token_of(db, "graph-users")
    assert baseline_token is not None and baseline_token.endswith("$deltatoken=dt3")
    with graph.lock:
        graph.data.put("u1", displayName="Ada")
        graph.data.remove("u2")
        for n in (4, 5, 6):
            graph.data.put(f"u{n}", displayName=f"U{n}")
        graph.hold_page = graph.walk_pages + 1  # the next walk's second page waits
    assert graph.holding.wait(timeout=30), "the walk never reached its second page"
    first.kill()  # SIGKILL between page 1 and page 2
    graph.hold_page = None
    graph.release.set()
    assert stored(db) == [], "nothing of the cut walk was committed"
    assert token_of(db, "graph-users") == baseline_token, "the token moves only with a commit"

    second = daemon(config)
    expected = [("graph-users", "updated", "u1"), ("graph-users", "deleted", "u2")] + [
        ("graph-users", "created", f"u{n}") for n in (4, 5, 6)
    ]
    wait_until(lambda: len(stored(db)) >= len(expected), timeout_s=30)
    with graph.lock:
        seen = len(script.seen)
    wait_until(lambda: len(script.seen) >= seen + 3, timeout_s=30)  # more polls after it
    assert sorted(stored(db)) == sorted(expected)  # each change once, nothing else
    assert token_of(db, "graph-users") == f"{base}/v1.0/users/delta?$deltatoken=dt8"
    assert second.terminate() == 0
    for process in (first, second):
        assert "deltatoken" not in process.log()
