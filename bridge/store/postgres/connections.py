"""The PostgreSQL connections a store uses on its caller's own event loop.

The daemon runs everything on one event loop; its store transactions run there too, on
these connections, with no thread and no hop between loops per query (a hop cost the
delivery loop a fifth of its time). psycopg's async pool cannot serve here: it runs
tasks of its own on the loop that opened it and needs an `await` on that loop to close,
while the store's `close()` is a plain call (the daemon's lifespan, each CLI command).

So this is the smallest pool that fits: at most `size` connections, opened when first
needed, idle ones kept for the next transaction, all bound to one loop (`home`). A
connection that comes back broken, cut or in a transaction is closed, never reused, and a
cut one takes the idle ones with it (a restarted server cut them all). `close` is a plain
call from any thread: it hands back the idle connections for the caller to close on a
loop of its own (the store's thread), and one in use is closed when it comes back.

The writes that acknowledge nothing (`relaxed`: the delivery loop's claims and outcomes)
have connections of their own, in autocommit mode and with `synchronous_commit = off` for
the whole session, set once when each is opened: no BEGIN, no `SET LOCAL` and no COMMIT
per transaction (see `PostgresStore.run`); and with index scans over sequential ones
whatever the statistics say (`_RELAXED_SETTINGS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

Conn = psycopg.AsyncConnection[Any]

# The session of a relaxed connection. Its statements are few, prepared once (psycopg's
# `prepare_threshold`) and run thousands of times, each reaching at most a batch of rows
# by an index, row by row: a plan cached while the outbox was small (or never analyzed:
# autovacuum off) would read the whole table for every flush (a sequential scan, or a hash
# join over a whole index) long after it has grown.
_RELAXED_SETTINGS = (
    "SET synchronous_commit = off; SET enable_seqscan = off; SET enable_hashjoin = off;"
    " SET enable_mergejoin = off"
)


class LoopConnections:
    """Up to `size` connections to `url`, used by the tasks of one event loop (`home`); with
    `relaxed`, in autocommit mode with commits that do not wait for the WAL flush."""

    def __init__(
        self,
        url: str,
        home: asyncio.AbstractEventLoop,
        size: int,
        timeout_s: float,
        *,
        relaxed: bool = False,
    ):
        self.home = home
        self.relaxed = relaxed
        self._url = url
        self._timeout_s = timeout_s
        self._slots = asyncio.Semaphore(size)
        self._idle: list[Conn] = []
        self._lock = threading.Lock()  # `close` may come from another thread
        self.closed = False

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        """A connection for one transaction, on the home loop; returned (or closed) after."""
        async with self._slots:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = await self._connect()
            try:
                yield conn
            finally:
                await self._put_back(conn)

    async def _connect(self) -> Conn:
        conn = await psycopg.AsyncConnection.connect(
            self._url, connect_timeout=max(1, round(self._timeout_s)), autocommit=self.relaxed
        )
        if self.relaxed:
            try:
                await conn.execute(_RELAXED_SETTINGS)
            except BaseException:
                await conn.close()
                raise
        return conn

    async def _put_back(self, conn: Conn) -> None:
        reusable = not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE
        with self._lock:
            if reusable and not self.closed:
                self._idle.append(conn)
                return
            # A cut connection says the server (or the way to it) went away: the idle ones
            # went with it, and each would fail its next transaction.
            dropped = self._idle if conn.broken else []
            if conn.broken:
                self._idle = []
        for each in (conn, *dropped):
            await each.close()

    def close(self) -> list[Conn]:
        """Take no more connections back; return the idle ones (to be closed by the caller,
        on any loop: none is in use). Those in use are closed as they come back."""
        with self._lock:
            self.closed = True
            idle, self._idle = self._idle, []
        return idle


class LoopBinding:
    """The connections of one event loop (`home`): those of durable transactions, and the
    relaxed ones of the writes that acknowledge nothing, up to `size` of each."""

    def __init__(self, url: str, home: asyncio.AbstractEventLoop, size: int, timeout_s: float):
        self.home = home
        self.durable = LoopConnections(url, home, size, timeout_s)
        self.relaxed = LoopConnections(url, home, size, timeout_s, relaxed=True)

    def close(self) -> list[Conn]:
        """Take no more connections back; return the idle ones of both (see
        `LoopConnections.close`)."""
        return [*self.durable.close(), *self.relaxed.close()]
