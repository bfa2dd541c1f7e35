"""An incremental source's cursor against real HTTP servers on 127.0.0.1, with a real store.

The upstreams are scripted (tests/scripted_server.py): one that compares the cursor with its
values as text, as an API over a text column does (`' ' < 'T'`), and one that compares them
as times. Datasette over a SQLite table whose `updated_at` is SQLite's own text is in
test_poll_datasette.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import yaml

from bridge import metrics
from bridge.config import parse_config
from bridge.errors import ConfigError
from bridge.events import parse_time
from bridge.poll.engine import Poller
from bridge.poll.modes import Watermark
from bridge.runtime import Runtime
from bridge.store.sqlite import SQLiteStore
from bridge.timelayout import infer, named
from tests.conftest import TEST_SECRET
from tests.helpers import run_cli
from tests.scripted_server import Reply, Script, Seen

pytestmark = pytest.mark.anyio

SQLITE = "%Y-%m-%d %H:%M:%S"


def source(base: str, **poll: Any) -> dict[str, Any]:
    cursor = {"field": "updated_at", "param": "since", **poll.pop("cursor", {})}
    return {
        "url": base + "/items",
        "every": "1s",
        "id": "id",
        "mode": "incremental",
        "cursor": cursor,
        **poll,
    }


class Env:
    def __init__(self, store: SQLiteStore, script: Script, base: str, tmp_path: Path) -> None:
        self.store, self.script, self.base, self.tmp_path = store, script, base, tmp_path
        self.pollers: list[Poller] = []
        self.config_path = tmp_path / "config.yaml"

    def make(self, **poll: Any) -> Poller:
        data = {
            "database": "bridge.db",
            "sources": {"s": {"poll": source(self.base, **poll)}},
            "targets": {"t": {"url": "http://127.0.0.1:9/in", "secret": TEST_SECRET}},
        }
        self.config_path.write_text(yaml.safe_dump(data))
        poller = Poller(Runtime(config=parse_config(yaml.safe_dump(data)), store=self.store))
        self.pollers.append(poller)
        return poller

    async def poll(self) -> None:
        await self.pollers[-1].poll_once("s")

    async def changes(self) -> list[tuple[str | None, str | None]]:
        events = reversed(await self.store.list_events(source="s", limit=None))
        return [(e.change, e.subject) for e in events]

    async def mark(self) -> Watermark:
        return Watermark.load((await self.store.load_poll_state("s")).cursor)

    def sent(self) -> str | None:
        """The cursor the last request sent, if any."""
        return parse_qs(self.script.seen[-1].query).get("since", [None])[0]

    async def make_reconcile_due(self) -> None:
        """As if the last full walk was two hours ago."""
        mark = await self.mark()
        assert mark.reconciled_ms is not None
        due = Watermark(**{**_fields(mark), "reconciled_ms": mark.reconciled_ms - 7_200_000})
        await self.store.write(
            lambda c: c.execute("UPDATE poll_state SET cursor = ?", (due.dump(),))
        )

    def status(self) -> dict[str, Any]:
        done = run_cli("status", "-c", str(self.config_path), "--json")
        assert done.returncode == 0, done.stderr
        (shown,) = json.loads(done.stdout)["sources"]
        return dict(shown)


def _fields(mark: Watermark) -> dict[str, Any]:
    return {name: getattr(mark, name) for name in mark.__dataclass_fields__}


@pytest.fixture
async def env(store: SQLiteStore, server: tuple[Script, str], tmp_path: Path) -> AsyncIterator[Env]:
    e = Env(store, *server, tmp_path)
    yield e
    for poller in e.pollers:
        await poller.stop(1.0)


@dataclass
class Table:
    """Rows with an `updated_at` written in `layout`; a filter that compares it as text (like
    SQLite's `updated_at >= ?` on a TEXT column) or, with `as_time`, as a time."""

    layout: str = SQLITE
    as_time: bool = False
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)

    def put(self, key: str, at: datetime | str | int, **body: Any) -> None:
        stamp = at.strftime(self.layout) if isinstance(at, datetime) else at
        self.rows[key] = {"id": key, "updated_at": stamp, **body}

    def route(self, seen: Seen) -> Reply:
        since = parse_qs(seen.query).get("since", [None])[0]
        rows = list(self.rows.values())
        if since is not None and self.as_time:
            floor = parse_time(since)
            assert floor is not None, f"the upstream cannot read since={since!r}"
            rows = [r for r in rows if (parse_time(r["updated_at"]) or 0) >= floor]
        elif since is not None:
            rows = [r for r in rows if str(r["updated_at"]) >= since]
        return Reply(body=sorted(rows, key=lambda r: str(r["updated_at"])))


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# -- a cursor compared as text ----------------------------------------------------------------


