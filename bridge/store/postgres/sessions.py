"""PostgreSQL implementation of the admin sessions' part of the store: the logged-out ones.

The same table as SQLite's, `revoked_sessions` (see sqlite/sessions.py): the id of each
session logged out before it expired, so that a logout holds after a restart and on every
replica sharing the database (each asks on every request). Each logout also deletes the
revocations whose cookie has expired since: the table stays a handful of rows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.AsyncConnection[Any]

T = TypeVar("T")

_REVOKE = (
    "INSERT INTO revoked_sessions (id, expires_ms) VALUES (%s, %s)"
    " ON CONFLICT (id) DO UPDATE SET expires_ms = excluded.expires_ms"
)


class PostgresSessions:
    """Mixed into PostgresStore; uses its `run` helper."""

    if TYPE_CHECKING:

        async def run(self, fn: Callable[[Conn], Awaitable[T]]) -> T: ...

    async def revoke_session(self, session_id: str, expires_ms: int, now_ms: int) -> None:
        async def revoke(conn: Conn) -> None:
            await conn.execute("DELETE FROM revoked_sessions WHERE expires_ms <= %s", (now_ms,))
            await conn.execute(_REVOKE, (session_id, expires_ms))

        await self.run(revoke)

    async def is_session_revoked(self, session_id: str) -> bool:
        async def read(conn: Conn) -> bool:
            cur = await conn.execute("SELECT 1 FROM revoked_sessions WHERE id = %s", (session_id,))
            return await cur.fetchone() is not None

        return await self.run(read)
