"""The PostgreSQL backend of the store: several bridges (replicas) sharing one database.

The store owns an asyncio event loop in a thread of its own, and psycopg's
`AsyncConnectionPool` lives on that loop. Every method submits its coroutine there and the
caller awaits the result: the caller's loop never blocks on the database, and the store
works from any loop (the daemon's, each `asyncio.run` of the CLI) much as the SQLite
store's writer thread does. Each store call is one transaction on a pooled connection;
a transaction that loses a deadlock or a serialization conflict to another replica is run
again, and so is one whose pooled connection had been cut (once).

What makes replicas safe (see the mixins):
- events: `INSERT ... ON CONFLICT (id) DO NOTHING`, so two replicas that receive the same
  upstream id at once make one event (the second waits for the first's commit, then skips);
- deliveries: claimed with `SELECT ... FOR UPDATE SKIP LOCKED` and a lease, so a replica
  never waits for another's rows and a dead replica's claims are taken over once they expire;
- polls: one lease per source, taken by an atomic upsert before each poll.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from bridge import jsontext
from bridge.errors import StoreError, StoreUnavailable
from bridge.events import Event, now_ms
from bridge.store import mask_url
from bridge.store.base import NewEvent, Store
from bridge.store.pg_migrations import MIGRATIONS
from bridge.store.postgres_outbox import PostgresOutbox
from bridge.store.postgres_poll import PostgresPollState
from bridge.store.postgres_replicas import PostgresReplicas
from bridge.store.postgres_report import PostgresReport
from bridge.store.postgres_retention import PostgresRetention
from bridge.store.rows import EVENT_COLUMNS, row_to_event, select_filtered

T = TypeVar("T")
Conn = psycopg.AsyncConnection[Any]
log = logging.getLogger("bridge.store")

# Any number fits: it only has to be the same for every replica of one database.
_MIGRATION_LOCK = 0x627269646765
_RETRIES = 5  # runs of one transaction at most (deadlocks, conflicts, a cut connection)
_POOL_MAX = 8
_CONNECT_TIMEOUT_S = 10.0


async def insert_events(conn: Conn, batch: Sequence[NewEvent]) -> list[bool]:
    """Insert events and their pending deliveries on `conn`, skipping known ids.

    Rows go in in the batch's order (their `seq` order). Two replicas inserting overlapping
    batches in different orders may deadlock on the unique index; PostgreSQL then aborts
    one transaction, which `PostgresStore` runs again.
    """
    if not batch:
        return []
    columns: list[list[Any]] = [[] for _ in range(10)]
    for item in batch:
        ev = item.event
        data = jsontext.dumps(ev.data)
        values = (ev.id, ev.source, ev.type, ev.origin, ev.change, ev.subject, ev.upstream_id,
                  ev.time_ms, ev.recorded_ms, data)  # fmt: skip
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    cur = await conn.execute(
        f"INSERT INTO events ({EVENT_COLUMNS}) SELECT * FROM unnest("
        "%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
        " %s::bigint[], %s::bigint[], %s::text[]) ON CONFLICT (id) DO NOTHING RETURNING id",
        columns,
    )
    inserted = {row[0] for row in await cur.fetchall()}
    out = [False] * len(batch)
    deliveries: tuple[list[str], list[str], list[int]] = ([], [], [])
    for i, item in enumerate(batch):
        ev = item.event
        if ev.id not in inserted:
            continue
        inserted.discard(ev.id)  # a repeat later in the same batch is a duplicate
        out[i] = True
        for target in sorted(set(item.targets)):
            deliveries[0].append(ev.id)
            deliveries[1].append(target)
            deliveries[2].append(ev.recorded_ms)
    if deliveries[0]:
        await conn.execute(
            "INSERT INTO deliveries (event_id, target, status, attempts, next_ms, created_ms)"
            " SELECT e, t, 'pending', 0, ms, ms FROM unnest(%s::text[], %s::text[], %s::bigint[])"
            " AS u(e, t, ms) ON CONFLICT (event_id, target) DO NOTHING",
            deliveries,
        )
    return out


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
    PostgresPollState, PostgresOutbox, PostgresReport, PostgresReplicas, PostgresRetention, Store
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
        for name in applied:
            log.info("applied migration %s", name)

    def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        pool, self._pool = self._pool, None
        if pool is not None:
            runner.submit(pool.close()).result()
        runner.stop()

    # -- plumbing --------------------------------------------------------------------------

    async def _transaction(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `fn(conn)` in one transaction; run it again if it lost a deadlock to another
        replica, or once if its pooled connection had been cut (a server restart, a proxy)."""
        pool = self._pool
        if pool is None:
            raise StoreError("the store is closed")
        for attempt in range(1, _RETRIES + 1):
            is_broken = False
            try:
                async with pool.connection() as conn:
                    try:
                        async with conn.transaction():
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

    async def run(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `fn(conn)` in one transaction on the store's loop; returns once committed."""
        runner = self._runner
        if runner is None:
            raise StoreError("the store is closed")
        try:
            return await asyncio.wrap_future(runner.submit(self._transaction(fn)))
        except (psycopg.Error, PoolTimeout) as exc:
            raise translate(exc, self.location, self._password) from None

    # -- events ----------------------------------------------------------------------------

    async def record_events(self, batch: Sequence[NewEvent]) -> list[bool]:
        return await self.run(lambda conn: insert_events(conn, batch))

    async def get_event(self, event_id: str) -> Event | None:
        async def q(conn: Conn) -> Event | None:
            cur = await conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE id = %s", (event_id,)
            )
            row = await cur.fetchone()
            return row_to_event(row) if row else None

        return await self.run(q)

    async def list_events(
        self,
        *,
        source: str | None = None,
        type: str | None = None,
        since_ms: int | None = None,
        limit: int | None = 100,
    ) -> list[Event]:
        sql, args = select_filtered(
            f"SELECT {EVENT_COLUMNS} FROM events",
            [("source = ?", source), ("type = ?", type), ("recorded_ms >= ?", since_ms)],
            order_by="seq DESC",
            limit=limit,
            mark="%s",
        )

        async def q(conn: Conn) -> list[Event]:
            cur = await conn.execute(sql, args)
            return [row_to_event(row) for row in await cur.fetchall()]

        return await self.run(q)

    async def count_events(self, *, source: str | None = None) -> int:
        async def q(conn: Conn) -> int:
            if source is None:
                cur = await conn.execute("SELECT count(*) FROM events")
            else:
                cur = await conn.execute("SELECT count(*) FROM events WHERE source = %s", (source,))
            row = await cur.fetchone()
            return int(row[0]) if row else 0

        return await self.run(q)

    async def check_writable(self) -> bool:
        async def probe(conn: Conn) -> bool:
            cur = await conn.execute("SELECT NOT pg_is_in_recovery()")
            row = await cur.fetchone()
            await conn.execute("UPDATE _migrations SET applied_ms = applied_ms WHERE false")
            return bool(row and row[0])

        try:
            return await asyncio.wait_for(self.run(probe), timeout=5.0)
        except (StoreError, TimeoutError):
            return False


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
