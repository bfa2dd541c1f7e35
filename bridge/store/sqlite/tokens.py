"""SQLite implementation of the OAuth2 part of the store: rotated refresh tokens.

One row per credential in `oauth_refresh_tokens` (see store/tokens.py). A rotation is
written alone: its own FULL commit, never shared with a poll's batch, so that nothing else
can fail it and it is fsynced before the new access token is used.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from bridge.store.tokens import StoredRefreshToken

T = TypeVar("T")


def _load(conn: sqlite3.Connection, credential: str) -> StoredRefreshToken | None:
    row = conn.execute(
        "SELECT initial_hash, refresh_token, rotated_ms FROM oauth_refresh_tokens"
        " WHERE credential = ?",
        (credential,),
    ).fetchone()
    return None if row is None else StoredRefreshToken(credential, row[0], row[1], row[2])


def _save(conn: sqlite3.Connection, token: StoredRefreshToken) -> None:
    conn.execute(
        "INSERT INTO oauth_refresh_tokens (credential, initial_hash, refresh_token, rotated_ms)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (credential) DO UPDATE SET"
        " initial_hash = excluded.initial_hash, refresh_token = excluded.refresh_token,"
        " rotated_ms = excluded.rotated_ms",
        (token.credential, token.initial_hash, token.refresh_token, token.rotated_ms),
    )


class SQLiteTokens:
    """Mixed into SQLiteStore; uses its `read` and `write_alone`."""

    if TYPE_CHECKING:

        async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

        async def write_alone(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def load_refresh_token(self, credential: str) -> StoredRefreshToken | None:
        return await self.read(lambda conn: _load(conn, credential))

    async def save_refresh_token(self, token: StoredRefreshToken) -> None:
        await self.write_alone(lambda conn: _save(conn, token))
