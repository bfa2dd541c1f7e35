"""SQLite implementation of `ReportStore`: the timings behind the latency report and the chart.

Read-only queries; each runs on a reader connection in a worker thread, so they never wait
on the writer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from bridge.store.base import DeliveryTiming, EventTiming, SightingRecord

T = TypeVar("T")


def _window(
    select: str, key: str, since_col: str, since_ms: int | None, limit: int | None
) -> tuple[str, list[Any]]:
    """`select` (whose rows end in `recorded_ms` and `k`, its key) restricted to rows recorded
    at or after `since_ms` and to the newest `limit`, oldest first.

    With a limit, the newest rows are found by walking the key backwards, so on a big table a
    query costs what it reads, whatever `since_ms` is.
    """
    args: list[Any] = []
    if limit is None:
        if since_ms is not None:
            select += f" AND {since_col} >= ?"
            args.append(since_ms)
        return f"{select} ORDER BY {key}", args
    sql = f"SELECT * FROM ({select} ORDER BY {key} DESC LIMIT ?)"
    args.append(limit)
    if since_ms is not None:
        sql += " WHERE recorded_ms >= ?"
        args.append(since_ms)
    return f"{sql} ORDER BY k", args


class SQLiteReport:
    """Mixed into SQLiteStore; uses its `read` helper."""

    if TYPE_CHECKING:

        async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def event_timings(
        self, *, since_ms: int | None = None, limit: int | None = None
    ) -> list[EventTiming]:
        select = (
            "SELECT source, origin, subject, time_ms, recorded_ms, seq AS k FROM events WHERE 1"
        )
        sql, args = _window(select, "seq", "recorded_ms", since_ms, limit)

        def q(conn: sqlite3.Connection) -> list[EventTiming]:
            return [EventTiming(*row[:5]) for row in conn.execute(sql, args)]

        return await self.read(q)

    async def list_sightings(
        self, merge: str, *, since_ms: int | None = None
    ) -> list[SightingRecord]:
        sql = "SELECT event_id, path, recorded_ms FROM sightings WHERE merge = ?"
        args: list[Any] = [merge]
        if since_ms is not None:
            sql += " AND recorded_ms >= ?"
            args.append(since_ms)

        def q(conn: sqlite3.Connection) -> list[SightingRecord]:
            return [SightingRecord(*row) for row in conn.execute(sql, args)]

        return await self.read(q)

    async def delivery_timings(
        self, *, since_ms: int | None = None, limit: int | None = None
    ) -> list[DeliveryTiming]:
        select = (
            "SELECT e.source, e.origin, d.target, d.delivered_ms, e.recorded_ms, d.id AS k"
            " FROM deliveries d JOIN events e ON e.seq = d.event_seq"
            " WHERE d.delivered_ms IS NOT NULL"
        )
        sql, args = _window(select, "d.id", "e.recorded_ms", since_ms, limit)

        def q(conn: sqlite3.Connection) -> list[DeliveryTiming]:
            return [
                DeliveryTiming(source, origin, target, recorded_ms, delivered_ms)
                for source, origin, target, delivered_ms, recorded_ms, _k in conn.execute(sql, args)
            ]

        return await self.read(q)
