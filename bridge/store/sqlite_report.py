"""SQLite implementation of `ReportStore`: the figures behind the latency report and status page.

Read-only queries; each runs on a reader connection in a worker thread, so they never wait
on the writer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from bridge.store.base import (
    DeliveryTiming,
    EventTiming,
    PollCounters,
    SourceActivity,
    TargetHealth,
)

T = TypeVar("T")

# Deliveries still to be made: the backlog.
_WAITING = ("pending", "failed")


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

    async def delivery_timings(
        self, *, since_ms: int | None = None, limit: int | None = None
    ) -> list[DeliveryTiming]:
        select = (
            "SELECT e.source, e.origin, d.target, d.delivered_ms, e.recorded_ms, d.id AS k"
            " FROM deliveries d JOIN events e ON e.id = d.event_id"
            " WHERE d.delivered_ms IS NOT NULL"
        )
        sql, args = _window(select, "d.id", "e.recorded_ms", since_ms, limit)

        def q(conn: sqlite3.Connection) -> list[DeliveryTiming]:
            return [
                DeliveryTiming(source, origin, target, recorded_ms, delivered_ms)
                for source, origin, target, delivered_ms, recorded_ms, _k in conn.execute(sql, args)
            ]

        return await self.read(q)

    async def poll_counters(self) -> list[PollCounters]:
        sql = (
            "SELECT source, coalesce(polls, 0), coalesce(requests, 0), coalesce(not_modified, 0),"
            " coalesce(bytes, 0),"
            " coalesce(events, 0), coalesce(empty_polls, 0), last_poll_ms, last_status,"
            " last_error, coalesce(consecutive_failures, 0) FROM poll_state ORDER BY source"
        )

        def q(conn: sqlite3.Connection) -> list[PollCounters]:
            return [PollCounters(*row) for row in conn.execute(sql)]

        return await self.read(q)

    async def source_activity(self) -> list[SourceActivity]:
        # max(seq) is answered from the (source, seq) index; the latest row gives its time.
        sql = (
            "SELECT a.source, a.n, e.recorded_ms FROM"
            " (SELECT source, count(*) AS n, max(seq) AS last FROM events GROUP BY source) a"
            " JOIN events e ON e.seq = a.last ORDER BY a.source"
        )

        def q(conn: sqlite3.Connection) -> list[SourceActivity]:
            return [SourceActivity(*row) for row in conn.execute(sql)]

        return await self.read(q)

    async def target_health(self) -> list[TargetHealth]:
        marks = ",".join("?" * len(_WAITING))
        counts_sql = (
            "SELECT target,"
            f" sum(CASE WHEN status IN ({marks}) THEN 1 ELSE 0 END),"
            " sum(CASE WHEN status = 'dead' THEN 1 ELSE 0 END),"
            " sum(CASE WHEN status = 'delivered' THEN 1 ELSE 0 END)"
            " FROM deliveries GROUP BY target"
        )
        state_sql = (
            "SELECT name, coalesce(circuit, 'closed'), coalesce(failures, 0), open_until_ms,"
            " disabled_ms, disabled_reason FROM targets"
        )

        def q(conn: sqlite3.Connection) -> list[TargetHealth]:
            counts = {row[0]: row[1:] for row in conn.execute(counts_sql, _WAITING)}
            states = {row[0]: row[1:] for row in conn.execute(state_sql)}
            out = []
            for name in sorted(counts.keys() | states.keys()):
                circuit, failures, open_until_ms, disabled_ms, reason = states.get(
                    name, ("closed", 0, None, None, None)
                )
                backlog, dead, delivered = counts.get(name, (0, 0, 0))
                out.append(
                    TargetHealth(
                        name,
                        circuit,
                        failures,
                        open_until_ms,
                        disabled_ms,
                        backlog,
                        dead,
                        delivered,
                        reason,
                    )
                )
            return out

        return await self.read(q)
