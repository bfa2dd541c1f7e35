"""SQLite implementation of `EventStore`: events and their pending deliveries.

`insert_events` is shared by `record_events` and a poll's commit (poll.py), so that an event
and its deliveries always go in together, in the caller's transaction.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

from bridge import jsontext
from bridge.events import Event
from bridge.store.base import EventCursor, EventFilter, EventListing, NewEvent
from bridge.store.rows import (
    EVENT_COLUMNS,
    glob_to_sqlite,
    page_events_sql,
    row_to_event,
    row_to_listing,
    select_filtered,
)

if TYPE_CHECKING:
    from bridge.store.sqlite.writer import Writer

T = TypeVar("T")


# How many ids one `IN (...)` asks for (SQLite allows 32,766 parameters a statement).
_IDS_PER_QUERY = 500
# Rows an INSERT with many VALUES rows takes: under 999 parameters (SQLite's limit before
# 3.32) for the widest, the events' 12 columns.
_ROWS_PER_INSERT = 80
_INSERT_EVENTS = f"INSERT OR IGNORE INTO events ({EVENT_COLUMNS}) VALUES "
_EVENT_ROW = "(?,?,?,?,?,?,?,?,?,?,?,?)"
_INSERT_DELIVERIES = (
    "INSERT OR IGNORE INTO deliveries (event_id, event_seq, target, status, attempts, next_ms,"
    " created_ms, subject) VALUES "
)
_DELIVERY_ROW = "(?,?,?,'pending',0,?,?,?)"
_INSERT_SIGHTINGS = (
    "INSERT OR IGNORE INTO sightings (event_id, merge, path, source, recorded_ms) VALUES "
)
_SIGHTING_ROW = "(?,?,?,?,?)"


@lru_cache(maxsize=256)
def _values_sql(head: str, row: str, count: int) -> str:
    return head + ",".join([row] * count)


def _insert_rows(
    conn: sqlite3.Connection, head: str, row: str, rows: list[tuple[Any, ...]]
) -> tuple[int, list[int | None]]:
    """Insert `rows` with one statement of many VALUES rows (a few for a big batch); how many
    rows went in (an `OR IGNORE` statement skips some), and the rowid of the last row each
    statement inserted.

    One statement is one step in SQLite, during which the writer thread lets go of the GIL
    once; `executemany` steps once a row, and the thread waits to take the GIL back after
    each, behind the event loop (which, while busy, keeps it for up to the switch interval)."""
    added, last = 0, []
    for at in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[at : at + _ROWS_PER_INSERT]
        cur = conn.execute(_values_sql(head, row, len(chunk)), [v for r in chunk for v in r])
        # The statement's own count: the connection's total is a C int that wraps.
        added += cur.rowcount
        last.append(cur.lastrowid)
    return added, last


def _rowids(last: list[int | None], count: int) -> list[int]:
    """The rowids of `count` rows `_insert_rows` inserted, every one of them, in order: each
    took the table's next rowid (one more than its largest), so a statement's rows end at
    its last one's."""
    out: list[int] = []
    for at, end in zip(range(0, count, _ROWS_PER_INSERT), last, strict=True):
        if end is None:  # cannot be: the statement inserted every one of its rows
            raise sqlite3.IntegrityError("an INSERT gave no rowid")
        size = min(_ROWS_PER_INSERT, count - at)
        out += range(end - size + 1, end + 1)
    return out


def insert_events(conn: sqlite3.Connection, batch: Sequence[NewEvent]) -> list[bool]:
    """Insert events and their pending deliveries on `conn`, skipping known ids; for each
    event, whether it was new (a repeated id within `batch` is new the first time only).

    A few statements a batch, not one an event: each table's rows in one INSERT of many rows.
    The writer thread runs this while the event loop holds the interpreter, and every
    statement gives the GIL back and waits to take it again: one statement an event cost more
    CPU than the inserts themselves. The events' INSERT skips known ids itself (`OR IGNORE`),
    so the ids are looked up once, by the unique index the insert probes anyway; which ids
    were known is asked only when it skipped some (`_added_seqs`)."""
    first: dict[str, NewEvent] = {}
    for item in batch:
        first.setdefault(item.event.id, item)
    rows = [
        (
            ev.id,
            ev.source,
            ev.type,
            ev.origin,
            ev.change,
            ev.subject,
            ev.upstream_id,
            ev.time_ms,
            ev.recorded_ms,
            jsontext.dumps(ev.data),
            ev.traceparent,
            ev.tracestate,
        )
        for ev in (item.event for item in first.values())
    ]
    added, last = _insert_rows(conn, _INSERT_EVENTS, _EVENT_ROW, rows)
    ids = list(first)
    # The new events' seqs (their deliveries name them by it), known ids left out.
    if added == len(rows):
        seqs = dict(zip(ids, _rowids(last, len(rows)), strict=True))
    else:
        seqs = _added_seqs(conn, ids, added)
    out: list[bool] = []
    deliveries: list[tuple[Any, ...]] = []
    sightings: list[tuple[Any, ...]] = []
    for item in batch:
        ev = item.event
        # Taken once: the same item twice in a batch is new the first time only.
        seq = seqs.pop(ev.id, None) if first.get(ev.id) is item else None
        out.append(seq is not None)
        if seq is not None:
            deliveries += [
                (ev.id, seq, t, ev.recorded_ms, ev.recorded_ms, ev.subject) for t in item.targets
            ]
        if item.sighting is not None:
            s = item.sighting
            sightings.append((ev.id, s.merge, s.path, s.source, ev.recorded_ms))
    _insert_rows(conn, _INSERT_DELIVERIES, _DELIVERY_ROW, deliveries)
    _insert_rows(conn, _INSERT_SIGHTINGS, _SIGHTING_ROW, sightings)
    return out


