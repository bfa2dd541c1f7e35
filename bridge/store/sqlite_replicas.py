"""SQLite implementation of the replicas' part of the store: heartbeats and poll leases.

SQLite serves the processes of one machine: usually one bridge, but a second process on
the same file (a CLI, a second bridge) sees the same leases, which the writer takes inside
its `BEGIN IMMEDIATE` transactions, hence atomically.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from bridge.store.base import ReplicaRow

T = TypeVar("T")


def _acquire(conn: sqlite3.Connection, source: str, owner: str, now_ms: int, until_ms: int) -> bool:
    cur = conn.execute(
        "INSERT INTO poll_leases (source, owner, until_ms) VALUES (?, ?, ?)"
        " ON CONFLICT (source) DO UPDATE SET owner = excluded.owner, until_ms = excluded.until_ms"
        " WHERE poll_leases.owner = excluded.owner OR poll_leases.until_ms <= ?",
        (source, owner, until_ms, now_ms),
    )
    return cur.rowcount == 1


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

    if TYPE_CHECKING:

        async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

        async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def acquire_poll_lease(self, source: str, now_ms: int, until_ms: int) -> bool:
        owner = self.replica_id
        return await self.write(lambda conn: _acquire(conn, source, owner, now_ms, until_ms))

    async def release_poll_lease(self, source: str) -> None:
        owner = self.replica_id
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

        await self.write(remove)

    async def list_replicas(self, now_ms: int, live_ms: int) -> list[ReplicaRow]:
        return await self.read(lambda conn: _replicas(conn, now_ms, live_ms))
