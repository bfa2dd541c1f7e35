"""admin pages: the events page with 1,000,000 stored events, its first and hundredth page.

The database is made by the store (its migrations, so the indexes are the daemon's), then
filled with sqlite3 directly in one transaction of `executemany` (a million rows in seconds,
not the hours one durable commit per event would take); every tenth event has a delivery,
half of those dead. The daemon then serves `/admin/events`: the first page is asked for
repeatedly, the "older" links are followed 99 times, and the hundredth page (reached by its
cursor, as a person paging would) is asked for repeatedly; each figure is the median wall
time of one request over a kept-alive connection. The baseline is the store's own
`page_events` of the same page, in this process: what the HTTP, the template and the
page's other reads add.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.context import Context, require_engine
from bench.procs import BenchError, start_daemon
from bench.stats import Goal, Row

REPEATS = 15
PAGES = 100
_OLDER = re.compile(r'<a href="([^"]+)" id="older">')


def _rows(count: int, start_ms: int) -> Iterator[tuple[Any, ...]]:
    for i in range(count):
        yield (f"evt_bench{i:09d}", f"src{i % 8}", f"item.{('created', 'updated')[i % 2]}",
               ("poll", "push")[i % 3 == 0], "updated", f"item-{i}", f"u{i}",
               start_ms + i * 10 - 700, start_ms + i * 10, f'{{"n": {i}}}')  # fmt: skip


def build(path: Path, count: int) -> float:
    """A database of `count` events at the daemon's schema; returns the seconds it took."""
    from bridge.store.sqlite import SQLiteStore

    began = time.perf_counter()
    store = SQLiteStore(path)
    store.open()
    store.close()
    start_ms = int(time.time() * 1000) - count * 10
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        with conn:
            conn.executemany(
                "INSERT INTO events (id, source, type, origin, change, subject, upstream_id,"
                " time_ms, recorded_ms, data) VALUES (?,?,?,?,?,?,?,?,?,?)",
                _rows(count, start_ms),
            )
            conn.executemany(
                "INSERT INTO deliveries (event_id, event_seq, target, status, attempts, next_ms,"
                " created_ms) SELECT id, seq, 'sink', ?, 1, ?, ? FROM events WHERE id = ?",
                (
                    ("dead" if i % 20 == 0 else "delivered", start_ms + i * 10,
                     start_ms + i * 10, f"evt_bench{i:09d}")
                    for i in range(0, count, 10)
                ),
            )  # fmt: skip
    finally:
        conn.close()
    return time.perf_counter() - began


def _median_ms(client: httpx.Client, url: str) -> tuple[float, str]:
    times, text = [], ""
    for _ in range(REPEATS):
        began = time.perf_counter()
        answer = client.get(url)
        times.append((time.perf_counter() - began) * 1000)
        if answer.status_code != 200:
            raise BenchError(f"GET {url} answered {answer.status_code}")
        text = answer.text
    return statistics.median(times), text


def _store_ms(path: Path, cursor_url: str | None) -> float:
    """The store's own read of one page (the first, or the one `cursor_url` names)."""
    from bridge.store.base import EventFilter
    from bridge.store.sqlite import SQLiteStore
    from bridge.web.views import PAGE_SIZE, cursor_of

    after = cursor_of(cursor_url.split("after=", 1)[1]) if cursor_url else None
    store = SQLiteStore(path)
    store.open()
    try:
        times = []
        for _ in range(REPEATS):
            began = time.perf_counter()
            asyncio.run(store.page_events(EventFilter(), after, PAGE_SIZE + 1))
            times.append((time.perf_counter() - began) * 1000)
    finally:
        store.close()
    return statistics.median(times)


def run(ctx: Context) -> list[Row]:
    """Build the database, then time the first and the hundredth page."""
    require_engine("web", "the admin pages")
    count = ctx.settings.admin_events
    work = ctx.workdir("admin-pages")
    db = work / "admin.db"
    build_s = build(db, count)
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    target = f'targets:\n  sink: {{url: "http://127.0.0.1:9/", secret: "{secret}"}}\n'
    with start_daemon(work, target, database=str(db)) as bridge:
        with httpx.Client(base_url=f"http://127.0.0.1:{bridge.port}", timeout=30) as client:
            first_ms, page = _median_ms(client, "/admin/events")
            url = "/admin/events"
            for _ in range(PAGES - 1):
                found = _OLDER.search(page)
                if found is None:
                    raise BenchError("the events page has no link to an older page")
                url = found.group(1).replace("&amp;", "&")
                answer = client.get(url)
                page = answer.text
            hundredth_ms, _ = _median_ms(client, url)
        bridge.check_alive()
    store_first = _store_ms(db, None)
    store_hundredth = _store_ms(db, url)
    events = f"{count:,} events"
    return [
        Row("admin pages", f"events page 1 ({events})", "ms", first_ms, store_first,
            "the store's page_events", Goal("value", "<", 100, "ms"),
            extra={"build_s": build_s, "repeats": REPEATS}),
        Row("admin pages", f"events page {PAGES}, by cursor ({events})", "ms", hundredth_ms,
            store_hundredth, "the store's page_events", Goal("value", "<", 100, "ms"),
            extra={"build_s": build_s, "repeats": REPEATS}),
    ]  # fmt: skip
