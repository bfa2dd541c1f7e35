"""PostgreSQL implementation of `ReportStore`: the timings behind the latency report.

The same queries as sqlite/report.py, in PostgreSQL's dialect; read-only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from bridge.store.base import DeliveryTiming, EventTiming, SightingRecord

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.AsyncConnection[Any]

T = TypeVar("T")


def _window(
    select: str, key: str, since_col: str, since_ms: int | None, limit: int | None
) -> tuple[str, list[Any]]:
    """`select` (whose rows end in `recorded_ms` and `k`, its key) restricted to rows recorded
    at or after `since_ms` and to the newest `limit`, oldest first."""
    args: list[Any] = []
    if limit is None:
        if since_ms is not None:
            select += f" AND {since_col} >= %s"
            args.append(since_ms)
        return f"{select} ORDER BY {key}", args
    sql = f"SELECT * FROM ({select} ORDER BY {key} DESC LIMIT %s) AS newest"
    args.append(limit)
    if since_ms is not None:
        sql += " WHERE recorded_ms >= %s"
        args.append(since_ms)
    return f"{sql} ORDER BY k", args


class PostgresReport:
    """Mixed into PostgresStore; uses its `run` helper."""

    if TYPE_CHECKING:

        async def run(self, fn: Callable[[Conn], Awaitable[T]]) -> T: ...

    async def event_timings(
        self, *, since_ms: int | None = None, limit: int | None = None
    ) -> list[EventTiming]:
        select = (
            "SELECT source, origin, subject, time_ms, recorded_ms, seq AS k FROM events WHERE true"
        )
        sql, args = _window(select, "seq", "recorded_ms", since_ms, limit)

        async def q(conn: Conn) -> list[EventTiming]:
            cur = await conn.execute(sql, args)
            return [EventTiming(*row[:5]) for row in await cur.fetchall()]

        return await self.run(q)

    async def list_sightings(
        self, merge: str, *, since_ms: int | None = None
    ) -> list[SightingRecord]:
        sql = "SELECT event_id, path, recorded_ms FROM sightings WHERE merge = %s"
        args: list[Any] = [merge]
        if since_ms is not None:
            sql += " AND recorded_ms >= %s"
            args.append(since_ms)

        async def q(conn: Conn) -> list[SightingRecord]:
            cur = await conn.execute(sql, args)
            return [SightingRecord(*row) for row in await cur.fetchall()]

        return await self.run(q)

    async def delivery_timings(
        self, *, since_ms: int | None = None, limit: int | None = None
    ) -> list[DeliveryTiming]:
        select = (
            "SELECT e.source, e.origin, d.target, d.delivered_ms, e.recorded_ms, d.id AS k"
            " FROM deliveries d JOIN events e ON e.id = d.event_id"
            " WHERE d.delivered_ms IS NOT NULL"
        )
        sql, args = _window(select, "d.id", "e.recorded_ms", since_ms, limit)

        async def q(conn: Conn) -> list[DeliveryTiming]:
            cur = await conn.execute(sql, args)
            return [
                DeliveryTiming(source, origin, target, recorded_ms, delivered_ms)
                for source, origin, target, delivered_ms, recorded_ms, _k in await cur.fetchall()
            ]

        return await self.run(q)