async def test_a_cursor_compared_as_text_goes_back_in_the_upstreams_layout(env: Env) -> None:
    table = Table()
    table.put("a", now() - timedelta(seconds=30))  # inside the first poll's lookback
    env.script.route("/items", table.route)
    env.make()  # no format: the upstream's own layout
    await env.poll()  # the baseline
    assert await env.changes() == [] and await env.store.load_poll_versions("s")
    table.put("a", now(), n=1)  # the same day: after the cursor as text only in its layout
    table.put("b", now())
    await env.poll()
    assert await env.changes() == [("updated", "a"), ("created", "b")]
    sent = env.sent()
    assert sent is not None and "T" not in sent and not sent.endswith("Z")
    assert datetime.strptime(sent, SQLITE)  # 2026-12-06 11:07:12: SQLite's own text


async def test_the_layout_is_learnt_once_from_an_unfiltered_page(env: Env) -> None:
    table = Table()
    table.put("a", now() - timedelta(hours=1))  # older than the first poll's window
    env.script.route("/items", table.route)
    env.make()
    await env.poll()
    # One unfiltered page to learn how the upstream writes its times, then the filtered one.
    assert [parse_qs(s.query).get("since") is None for s in env.script.seen] == [True, False]
    await env.poll()
    assert len(env.script.seen) == 3  # learnt: one request
    sent = env.sent()
    assert sent is not None and datetime.strptime(sent, SQLITE)
    assert (await env.mark()).raw == table.rows["a"]["updated_at"]


@pytest.mark.parametrize(
    ("raw", "at_ms", "sent"),
    [
        ("2026-12-06 11:08:12", 1_765_019_292_999, "2025-12-06 11:08:12"),
        ("2026-12-06T11:08:12Z", 1_765_019_292_999, "2025-12-06T11:08:12Z"),
        ("2026-12-06T11:08:12.123456Z", 1_765_019_292_999, "2025-12-06T11:08:12.999000Z"),
        ("2026-12-06T11:08:12.12z", 1_765_019_292_999, "2025-12-06T11:08:12.99z"),
        ("2026-12-06T13:08:12+02:00", 1_765_019_292_999, "2025-12-06T13:08:12+02:00"),
        ("2026-12-06t06:38:12-0430", 1_765_019_292_999, "2025-12-06t06:38:12-0430"),
        ("2026-12-06T11:08:12", 1_765_019_292_999, "2025-12-06T11:08:12"),
        ("2026-12-06 11:08", 1_765_019_292_999, "2025-12-06 11:08"),
        ("2026-12-06", 1_765_019_292_999, "2025-12-06"),
        (1_765_019_292, 1_765_019_292_999, "1765019292"),
        ("1765019292123", 1_765_019_292_999, "1765019292999"),
    ],
)
def test_the_layout_is_inferred_from_the_upstreams_value(raw: Any, at_ms: int, sent: str) -> None:
    layout = infer(raw)
    assert layout is not None and layout.render(at_ms) == sent
    # Written back, the value reads as the same time or earlier (earlier asks a little more).
    assert (parse_time(layout.render(at_ms)) or 0) <= at_ms


def test_named_formats_and_patterns() -> None:
    at_ms = 1_765_019_292_999
    assert named("rfc3339").render(at_ms) == "2025-12-06T11:08:12Z"
    assert named("iso8601").render(at_ms) == "2025-12-06T11:08:12+00:00"
    assert named("sqlite").render(at_ms) == "2025-12-06 11:08:12"
    assert named("unix").render(at_ms) == "1765019292"
    assert named("unix_ms").render(at_ms) == str(at_ms)
    assert named("%Y-%m-%dT%H:%M:%S.%3f%:z").render(at_ms) == "2025-12-06T11:08:12.999+00:00"
    assert named("%d/%m/%Y %%").render(at_ms) == "06/12/2025 %"
    assert infer("yesterday") is None and infer(True) is None