def _added_seqs(conn: sqlite3.Connection, ids: list[str], added: int) -> dict[str, int]:
    """The seqs of those of `ids` (distinct) that the INSERT just added (`added` of them),
    by id; the others were stored before.

    The rows it added took the table's next rowids (`seq`), above every row stored before
    them, so they are the `added` highest of the ids found. An id not found at all was skipped
    for another constraint than its uniqueness: the batch fails, as a plain INSERT would."""
    found: list[tuple[int, str]] = []
    for at in range(0, len(ids), _IDS_PER_QUERY):
        chunk = ids[at : at + _IDS_PER_QUERY]
        marks = ",".join("?" * len(chunk))
        found += conn.execute(f"SELECT seq, id FROM events WHERE id IN ({marks})", chunk)
    if len(found) != len(ids):
        raise sqlite3.IntegrityError(f"{len(ids) - len(found)} events could not be stored")
    found.sort(reverse=True)
    return {event_id: seq for seq, event_id in found[:added]}


class SQLiteEvents:
    """Mixed into SQLiteStore; uses its `read` and `write` helpers."""

    if TYPE_CHECKING:
        writer: Writer

        async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

        async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def record_events(self, batch: Sequence[NewEvent]) -> list[bool]:
        return await self.write(lambda conn: insert_events(conn, batch))

    # One call taken by the writer thread, one waiting in its queue for what arrives
    # meanwhile, and those whose results the loop has not yet heard of.
    gathered_calls = 4

    def gather_events(self, take: Callable[[], Sequence[NewEvent]]) -> asyncio.Future[list[bool]]:
        # Queued now; `take` runs in the writer thread, in the commit that holds its events.
        return asyncio.wrap_future(self.writer.submit(lambda conn: insert_events(conn, take())))

    async def get_event(self, event_id: str) -> Event | None:
        def q(conn: sqlite3.Connection) -> Event | None:
            row = conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ?", (event_id,)
            ).fetchone()
            return row_to_event(row) if row else None

        return await self.read(q)

    async def list_events(
        self,
        *,
        source: str | None = None,
        type: str | None = None,
        since_ms: int | None = None,
        limit: int | None = 100,
    ) -> list[Event]:
        sql, args = select_filtered(
            f"SELECT {EVENT_COLUMNS} FROM events",
            [("source = ?", source), ("type = ?", type), ("recorded_ms >= ?", since_ms)],
            order_by="seq DESC",
            limit=limit,
        )

        def q(conn: sqlite3.Connection) -> list[Event]:
            return [row_to_event(row) for row in conn.execute(sql, args)]

        return await self.read(q)

    async def event_sources(self) -> list[str]:
        def q(conn: sqlite3.Connection) -> list[str]:
            # The (source, seq) index answers it without reading the events themselves.
            rows = conn.execute("SELECT DISTINCT source FROM events ORDER BY source")
            return [str(row[0]) for row in rows]

        return await self.read(q)

    async def count_events(self, *, source: str | None = None) -> int:
        def q(conn: sqlite3.Connection) -> int:
            if source is None:
                return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
            return int(
                conn.execute("SELECT count(*) FROM events WHERE source = ?", (source,)).fetchone()[
                    0
                ]
            )

        return await self.read(q)

    async def page_events(
        self,
        where: EventFilter,
        after: EventCursor | None,
        limit: int,
        *,
        oldest_first: bool = False,
    ) -> list[EventListing]:
        glob = glob_to_sqlite(where.type) if where.type is not None else None
        condition = ("type GLOB ?", glob) if glob else None
        sql, args = page_events_sql(
            where, after, limit, type_condition=condition, oldest_first=oldest_first,
            deliveries_of="d.event_seq = events.seq",
        )  # fmt: skip

        def q(conn: sqlite3.Connection) -> list[EventListing]:
            return [row_to_listing(row) for row in conn.execute(sql, args)]

        return await self.read(q)
