"""SQLite implementation of the admin sessions' part of the store: the logged-out ones.

A session lives in its signed cookie (bridge/web/session.py); the only thing the server
keeps is the id of each session logged out before it expired, in `revoked_sessions`, so
that a logout outlasts a restart of the daemon. Each logout also deletes the revocations
whose cookie has expired since (nobody can present it any more): the table holds at most
the sessions logged out within one `server.admin_session`, a handful of rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

T = TypeVar("T")


def _revoke(conn: sqlite3.Connection, session_id: str, expires_ms: int, now_ms: int) -> None:
    conn.execute("DELETE FROM revoked_sessions WHERE expires_ms <= ?", (now_ms,))
    conn.execute(
        "INSERT INTO revoked_sessions (id, expires_ms) VALUES (?, ?)"
        " ON CONFLICT (id) DO UPDATE SET expires_ms = excluded.expires_ms",
        (session_id, expires_ms),
    )


def _is_revoked(conn: sqlite3.Connection, session_id: str) -> bool:
    row = conn.execute("SELECT 1 FROM revoked_sessions WHERE id = ?", (session_id,)).fetchone()
    return row is not None


class SQLiteSessions:
    """Mixed into SQLiteStore; uses its `read` and `write`."""

    if TYPE_CHECKING:

        async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

        async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def revoke_session(self, session_id: str, expires_ms: int, now_ms: int) -> None:
        await self.write(lambda conn: _revoke(conn, session_id, expires_ms, now_ms))

    async def is_session_revoked(self, session_id: str) -> bool:
        return await self.read(lambda conn: _is_revoked(conn, session_id))
