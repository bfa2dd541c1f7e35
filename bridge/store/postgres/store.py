"""The PostgreSQL backend of the store: several bridges (replicas) sharing one database.

A transaction runs on the caller's own event loop, on connections bound to that loop
(`connections.py`): the daemon's store calls cost no thread and no hop between loops. The
store also owns an event loop in a thread of its own with psycopg's `AsyncConnectionPool`
on it, for what the caller's loop cannot do: `open()` and `close()` are plain calls (the
daemon's lifespan makes them inside its running loop), so the migrations run there; and a
caller on a second loop while the first is still alive (a thread of its own) is served
there. The connections follow the loop: once their loop is closed (each `asyncio.run` of
the CLI ends one), the next caller's loop takes them over. Each store call is one
transaction on one connection; a transaction that loses a deadlock or a serialization
conflict to another replica is run again, and so is one whose connection had been cut
(once).

What makes replicas safe (see the mixins):
- events: `INSERT ... ON CONFLICT (id) DO NOTHING`, so two replicas that receive the same
  upstream id at once make one event (the second waits for the first's commit, then skips);
- deliveries: claimed with `SELECT ... FOR UPDATE SKIP LOCKED` and a lease, so a replica
  never waits for another's rows and a dead replica's claims are taken over once they expire;
- polls: one lease per source, taken by an atomic upsert before each poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from bridge.errors import StoreError, StoreUnavailable
from bridge.events import now_ms
from bridge.store import mask_url
from bridge.store.base import PROBE_TIMEOUT_S, Store
from bridge.store.postgres.connections import LoopBinding
from bridge.store.postgres.events import PostgresEvents
from bridge.store.postgres.migrations import MIGRATIONS
from bridge.store.postgres.outbox import PostgresOutbox
from bridge.store.postgres.poll import PostgresPollState
from bridge.store.postgres.replicas import PostgresReplicas
from bridge.store.postgres.report import PostgresReport
from bridge.store.postgres.retention import PostgresRetention
from bridge.store.postgres.sessions import PostgresSessions
from bridge.store.postgres.tokens import PostgresTokens

T = TypeVar("T")
Conn = psycopg.AsyncConnection[Any]
log = logging.getLogger("bridge.store")

# Any number fits: it only has to be the same for every replica of one database.
_MIGRATION_LOCK = 0x627269646765
_RETRIES = 5  # runs of one transaction at most (deadlocks, conflicts, a cut connection)
# Connections of the store's own thread, and as many of each kind on the caller's loop.
_POOL_MAX = 8
_CONNECT_TIMEOUT_S = 10.0


def translate(exc: Exception, location: str, password: str | None) -> StoreError:
    """Map a driver error to StoreUnavailable (the server is out of reach) or StoreError."""
    text = str(exc).strip() or type(exc).__name__
    if password:
        text = text.replace(password, "***")
    if isinstance(exc, psycopg.OperationalError | PoolTimeout):
        return StoreUnavailable(f"the database {location} cannot be reached: {text}")
    return StoreError(f"the database {location} failed: {text}")


class _LoopThread:
    """An event loop running in a thread of its own, owning the pool."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="bridge-store-postgres", daemon=True
        )
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Run `coro` on this loop; the future resolves in any thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        """Stop the loop and wait for its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class PostgresStore(
    PostgresEvents,
    PostgresPollState,
    PostgresOutbox,
    PostgresReport,
    PostgresReplicas,
    PostgresRetention,
    PostgresSessions,
    PostgresTokens,
    Store,
):
    """The store in one PostgreSQL database, shared by any number of replicas."""

    def __init__(self, url: str, replica_id: str | None = None) -> None:
        from bridge.store import default_replica_id

        self._url = url
        try:
            password = psycopg.conninfo.conninfo_to_dict(url).get("password")
        except psycopg.ProgrammingError as exc:
            raise StoreError(f"the database URL {mask_url(url)} is not valid") from exc
        self._password = str(password) if password else None
        self.replica_id = replica_id or default_replica_id()
        self._runner: _LoopThread | None = None
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._local: LoopBinding | None = None  # the connections of the caller's loop
        self._binding = threading.Lock()  # who takes `_local` over, when its loop is gone
        self.commits = 0  # transactions committed by this store (for the benchmark)

    def __repr__(self) -> str:
        return f"PostgresStore({self.location!r})"

    @property
    def location(self) -> str:
        return mask_url(self._url)

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        runner = _LoopThread()
        try:
            runner.submit(self._open()).result()
        except BaseException:
            runner.stop()
            raise
        self._runner = runner

    async def _open(self) -> None:
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self._url,
            min_size=1,
            max_size=_POOL_MAX,
            open=False,
            timeout=_CONNECT_TIMEOUT_S,
            name="bridge",
        )
        try:
            # One connection first: its error says why (refused, no such database), where
            # the pool would only time out.
            probe = await psycopg.AsyncConnection.connect(
                self._url, connect_timeout=round(_CONNECT_TIMEOUT_S)
            )
            await probe.close()
            await pool.open(wait=True, timeout=_CONNECT_TIMEOUT_S)
            self._pool = pool
            applied = await self._transaction(_migrate)
        except (psycopg.Error, PoolTimeout) as exc:
            await pool.close()
            self._pool = None
            raise translate(exc, self.location, self._password) from None
        except BaseException:
            await pool.close()
            self._pool = None
            raise
        if applied:
            # One line, not one a migration: a new database applies every one of them.
            fresh = applied[0] == MIGRATIONS[0][0]
            log.info("%s: %d migration%s, up to %s",
                     "created the schema" if fresh else "migrated the schema", len(applied),
                     "" if len(applied) == 1 else "s", applied[-1])  # fmt: skip

    def close(self) -> None:
        with self._binding:
            runner, self._runner = self._runner, None
            local, self._local = self._local, None
        if runner is None:
            return
        for conn in local.close() if local else []:
            runner.submit(conn.close()).result()
        pool, self._pool = self._pool, None
        if pool is not None:
            runner.submit(pool.close()).result()
        runner.stop()

    # -- plumbing --------------------------------------------------------------------------

    async def _transaction(
        self,
        fn: Callable[[Conn], Awaitable[T]],
        connection: Callable[[], AbstractAsyncContextManager[Conn]] | None = None,
        *,
        pipeline: bool = False,
        implicit: bool = False,
    ) -> T:
        """Run `fn(conn)` in one transaction on a connection of `connection` (the pool's by
        default); run it again if it lost a deadlock to another replica, or once if its
        connection had been cut (a server restart, a proxy). With `pipeline`, in psycopg's
        pipeline mode: the BEGIN, the statements up to the first read of a result, and the
        COMMIT go out together, not one round trip each. With `implicit` (a connection in
        autocommit mode), no BEGIN and no COMMIT at all: in pipeline mode the statements
        up to the pipeline's closing sync are PostgreSQL's implicit transaction, committed
        at the sync, or rolled back whole at the first error; without it, each statement
        commits alone."""
        if connection is None:
            if self._pool is None:
                raise StoreError("the store is closed")
            connection = self._pool.connection
        for attempt in range(1, _RETRIES + 1):
            is_broken = False
            try:
                async with connection() as conn:
                    try:
                        async with contextlib.AsyncExitStack() as stack:
                            if pipeline:
                                await stack.enter_async_context(conn.pipeline())
                            if not implicit:
                                await stack.enter_async_context(conn.transaction())
                            result = await fn(conn)
                    except psycopg.OperationalError:
                        is_broken = conn.broken
                        raise
                self.commits += 1
                return result
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                if attempt == _RETRIES:
                    raise
                log.debug("transaction conflicted with another replica; running it again")
                await asyncio.sleep(0.01 * attempt)
            except psycopg.OperationalError:
                # Every write is idempotent or lease-guarded, so running one again after a
                # cut whose commit may have gone through writes nothing twice that matters.
                if not is_broken or attempt > 1:
                    raise
                log.info("a database connection was cut; running the transaction again")
        raise AssertionError("unreachable")

    async def run(
        self, fn: Callable[[Conn], Awaitable[T]], *, durable: bool = True, alone: bool = False
    ) -> T:
        """Run `fn(conn)` in one transaction on the caller's loop; returns once committed.

        With `durable=False` (a write that acknowledges nothing to the outside world) the
        commit does not wait for the server's WAL flush (`synchronous_commit = off`): a
        server crash may lose it, never reorder it. Those writes (the delivery loop's
        claims, releases and outcomes, a poll that changed nothing: few statements, many
        times a second) run in psycopg's pipeline mode (`_transaction`), so `fn` must not
        read `rowcount` before it has fetched a result. On the caller's loop they have
        connections of their own (`LoopBinding.relaxed`: autocommit, `synchronous_commit`
        off for the session), and their statements are one implicit transaction: no BEGIN,
        no `SET LOCAL`, no COMMIT, the whole of it sent at once up to the first read. With
        `alone` as well, `fn` runs one statement, which commits on its own: its results
        come back after its commit, in one round trip, with no pipeline to open and close.
        """
        try:
            local = self._local_connections(asyncio.get_running_loop())
            if local is not None:
                if durable:
                    return await self._transaction(fn, local.durable.connection)
                return await self._transaction(
                    fn, local.relaxed.connection, pipeline=not alone, implicit=True
                )
            pipeline = not durable
            if not durable:
                fn = _without_flush_wait(fn)
            runner = self._runner
            if runner is None:
                raise StoreError("the store is closed")
            work = self._transaction(fn, pipeline=pipeline)
            return await asyncio.wrap_future(runner.submit(work))
        except (psycopg.Error, PoolTimeout) as exc:
            raise translate(exc, self.location, self._password) from None

    def _local_connections(self, loop: asyncio.AbstractEventLoop) -> LoopBinding | None:
        """The connections of `loop`: they are its own, or it takes them over from a loop
        that is gone; None while another live loop has them (then the store's thread)."""
        local = self._local
        if local is not None and local.home is loop:
            return local
        with self._binding:
            if self._runner is None:
                raise StoreError("the store is closed")
            local = self._local
            if local is not None and not local.home.is_closed():
                return local if local.home is loop else None
            self._local = LoopBinding(self._url, loop, _POOL_MAX, _CONNECT_TIMEOUT_S)
            # The old loop's idle connections: closed by the store's thread (none is in use).
            for conn in local.close() if local else []:
                self._runner.submit(conn.close())
            return self._local

    async def write_problem(self) -> str | None:
        async def probe(conn: Conn) -> bool:
            cur = await conn.execute("SELECT NOT pg_is_in_recovery()")
            row = await cur.fetchone()
            await conn.execute("UPDATE _migrations SET applied_ms = applied_ms WHERE false")
            return bool(row and row[0])

        try:
            if not await asyncio.wait_for(self.run(probe), timeout=PROBE_TIMEOUT_S):
                return "the server is a read-only standby"
        except StoreError as exc:
            return str(exc)
        except TimeoutError:
            return f"no commit within {PROBE_TIMEOUT_S:g} s"
        return None


def _without_flush_wait(fn: Callable[[Conn], Awaitable[T]]) -> Callable[[Conn], Awaitable[T]]:
    """`fn`'s transaction, committed without waiting for the WAL flush."""

    async def run(conn: Conn) -> T:
        await conn.execute("SET LOCAL synchronous_commit = off")
        return await fn(conn)

    return run


async def _migrate(conn: Conn) -> list[str]:
    """Apply the migrations not yet recorded, one replica at a time; return those applied."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_ms BIGINT)"
    )
    cur = await conn.execute("SELECT name FROM _migrations")
    done = {row[0] for row in await cur.fetchall()}
    applied = []
    for name, statements in MIGRATIONS:
        if name in done:
            continue
        for statement in statements:
            await conn.execute(statement)
        await conn.execute(
            "INSERT INTO _migrations (name, applied_ms) VALUES (%s, %s)", (name, now_ms())
        )
        applied.append(name)
    return applied
