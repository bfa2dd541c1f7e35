"""PostgreSQL implementation of the OAuth2 part of the store: rotated refresh tokens.

The same table as SQLite's, `oauth_refresh_tokens` (see sqlite/tokens.py). Every
transaction here is its own durable commit; replicas sharing the database read the token
another one rotated.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from bridge.store.tokens import StoredRefreshToken

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.AsyncConnection[Any]

T = TypeVar("T")

_SAVE = (
    "INSERT INTO oauth_refresh_tokens (credential, initial_hash, refresh_token, rotated_ms)"
    " VALUES (%s, %s, %s, %s) ON CONFLICT (credential) DO UPDATE SET"
    " initial_hash = excluded.initial_hash, refresh_token = excluded.refresh_token,"
    " rotated_ms = excluded.rotated_ms"
)


class PostgresTokens:
    """Mixed into PostgresStore; uses its `run` helper."""

    if TYPE_CHECKING:

        async def run(self, fn: Callable[[Conn], Awaitable[T]]) -> T: ...

    async def load_refresh_token(self, credential: str) -> StoredRefreshToken | None:
        async def load(conn: Conn) -> StoredRefreshToken | None:
            cur = await conn.execute(
                "SELECT initial_hash, refresh_token, rotated_ms FROM oauth_refresh_tokens"
                " WHERE credential = %s",
                (credential,),
            )
            row = await cur.fetchone()
            return None if row is None else StoredRefreshToken(credential, *row)

        return await self.run(load)

    async def save_refresh_token(self, token: StoredRefreshToken) -> None:
        async def save(conn: Conn) -> None:
            values = (token.credential, token.initial_hash, token.refresh_token, token.rotated_ms)
            await conn.execute(_SAVE, values)

        await self.run(save)
