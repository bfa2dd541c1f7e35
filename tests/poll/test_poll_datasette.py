"""An incremental source against real Datasette over a SQLite table whose `updated_at` is
SQLite's own `CURRENT_TIMESTAMP` text (`2026-12-06 11:08:12`), filtered with Datasette's
`?updated_at__gte=...`, which compares text: `2026-12-06T11:08:12Z` sorts after every value
of its day. The table is written with the standard library's sqlite3 while Datasette serves
it, as an application beside it would.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from bridge.config import parse_config
from bridge.poll.engine import Poller
from bridge.poll.modes import Watermark
from bridge.runtime import Runtime
from bridge.store.sqlite import SQLiteStore
from tests.helpers import free_port, run_cli
from tests.third_party import Server, run_server, tool

pytestmark = pytest.mark.anyio


@pytest.fixture
def table(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(tmp_path / "shop.db", isolation_level=None)
    db.execute(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT,"
        " updated_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
    )
    db.execute("INSERT INTO items (name) VALUES ('a'), ('b')")
    yield db
    db.close()


@pytest.fixture
def datasette(tmp_path: Path, table: sqlite3.Connection) -> Iterator[Server]:
    port = free_port()
    command = [str(tool("datasette")), "serve", str(tmp_path / "shop.db"), "-h", "127.0.0.1"]
    with run_server([*command, "-p", str(port)], port, tmp_path / "datasette.log") as server:
        yield server


class Env:
    def __init__(self, store: SQLiteStore, datasette: Server, tmp_path: Path) -> None:
        self.store, self.datasette = store, datasette
        self.config_path = tmp_path / "config.yaml"
        self.pollers: list[Poller] = []

    def make(self, **poll: Any) -> None:
        cursor = {"field": "updated_at", "param": "updated_at__gte", **poll.pop("cursor", {})}
        source = {
            "url": self.datasette.url + "/shop/items.json?_shape=array&_sort=updated_at",
            "every": "1s",
            "id": "id",
            "mode": "incremental",
            "cursor": cursor,
            **poll,
        }
        data = {"database": "bridge.db", "sources": {"s": {"poll": source}}}
        self.config_path.write_text(yaml.safe_dump(data))
        config = parse_config(yaml.safe_dump(data))
        self.pollers.append(Poller(Runtime(config=config, store=self.store)))

    async def poll(self) -> None:
        await self.pollers[-1].poll_once("s")

    async def changes(self) -> list[tuple[str | None, str | None]]:
        events = reversed(await self.store.list_events(source="s", limit=None))
        return [(e.change, e.subject) for e in events]

    def status(self) -> dict[str, Any]:
        done = run_cli("status", "-c", str(self.config_path), "--json")
        assert done.returncode == 0, done.stderr
        (shown,) = json.loads(done.stdout)["sources"]
        return dict(shown)


@pytest.fixture
async def env(store: SQLiteStore, datasette: Server, tmp_path: Path) -> AsyncIterator[Env]:
    e = Env(store, datasette, tmp_path)
    yield e
    for poller in e.pollers:
        await poller.stop(1.0)


def cursors_sent(datasette: Server) -> list[str]:
    """The `updated_at__gte` values Datasette was asked for, from its own access log."""
    sent = []
    for line in datasette.log().splitlines():
        if "updated_at__gte=" in line:
            path = line.split('"GET ', 1)[1].split(" ", 1)[0]
            sent += parse_qs(urlsplit(path).query).get("updated_at__gte", [])
    return sent


async def test_rows_changed_within_the_same_day_are_seen_by_the_next_poll(
    env: Env, table: sqlite3.Connection
) -> None:
    env.make()  # no format: as Datasette writes the column
    await env.poll()  # the baseline: a and b
    assert await env.changes() == []
    assert sorted(await env.store.load_poll_versions("s")) == ["1", "2"]
    table.execute("UPDATE items SET name = 'a2', updated_at = CURRENT_TIMESTAMP WHERE id = 1")
    table.execute("INSERT INTO items (name) VALUES ('c')")
    await env.poll()
    assert sorted(await env.changes()) == [("created", "3"), ("updated", "1")]
    table.execute("UPDATE items SET name = 'c2', updated_at = CURRENT_TIMESTAMP WHERE id = 3")
    await env.poll()
    assert (await env.changes())[-1] == ("updated", "3")
    # Every cursor went back as SQLite writes its text: `2026-12-06 11:07:12`.
    sent = cursors_sent(env.datasette)
    assert sent and all(len(s) == 19 and s[10] == " " for s in sent), sent
    assert env.status()["status"] == "ok"


async def test_a_cursor_format_datasette_cannot_match_is_a_fault_at_the_next_reconcile(
    env: Env, table: sqlite3.Connection
) -> None:
    env.make(cursor={"format": "rfc3339", "lookback": "0s"}, reconcile="1h")
    await env.poll()  # a full walk: the baseline
    table.execute("UPDATE items SET name = 'a2', updated_at = CURRENT_TIMESTAMP WHERE id = 1")
    await env.poll()  # `...T...Z` sorts after the whole day: Datasette answers nothing
    assert await env.changes() == []
    # Make the reconcile due: as if the last full walk was two hours ago.
    mark = Watermark.load((await env.store.load_poll_state("s")).cursor)
    assert mark.reconciled_ms is not None
    due = Watermark(mark.value_ms, mark.reconciled_ms - 7_200_000, mark.raw)
    await env.store.write(lambda c: c.execute("UPDATE poll_state SET cursor = ?", (due.dump(),)))
    await env.poll()
    assert await env.changes() == [("updated", "1")]
    shown = env.status()
    assert shown["status"] == "cursor fault"
    assert shown["faults"] == ["the cursor filter missed 1 changes: check cursor.format"]
