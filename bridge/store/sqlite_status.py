"""SQLite implementation of `StatusStore`: summaries of sources and targets, read only.

Every query here walks an index and touches only what it counts: events per source by
`(source, seq)`, deliveries still waiting or dead by `(target, status)`. Delivered rows,
which grow without bound, are never scanned, so `/metrics` stays cheap on a big database.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from bridge.store.base import SourceActivity, TargetBacklog

_WAITING = ("pending", "failed", "dead")


def _source_activity(conn: sqlite3.Connection, name: str) -> SourceActivity:
    events = conn.execute("SELECT count(*) FROM events WHERE source = ?", (name,)).fetchone()[0]
    last = conn.execute(
        "SELECT recorded_ms FROM events WHERE source = ? ORDER BY seq DESC LIMIT 1", (name,)
    ).fetchone()
    poll = conn.execute(
        "SELECT last_poll_ms, last_status, last_error, consecutive_failures"
        " FROM poll_state WHERE source = ?",
        (name,),
    ).fetchone()
    return SourceActivity(
        source=name,
        events=int(events),
        last_event_ms=last[0] if last else None,
        last_poll_ms=poll[0] if poll else None,
        last_status=poll[1] if poll else None,
        last_error=poll[2] if poll else None,
        consecutive_failures=int(poll[3] or 0) if poll else 0,
    )


def _target_backlog(conn: sqlite3.Connection, name: str) -> TargetBacklog:
    counts = dict.fromkeys(_WAITING, 0)
    for status, n in conn.execute(
        "SELECT status, count(*) FROM deliveries WHERE target = ? AND status IN (?, ?, ?)"
        " GROUP BY status",
        (name, *_WAITING),
    ):
        counts[status] = int(n)
    error = conn.execute(
        "SELECT last_error FROM deliveries WHERE target = ? AND status IN (?, ?, ?)"
        " AND last_error IS NOT NULL ORDER BY id DESC LIMIT 1",
        (name, *_WAITING),
    ).fetchone()
    row = conn.execute(
        "SELECT circuit, disabled_ms, disabled_reason FROM targets WHERE name = ?", (name,)
    ).fetchone()
    return TargetBacklog(
        target=name,
        pending=counts["pending"],
        failed=counts["failed"],
        dead=counts["dead"],
        circuit=(row[0] or "closed") if row else "closed",
        disabled_ms=row[1] if row else None,
        disabled_reason=row[2] if row else None,
        last_error=error[0] if error else None,
    )


class SQLiteStatus:
    """Mixed into SQLiteStore; uses its `read` helper."""

    read: Callable[..., Any]

    async def source_activity(self, sources: Sequence[str]) -> list[SourceActivity]:
        names = list(sources)
        states: list[SourceActivity] = await self.read(
            lambda conn: [_source_activity(conn, name) for name in names]
        )
        return states

    async def target_backlog(self, targets: Sequence[str]) -> list[TargetBacklog]:
        names = list(targets)
        states: list[TargetBacklog] = await self.read(
            lambda conn: [_target_backlog(conn, name) for name in names]
        )
        return states
