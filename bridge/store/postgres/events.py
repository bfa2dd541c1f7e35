"""PostgreSQL implementation of `EventStore`: events and their pending deliveries.

`insert_events` is shared by `record_events` and a poll's commit (poll.py), so that an event
and its deliveries always go in together, in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from bridge import jsontext
from bridge.events import Event
from bridge.store.base import EventCursor, EventFilter, EventListing, NewEvent
from bridge.store.rows import (
    EVENT_COLUMNS,
    glob_to_like,
    page_events_sql,
    row_to_event,
    row_to_listing,
    select_filtered,
)

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.AsyncConnection[Any]

T = TypeVar("T")


async def insert_events(conn: Conn, batch: Sequence[NewEvent]) -> list[bool]:
    """Insert events and their pending deliveries on `conn`, skipping known ids.

    Rows go in in the batch's order (their `seq` order). Two replicas inserting overlapping
    batches in different orders may deadlock on the unique index; PostgreSQL then aborts
    one transaction, which `PostgresStore` runs again.
    """
    if not batch:
        return []
    columns: list[list[Any]] = [[] for _ in range(12)]
    for item in batch:
        ev = item.event
        data = jsontext.dumps(ev.data)
        values = (ev.id, ev.source, ev.type, ev.origin, ev.change, ev.subject, ev.upstream_id,
                  ev.time_ms, ev.recorded_ms, data, ev.traceparent, ev.tracestate)  # fmt: skip
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    cur = await conn.execute(
        f"INSERT INTO events ({EVENT_COLUMNS}) SELECT * FROM unnest("
        "%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
        " %s::bigint[], %s::bigint[], %s::text[], %s::text[], %s::text[])"
        " ON CONFLICT (id) DO NOTHING RETURNING id",
        columns,
    )
    inserted = {row[0] for row in await cur.fetchall()}
    out = [False] * len(batch)
    deliveries: tuple[list[str], list[str], list[int], list[str | None]] = ([], [], [], [])
    for i, item in enumerate(batch):
        ev = item.event
        if ev.id not in inserted:
            continue
        inserted.discard(ev.id)  # a repeat later in the same batch is a duplicate
        out[i] = True
        for target in sorted(set(item.targets)):
            deliveries[0].append(ev.id)
            deliveries[1].append(target)
            deliveries[2].append(ev.recorded_ms)
            deliveries[3].append(ev.subject)
    sightings = [
        (item.event.id, item.sighting.merge, item.sighting.path, item.sighting.source,
         item.event.recorded_ms)
        for item in batch
        if item.sighting is not None
    ]  # fmt: skip
    if sightings:
        await conn.cursor().executemany(
            "INSERT INTO sightings (event_id, merge, path, source, recorded_ms)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (event_id, path) DO NOTHING",
            sightings,
        )
    if deliveries[0]:
        await conn.execute(
            "INSERT INTO deliveries (event_id, target, status, attempts, next_ms, created_ms,"
            " subject) SELECT e, t, 'pending', 0, ms, ms, s FROM unnest(%s::text[], %s::text[],"
            " %s::bigint[], %s::text[]) AS u(e, t, ms, s)"
            " ON CONFLICT (event_id, target) DO NOTHING",
            deliveries,
        )
    return out


class PostgresEvents:
    """Mixed into PostgresStore; uses its `run` helper."""

    if TYPE_CHECKING:

        async def run(self, fn: Callable[[Conn], Awaitable[T]]) -> T: ...

    async def record_events(self, batch: Sequence[NewEvent]) -> list[bool]:
        return await self.run(lambda conn: insert_events(conn, batch))

    async def get_event(self, event_id: str) -> Event | None:
        async def q(conn: Conn) -> Event | None:
            cur = await conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE id = %s", (event_id,)
            )
            row = await cur.fetchone()
            return row_to_event(row) if row else None

        return await self.run(q)

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
            mark="%s",
        )

        async def q(conn: Conn) -> list[Event]:
            cur = await conn.execute(sql, args)
            return [row_to_event(row) for row in await cur.fetchall()]

        return await self.run(q)

    async def event_sources(self) -> list[str]:
        async def q(conn: Conn) -> list[str]:
            cur = await conn.execute("SELECT DISTINCT source FROM events ORDER BY source")
            return [str(row[0]) for row in await cur.fetchall()]

        return await self.run(q)

    async def count_events(self, *, source: str | None = None) -> int:
        async def q(conn: Conn) -> int:
            if source is None:
                cur = await conn.execute("SELECT count(*) FROM events")
            else:
                cur = await conn.execute("SELECT count(*) FROM events WHERE source = %s", (source,))
            row = await cur.fetchone()
            return int(row[0]) if row else 0

        return await self.run(q)

    async def page_events(
        self,
        where: EventFilter,
        after: EventCursor | None,
        limit: int,
        *,
        oldest_first: bool = False,
    ) -> list[EventListing]:
        like = glob_to_like(where.type) if where.type is not None else None
        condition = ("type LIKE ? ESCAPE '\\'", like) if like is not None else None
        sql, args = page_events_sql(
            where, after, limit, type_condition=condition, mark="%s", oldest_first=oldest_first
        )

        async def q(conn: Conn) -> list[EventListing]:
            cur = await conn.execute(sql, args)
            return [row_to_listing(row) for row in await cur.fetchall()]

        return await self.run(q)
