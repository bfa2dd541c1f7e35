"""SQLite implementation of `RetentionStore`: deleting old, finished events.

One batch is one write in the writer's group commit, so the candidates are chosen and
deleted in the same transaction as every other write: a delivery requeued by `redeliver`
is either seen as unfinished here, or requeued after its event is gone (and finds nothing).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

T = TypeVar("T")

# Finished means delivered and not leased; any other status (pending, failed, dead) keeps
# the event, dead ones for `bridge redeliver --dead`.
_CANDIDATES = (
    "SELECT e.seq, e.id FROM events e WHERE e.recorded_ms < ? AND NOT EXISTS ("
    "SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq"
    " AND (d.status <> 'delivered' OR d.lease_ms IS NOT NULL))"
    " ORDER BY e.seq LIMIT ?"
)


def _prune(conn: sqlite3.Connection, before_ms: int, limit: int) -> int:
    found = conn.execute(_CANDIDATES, (before_ms, limit)).fetchall()
    seqs = [(row[0],) for row in found]
    # Attempts are indexed by delivery, not by event: reach them through the deliveries,
    # which are indexed by their event's seq (migration 0015).
    conn.executemany(
        "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE event_seq = ?)",
        seqs,
    )
    conn.executemany("DELETE FROM deliveries WHERE event_seq = ?", seqs)
    conn.executemany("DELETE FROM sightings WHERE event_id = ?", [(row[1],) for row in found])
    conn.executemany("DELETE FROM events WHERE seq = ?", seqs)
    return len(found)


class SQLiteRetention:
    """Mixed into SQLiteStore; uses its `write`."""

    if TYPE_CHECKING:

        async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def prune(self, before_ms: int, limit: int) -> int:
        return await self.write(lambda conn: _prune(conn, before_ms, limit))
