"""PostgreSQL implementation of `RetentionStore`: deleting old, finished events.

Another replica may requeue a delivery (`bridge redeliver`) or claim one while a batch is
pruned. The candidates' events and deliveries are therefore locked first (`FOR UPDATE`,
which also reads the deliveries' latest committed state), checked again, and only the
events still finished are deleted, all in one transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.AsyncConnection[Any]

T = TypeVar("T")

_CANDIDATES = (
    "SELECT e.id FROM events e WHERE e.recorded_ms < %s AND NOT EXISTS ("
    "SELECT 1 FROM deliveries d WHERE d.event_id = e.id"
    " AND (d.status <> 'delivered' OR d.lease_ms IS NOT NULL))"
    " ORDER BY e.seq LIMIT %s FOR UPDATE OF e SKIP LOCKED"
)
_UNFINISHED = (
    "SELECT event_id, status <> 'delivered' OR lease_ms IS NOT NULL FROM deliveries"
    " WHERE event_id = ANY(%s) ORDER BY id FOR UPDATE"
)


async def _prune(conn: Conn, before_ms: int, limit: int) -> int:
    cur = await conn.execute(_CANDIDATES, (before_ms, limit))
    ids = [row[0] for row in await cur.fetchall()]
    if not ids:
        return 0
    cur = await conn.execute(_UNFINISHED, (ids,))
    unfinished = {event_id for event_id, is_unfinished in await cur.fetchall() if is_unfinished}
    ids = [i for i in ids if i not in unfinished]
    await conn.execute(
        "DELETE FROM attempts WHERE delivery_id IN"
        " (SELECT id FROM deliveries WHERE event_id = ANY(%s))",
        (ids,),
    )
    await conn.execute("DELETE FROM deliveries WHERE event_id = ANY(%s)", (ids,))
    await conn.execute("DELETE FROM sightings WHERE event_id = ANY(%s)", (ids,))
    await conn.execute("DELETE FROM events WHERE id = ANY(%s)", (ids,))
    return len(ids)


class PostgresRetention:
    """Mixed into PostgresStore; uses its `run` helper."""

    if TYPE_CHECKING:

        async def run(self, fn: Callable[[Conn], Awaitable[T]]) -> T: ...

    async def prune(self, before_ms: int, limit: int) -> int:
        return await self.run(lambda conn: _prune(conn, before_ms, limit))