async def test_an_explicit_format_is_sent_as_it_says(env: Env) -> None:
    table = Table(as_time=True)
    table.put("a", now() - timedelta(hours=1))
    env.script.route("/items", table.route)
    env.make(cursor={"format": "%Y-%m-%dT%H:%M:%S.%3fZ", "lookback": "0s"})
    await env.poll()
    sent = env.sent()
    assert sent is not None and sent.endswith("Z") and len(sent) == len("2026-12-06T11:08:12.000Z")
    # A single request: a given format needs nothing learnt from the upstream first.
    assert len(env.script.seen) == 1


async def test_a_reconcile_walk_that_finds_changes_the_filter_missed_is_a_fault(
    env: Env,
) -> None:
    missed_before = metrics.POLL_CURSOR_MISSED.labels("s")._value.get()
    table = Table()
    table.put("a", now() - timedelta(minutes=30))
    env.script.route("/items", table.route)
    # The wrong format for this upstream: `2026-...T...Z` sorts after its whole day.
    env.make(cursor={"format": "rfc3339", "lookback": "0s"}, reconcile="1h")
    await env.poll()  # a full walk: the baseline
    # Stamped a second back: before the next poll, which should have returned them.
    table.put("a", now() - timedelta(seconds=1), n=1)
    table.put("b", now() - timedelta(seconds=1))
    await env.poll()  # the filtered poll asks in the wrong layout and finds nothing
    assert await env.changes() == []
    assert env.status()["status"] == "ok"
    await env.make_reconcile_due()
    await env.poll()  # the full walk finds both
    assert sorted(await env.changes()) == [("created", "b"), ("updated", "a")]
    fault = "the cursor filter missed 2 changes: check cursor.format"
    assert (await env.mark()).missed == 2
    shown = env.status()
    assert shown["status"] == "cursor fault"
    assert shown["faults"] == [fault] and shown["last_error"] == fault
    assert metrics.POLL_CURSOR_MISSED.labels("s")._value.get() == missed_before + 2
    # Fixed: the next full walk that finds nothing missed clears the fault.
    env.make(cursor={"format": "sqlite"}, reconcile="1h")
    table.put("c", now())
    await env.poll()
    assert (await env.changes())[-1] == ("created", "c")
    await env.make_reconcile_due()
    await env.poll()
    assert env.status()["status"] == "ok" and (await env.mark()).missed == 0


async def test_a_full_walk_after_a_well_formatted_filter_reports_no_missed_change(
    env: Env,
) -> None:
    table = Table()
    table.put("a", now() - timedelta(minutes=30))
    env.script.route("/items", table.route)
    env.make(reconcile="1h")  # the upstream's own layout
    await env.poll()
    table.put("a", now(), n=1)
    await env.poll()
    assert await env.changes() == [("updated", "a")]
    await env.make_reconcile_due()
    await env.poll()
    assert (await env.mark()).missed == 0 and env.status()["status"] == "ok"


# -- a poisoned watermark ----------------------------------------------------------------------


