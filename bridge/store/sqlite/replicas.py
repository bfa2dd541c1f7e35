"""SQLite implementation of the replicas' part of the store: heartbeats and poll leases.

SQLite is one machine's store, run by one bridge: its poll lease is single-process. The
poller always gets it, so a bridge restarted after a crash, under a new replica id, polls at
once instead of waiting for the dead process's lease to run out. The lease row only records
who polls, for `bridge status`: it is written when the poller first takes a source, not at
every poll, so leases cost the writer nothing per poll. Several bridges sharing work need
PostgreSQL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from bridge.store.base import ReplicaRow

T = TypeVar("T")


def _acquire(conn: sqlite3.Connection, source: str, owner: str) -> bool:
    # No expiry: a lease row stands for "polled by" until its owner releases it or another
    # process takes the source.
    conn.execute(
        "INSERT OR REPLACE INTO poll_leases (source, owner, until_ms) VALUES (?, ?, ?)",
        (source, owner, 2**62),
    )
    return True


def _replicas(conn: sqlite3.Connection, now_ms: int, live_ms: int) -> list[ReplicaRow]:
    rows = conn.execute(
        "SELECT id, started_ms, heartbeat_ms FROM replicas WHERE heartbeat_ms >= ? ORDER BY id",
        (now_ms - live_ms,),
    ).fetchall()
    leases: dict[str, list[str]] = {}
    for source, owner in conn.execute(
        "SELECT source, owner FROM poll_leases WHERE until_ms > ? ORDER BY source", (now_ms,)
    ):
        leases.setdefault(owner, []).append(source)
    claims = dict(
        conn.execute(
            "SELECT lease_owner, count(*) FROM deliveries WHERE status IN ('pending', 'failed')"
            " AND lease_ms > ? GROUP BY lease_owner",
            (now_ms,),
        ).fetchall()
    )
    return [
        ReplicaRow(r[0], r[1], r[2], tuple(leases.get(r[0], ())), int(claims.get(r[0], 0)))
        for r in rows
    ]


class SQLiteReplicas:
    """Mixed into SQLiteStore; uses its `read`, `write` and `replica_id`."""

    replica_id: str
    _recorded_leases: set[str]  # sources whose lease row names this store's replica

    if TYPE_CHECKING:

        async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

        async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def acquire_poll_lease(
        self, source: str, now_ms: int, until_ms: int, handover_ms: int | None = None
    ) -> bool:
        if source in self._recorded_leases:
            return True
        owner = self.replica_id
        await self.write(lambda conn: _acquire(conn, source, owner))
        self._recorded_leases.add(source)
        return True

    async def release_poll_lease(self, source: str) -> None:
        owner = self.replica_id
        self._recorded_leases.discard(source)
        await self.write(
            lambda conn: conn.execute(
                "DELETE FROM poll_leases WHERE source = ? AND owner = ?", (source, owner)
            )
        )

    async def heartbeat(self, started_ms: int, now_ms: int) -> None:
        owner = self.replica_id
        await self.write(
            lambda conn: conn.execute(
                "INSERT INTO replicas (id, started_ms, heartbeat_ms) VALUES (?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET heartbeat_ms = excluded.heartbeat_ms",
                (owner, started_ms, now_ms),
            )
        )

    async def remove_replica(self) -> None:
        owner = self.replica_id

        def remove(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM replicas WHERE id = ?", (owner,))
            conn.execute("DELETE FROM poll_leases WHERE owner = ?", (owner,))

        self._recorded_leases.clear()
        await self.write(remove)

    async def list_replicas(self, now_ms: int, live_ms: int) -> list[ReplicaRow]:
        return await self.read(lambda conn: _replicas(conn, now_ms, live_ms))
