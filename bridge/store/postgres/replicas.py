"""PostgreSQL implementation of the replicas' part of the store: heartbeats and poll leases.

A poll lease is one row per source in `poll_leases`, taken by one atomic upsert: it goes to
the caller when nobody holds it, when the caller holds it already (a renewal), or when the
holder's lease has run out (a takeover). Row locking makes two replicas that try at once
agree on one winner.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from bridge.store.base import ReplicaRow

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.AsyncConnection[Any]

T = TypeVar("T")

_ACQUIRE = (
    "INSERT INTO poll_leases (source, owner, until_ms, handover_ms) VALUES (%s, %s, %s, %s)"
    " ON CONFLICT (source) DO UPDATE SET owner = excluded.owner, until_ms = excluded.until_ms,"
    " handover_ms = excluded.handover_ms"
    " WHERE poll_leases.owner = excluded.owner OR poll_leases.until_ms <= %s"
)
# A released lease runs until its handover time: a source released right after a poll is
# not polled again by another replica before the interval is over.
_RELEASE = "UPDATE poll_leases SET until_ms = LEAST(until_ms, coalesce(handover_ms, 0))"


async def _replicas(conn: Conn, now_ms: int, live_ms: int) -> list[ReplicaRow]:
    cur = await conn.execute(
        "SELECT id, started_ms, heartbeat_ms FROM replicas WHERE heartbeat_ms >= %s ORDER BY id",
        (now_ms - live_ms,),
    )
    rows = await cur.fetchall()
    cur = await conn.execute(
        "SELECT source, owner FROM poll_leases WHERE until_ms > %s ORDER BY source", (now_ms,)
    )
    leases: dict[str, list[str]] = {}
    for source, owner in await cur.fetchall():
        leases.setdefault(owner, []).append(source)
    cur = await conn.execute(
        "SELECT lease_owner, count(*) FROM deliveries WHERE status IN ('pending', 'failed')"
        " AND lease_ms > %s GROUP BY lease_owner",
        (now_ms,),
    )
    claims = {owner: int(count) for owner, count in await cur.fetchall()}
    return [
        ReplicaRow(r[0], r[1], r[2], tuple(leases.get(r[0], ())), claims.get(r[0], 0)) for r in rows
    ]


class PostgresReplicas:
    """Mixed into PostgresStore; uses its `run` helper and its `replica_id`."""

    replica_id: str

    if TYPE_CHECKING:

        async def run(self, fn: Callable[[Conn], Awaitable[T]]) -> T: ...

    async def acquire_poll_lease(
        self, source: str, now_ms: int, until_ms: int, handover_ms: int | None = None
    ) -> bool:
        owner = self.replica_id

        async def acquire(conn: Conn) -> bool:
            cur = await conn.execute(_ACQUIRE, (source, owner, until_ms, handover_ms, now_ms))
            return cur.rowcount == 1

        return await self.run(acquire)

    async def release_poll_lease(self, source: str) -> None:
        owner = self.replica_id

        async def release(conn: Conn) -> None:
            await conn.execute(f"{_RELEASE} WHERE source = %s AND owner = %s", (source, owner))

        await self.run(release)

    async def heartbeat(self, started_ms: int, now_ms: int) -> None:
        owner = self.replica_id

        async def beat(conn: Conn) -> None:
            await conn.execute(
                "INSERT INTO replicas (id, started_ms, heartbeat_ms) VALUES (%s, %s, %s)"
                " ON CONFLICT (id) DO UPDATE SET heartbeat_ms = excluded.heartbeat_ms",
                (owner, started_ms, now_ms),
            )

        await self.run(beat)

    async def remove_replica(self) -> None:
        owner = self.replica_id

        async def remove(conn: Conn) -> None:
            await conn.execute("DELETE FROM replicas WHERE id = %s", (owner,))
            await conn.execute(f"{_RELEASE} WHERE owner = %s", (owner,))

        await self.run(remove)

    async def list_replicas(self, now_ms: int, live_ms: int) -> list[ReplicaRow]:
        return await self.run(lambda conn: _replicas(conn, now_ms, live_ms))