async def test_a_cursor_value_far_in_the_future_does_not_move_the_watermark(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    skewed_before = metrics.POLL_CURSOR_SKEWED.labels("s")._value.get()
    table = Table(layout="%Y-%m-%dT%H:%M:%SZ", as_time=True)
    table.put("a", now() - timedelta(hours=1))
    table.put("x", "9999-12-31T23:59:59Z")
    env.script.route("/items", table.route)
    env.make(cursor={"format": "rfc3339"})
    await env.poll()  # the baseline
    table.put("b", now())
    table.put("x", "9999-12-31T23:59:59Z", n=1)  # a new version of the item: still compared
    await env.poll()
    assert sorted(await env.changes()) == [("created", "b"), ("updated", "x")]
    sent = env.sent()
    assert sent is not None and not sent.startswith("9999")
    mark = await env.mark()
    assert mark.value_ms is not None and mark.value_ms <= time.time() * 1000
    assert mark.skewed == 1 and mark.skewed_raw == "9999-12-31T23:59:59Z"
    shown = env.status()
    assert shown["status"] == "cursor fault"
    assert "further in the future than cursor.max_skew (1d)" in shown["faults"][0]
    assert metrics.POLL_CURSOR_SKEWED.labels("s")._value.get() == skewed_before + 2
    said = [r for r in caplog.records if "further in the future" in r.getMessage()]
    assert len(said) == 1  # logged once, counted every time
    # After a restart (a new poller over the same store) new items are still found.
    env.make(cursor={"format": "rfc3339"})
    table.put("c", now())
    await env.poll()
    assert (await env.changes())[-1] == ("created", "c")


async def test_a_numeric_cursor_out_of_any_calendar_is_a_fault_never_a_traceback(
    env: Env,
) -> None:
    errors_before = metrics.POLL_ERRORS.labels("s", "cursor")._value.get()
    table = Table(as_time=True)
    table.put("a", int(now().timestamp()))
    table.put("x", 9_000_000_000_000_000)  # milliseconds in the year 287168
    env.script.route("/items", table.route)
    env.make(cursor={"format": "unix"})
    await env.poll()
    table.put("b", int(now().timestamp()))
    await env.poll()  # the watermark stayed in this century: the poll is sent and finds b
    assert await env.changes() == [("created", "b")]
    state = await env.store.load_poll_state("s")
    assert state.consecutive_failures == 0 and (await env.mark()).skewed == 1
    # A number that is no time at all: a fault of the poll, the source shown failing.
    env.script.route("/items", Reply(body=[{"id": "y", "updated_at": 10**20}]))
    await env.poll()
    state = await env.store.load_poll_state("s")
    assert state.consecutive_failures == 1 and "is not a time" in (state.last_error or "")
    assert env.status()["status"] == "failing (1 in a row)"
    assert metrics.POLL_ERRORS.labels("s", "cursor")._value.get() == errors_before + 1


async def test_a_watermark_stored_far_in_the_future_is_rebuilt_by_a_full_walk(env: Env) -> None:
    table = Table(layout="%Y-%m-%dT%H:%M:%SZ", as_time=True)
    table.put("a", now() - timedelta(seconds=30))
    env.script.route("/items", table.route)
    env.make(cursor={"format": "rfc3339"})
    await env.poll()  # the baseline
    # What a version without max_skew left behind after an item stamped 9999.
    poisoned = Watermark(253_402_300_799_000, None, "9999-12-31T23:59:59Z")
    await env.store.write(
        lambda c: c.execute("UPDATE poll_state SET cursor = ?", (poisoned.dump(),))
    )
    table.put("b", now())
    await env.poll()
    assert env.sent() is None  # a full walk, not since=9999-12-31T23:58:59Z
    assert await env.changes() == [("created", "b")]
    mark = await env.mark()
    assert (parse_time(table.rows["b"]["updated_at"]) or 0) <= (mark.value_ms or 0)
    assert (mark.value_ms or 0) <= time.time() * 1000
    table.put("c", now())
    await env.poll()
    assert env.sent() is not None and (await env.changes())[-1] == ("created", "c")


# -- config and check --------------------------------------------------------------------------


def test_cursor_format_and_max_skew_mistakes_are_one_line() -> None:
    def parse(**cursor: Any) -> Any:
        data = {"database": "b.db", "sources": {"s": {"poll": source("http://x", cursor=cursor)}}}
        return parse_config(yaml.safe_dump(data))

    with pytest.raises(ConfigError, match=r"poll\.cursor\.format: .*'bogus' is not a format"):
        parse(format="bogus")
    with pytest.raises(ConfigError, match=r"poll\.cursor\.max_skew: .*must be more than 0"):
        parse(max_skew="0s")
    assert parse(format="%Y-%m-%d %H:%M:%S").sources["s"].poll.cursor.format == SQLITE


def test_check_says_which_cursor_format_is_in_force(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    for cursor, shown in [
        ({}, "cursor format: as the upstream writes it (inferred from its values"),
        ({"format": "sqlite"}, "cursor format: sqlite"),
    ]:
        data = {"database": "b.db", "sources": {"s": {"poll": source("http://x", cursor=cursor)}}}
        path.write_text(yaml.safe_dump(data))
        done = run_cli("check", "-c", str(path))
        assert done.returncode == 0, done.stderr
        assert shown in " ".join(done.stdout.split()), done.stdout
