"""Group commit: one thread owns the SQLite write connection and commits many writes at once.

Callers submit a function of the connection and get a future. The writer takes every
operation waiting in its queue (up to `max_batch`), runs each inside its own savepoint in
one `BEGIN IMMEDIATE` transaction and commits once, with `synchronous=FULL`, before any
future is resolved: a caller that sees its result knows it is durable. One operation that
raises rolls back alone; a commit that fails fails every operation of the batch.

An operation submitted with `durable=False` (a delivery's claim or outcome, which acknowledge
nothing to the outside world) does not need the fsync: a batch made only of such operations
commits with `synchronous=NORMAL`, which in WAL mode writes the WAL without syncing it. Such
a commit survives a crash of the process, and may be lost to a power cut, but never out of
order: the WAL is appended in commit order, so the next FULL commit's fsync makes everything
before it durable too. A batch with one durable operation commits FULL as a whole.

An operation run with `run_here` (a delivery's claim, release or outcome: see outbox.py; a
304's or a failed poll's outcome: poll.py) does not wait for the thread at all when no write
is under way in the process: it is committed at once on the calling thread (the event
loop's), on a connection of its own that never waits for a lock (another process's write
sends it to the thread), never syncs (`NORMAL`) and never checkpoints the WAL: the thread
does that, asked every `CHECKPOINT_EVERY` such commits (and while it has not, at most as many
more are made here; then they wait in its queue). One lock (`_txn`) keeps the two
connections' transactions apart, so neither ever sleeps in SQLite's busy handler for the
other; the thread waits at most one such short transaction. This spares each of those writes
the two thread hops and the GIL's hand-overs of the group commit, which cost more than the
write itself.

Another process's write lock (a CLI command's write, a second daemon's) is waited for by
asking again every `LOCK_POLL_S`, not in SQLite's busy handler: the handler's sleeps grow to
100 ms, so a process that commits back to back (a large `redeliver`, an outbox filled by a
script) would take the lock again in each of them, and the daemon would wait until it stops.
Asked every millisecond, the lock is had in the first pause between two of its commits.

An operation submitted with `alone=True` (a rotated OAuth2 refresh token) is a batch of its
own, FULL: no other write shares its commit, so none can fail it.

After each commit, before any future is resolved, the writer asks `check` whether the database
is still the one it writes to (see sqlite.py: the file may have been deleted or replaced under
the daemon). When it is not, the batch fails, and so does every write after it: nothing is
acknowledged into a file nobody will read again.

With one commit per row SQLite with FULL sync manages about 3,200 rows/s on this kind of
machine; batched, 100 rows per commit, about 110,000.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from bridge.errors import StoreError, StoreUnavailable
from bridge.logs import plural

T = TypeVar("T")
log = logging.getLogger("bridge.store")

# How long a write waits for another process's lock: normally, and once a wait has failed.
BUSY_TIMEOUT_MS = 5000
DEGRADED_BUSY_TIMEOUT_MS = 200
# How often a write waiting for another process's lock asks for it again.
LOCK_POLL_S = 0.001

# How many commits `run_here` makes before the writer thread is asked to checkpoint the WAL
# (passively: what readers still need stays); about 20 pages each, so the WAL stays small.
CHECKPOINT_EVERY = 64

# Words in SQLite's messages for conditions that pass: try again later.
_TRANSIENT = ("locked", "busy", "disk", "full", "readonly", "i/o", "unable to open")


def _no_write(conn: sqlite3.Connection) -> None:
    """The operation of a checkpoint request, which writes nothing."""


def translate(exc: sqlite3.Error) -> StoreError:
    """Map an sqlite3 error to StoreUnavailable (transient) or StoreError."""
    text = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError) and any(w in text for w in _TRANSIENT):
        return StoreUnavailable(f"the database cannot be written: {exc}")
    return StoreError(f"the database failed: {exc}")


@dataclass(slots=True)
class _Op:
    fn: Callable[[sqlite3.Connection], Any]
    future: Future[Any]
    durable: bool = True
    alone: bool = False  # committed in a batch of its own
    checkpoint: bool = False  # not a write: checkpoint the WAL (for `run_here`'s commits)


class Writer:
    """The single writer thread of one SQLite database."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        max_batch: int = 500,
        check: Callable[[], str | None] | None = None,
        connect_here: Callable[[], sqlite3.Connection] | None = None,
    ):
        self._connect = connect
        # Opens `run_here`'s connection (None: every write goes through the thread, as for
        # `:memory:`, where a second connection would open another database).
        self._connect_here = connect_here
        self._here: sqlite3.Connection | None = None
        self._here_commits = 0  # since the last checkpoint asked for
        self._checkpoint_due = False  # asked for, not yet made by the thread
        # Held by whichever connection is in a write transaction: the thread's or run_here's.
        self._txn = threading.Lock()
        # Says what is wrong with the database file after a commit, or None when nothing is.
        self._check = check
        # Why no write can be acknowledged any more (set once, for good), or None.
        self.lost: str | None = None
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        # Test hook: when set, every commit fails with this error (a fault at the store).
        self.fault: sqlite3.Error | None = None
        self.commits = 0
        # True after a write lock could not be had, until the next successful commit.
        self.is_degraded = False
        # How long a transaction waits for another process's write lock (ms): BUSY_TIMEOUT_MS,
        # or DEGRADED_BUSY_TIMEOUT_MS while degraded.
        self.lock_wait_ms = BUSY_TIMEOUT_MS
        # Since when (monotonic seconds) it is, and how many writes failed fast since: the
        # state is said in two lines, when it begins and when it ends, never once a write.
        self._degraded_s = 0.0
        self.failed_fast = 0
        # The connection's `synchronous` setting now: FULL, or NORMAL for a batch that
        # acknowledges nothing (the connection is opened with FULL).
        self._is_full_sync = True
        self.relaxed_commits = 0
        self.checkpoints = 0  # asked for by `run_here`, and made

    def start(self) -> None:
        """Open the write connection in the writer thread; raise if it cannot be opened."""
        self._thread = threading.Thread(target=self._run, name="bridge-store-writer", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            raise self._start_error

    def stop(self) -> None:
        """Finish what is queued, then close the connection (`run_here`'s first: the
        thread's, closing last, is the one that checkpoints the WAL into the file it opened)."""
        with self._txn:
            self._connect_here = None  # from now on every write goes to the thread
            if self._here is not None:
                self._here.close()
                self._here = None
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def submit(
        self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True, alone: bool = False
    ) -> Future[T]:
        """Queue `fn(conn)` for the next commit; the future resolves once it is committed,
        durably (synced to the disk) unless `durable` is False; in a commit of its own when
        `alone`."""
        future: Future[T] = Future()
        if self._thread is None:
            future.set_exception(StoreError("the store is closed"))
            return future
        self._queue.put(_Op(fn, future, durable or alone, alone))
        return future

    async def run(
        self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True, alone: bool = False
    ) -> T:
        """Await `fn(conn)` committed (durably unless `durable` is False; alone if `alone`)."""
        return await asyncio.wrap_future(self.submit(fn, durable=durable, alone=alone))

    async def run_here(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Await `fn(conn)` committed, not synced to the disk (`durable=False`): at once on
        this thread when no other write is under way, else in the thread's next commit."""
        done, result = self._try_here(fn)
        if done:
            return cast(T, result)
        return await self.run(fn, durable=False)

    def _try_here(self, fn: Callable[[sqlite3.Connection], T]) -> tuple[bool, T | None]:
        """(True, the result) once committed here; (False, None) when the thread must do it:
        a write under way, the store closed, lost or degraded, another process's lock."""
        if self._connect_here is None or self._thread is None or self.lost is not None:
            return False, None
        if self._checkpoint_due and self._here_commits >= CHECKPOINT_EVERY:
            # The thread lags behind with the last checkpoint: what comes now waits for it
            # in the thread's queue, so the WAL cannot grow without bound meanwhile.
            return False, None
        if self.is_degraded or self.fault is not None or not self._txn.acquire(blocking=False):
            return False, None
        try:
            conn = self._here
            try:
                if conn is None:
                    conn = self._here = self._connect_here()
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error:
                return False, None  # another process writes: the thread waits for it
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise translate(exc) from exc
                raise
            self.commits += 1
            self.relaxed_commits += 1
        finally:
            self._txn.release()
        self._here_commits += 1
        if self._here_commits >= CHECKPOINT_EVERY and not self._checkpoint_due:
            self._here_commits = 0
            self._checkpoint_due = True
            self._queue.put(_Op(_no_write, Future(), durable=False, checkpoint=True))
            # The file is compared with the one opened now and then, not at each commit as
            # the thread does: these writes acknowledge nothing (and the thread's next
            # commit, a heartbeat's at the latest, looks too).
            if (problem := self._check() if self._check is not None else None) is not None:
                self.lost = problem
                raise StoreUnavailable(problem)
        return True, result

    def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Block until `fn(conn)` is committed durably (for threads that are not the loop)."""
        return self.submit(fn).result()

    def _run(self) -> None:
        try:
            conn = self._connect()
            # Set up (migrated) by now: from here on a lock is waited for by `_begin`.
            conn.execute("PRAGMA busy_timeout = 0")
        except BaseException as exc:
            self._start_error = exc
            self._started.set()
            return
        self._started.set()
        try:
            stopping = False
            held: _Op | None = None  # an operation that must be committed alone, taken early
            while not stopping:
                op = held if held is not None else self._queue.get()
                held = None
                if op is None:
                    break
                if op.checkpoint:
                    # Under the lock: a commit meanwhile would leave the checkpoint short of
                    # the WAL's end, and an unfinished one never lets the WAL start over.
                    with self._txn:
                        self._checkpoint(conn)
                        self._checkpoint_due = False
                    continue
                batch = [op]
                while not op.alone and len(batch) < self._max_batch:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stopping = True
                        break
                    if nxt.alone or nxt.checkpoint:
                        held = nxt
                        break
                    batch.append(nxt)
                self._commit(conn, batch)
                # Let go of the batch now, not when the next write comes: a big poll's
                # rows would stay in memory until then.
                del op, batch
        finally:
            if self.is_degraded:  # the count of the state's end line is not lost at a stop
                log.info(
                    "the database was still locked at the stop, after %.1f s; %s failed fast",
                    time.monotonic() - self._degraded_s,
                    plural(self.failed_fast, "write"),
                )
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Op]) -> None:
        started = time.perf_counter()
        if self.lost is not None:
            self._fail(batch, StoreUnavailable(self.lost))
            return
        # The lock covers the transaction, not the callers' wake-up: one that writes again
        # at once finds it free.
        with self._txn:
            done = self._transact(conn, batch)
        if done is None:
            return
        self.commits += 1
        if not self._is_full_sync:
            self.relaxed_commits += 1
        self._resolve(conn, done)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if elapsed_ms > 250:
            log.info("slow commit: %d writes in %.0f ms", len(done), elapsed_ms)

    def _transact(self, conn: sqlite3.Connection, batch: list[_Op]) -> list[tuple[_Op, Any]] | None:
        """Run a batch in one transaction: what each operation gave, or None when the
        transaction failed (and every caller of the batch has heard of it)."""
        try:
            self._set_sync(conn, any(op.durable for op in batch))
            self._begin(conn)
        except sqlite3.Error as exc:
            error = translate(exc)
            # Everything queued behind this batch would wait out the same lock, one busy
            # timeout each: fail it all now, and wait only briefly until a commit succeeds,
            # so callers (an inbound request's provider) get a prompt "try again later".
            # Degraded before the callers hear of it: what they do next sees the short wait.
            failed = batch + self._drain()
            if isinstance(error, StoreUnavailable):
                if not self.is_degraded:
                    self._set_degraded(True)
                self.failed_fast += len(failed)
            self._fail(failed, error)
            return None
        done = self._apply(conn, batch)
        if not done:  # every operation failed (and heard so): nothing to commit
            conn.execute("ROLLBACK")
            return done
        try:
            if self.fault is not None:
                raise self.fault
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            error = translate(exc)
            log.warning("commit of %d writes failed: %s", len(done), error)
            for op, _ in done:
                op.future.set_exception(error)
            return None
        return done

    def _begin(self, conn: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE; while another process holds the write lock, ask again every
        `LOCK_POLL_S`, for at most `lock_wait_ms` (then the busy error is raised).

        Only the BEGIN waits: in WAL mode a connection that holds the write lock is not
        refused one by readers or by other writers until it commits."""
        deadline = 0.0
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorcode", 0) & 0xFF != sqlite3.SQLITE_BUSY:
                    raise
                now = time.monotonic()
                if not deadline:
                    deadline = now + self.lock_wait_ms / 1000
                elif now >= deadline:
                    raise
            time.sleep(LOCK_POLL_S)

    def _resolve(self, conn: sqlite3.Connection, done: list[tuple[_Op, Any]]) -> None:
        """Tell the callers of a committed batch that it is durable, if the file still is."""
        problem = self._check() if self._check is not None else None
        if problem is not None:
            # Committed, but into a file that is gone: tell no caller it is durable.
            self.lost = problem
            for op, _ in done:
                op.future.set_exception(StoreUnavailable(problem))
            return
        if self.is_degraded:
            self._set_degraded(False)
        for op, result in done:
            op.future.set_result(result)

    @staticmethod
    def _apply(conn: sqlite3.Connection, batch: list[_Op]) -> list[tuple[_Op, Any]]:
        """Run each operation in its own savepoint; one that raises rolls back alone.

        A batch of one needs no savepoint (two statements fewer, each a hand-over of the GIL):
        when its operation raises, nothing of the transaction is committed."""
        done: list[tuple[_Op, Any]] = []
        if len(batch) == 1:
            (op,) = batch
            if op.future.set_running_or_notify_cancel():
                try:
                    done.append((op, op.fn(conn)))
                except BaseException as exc:
                    op.future.set_exception(
                        translate(exc) if isinstance(exc, sqlite3.Error) else exc
                    )
            return done
        for op in batch:
            if not op.future.set_running_or_notify_cancel():
                continue
            conn.execute("SAVEPOINT op")
            try:
                result = op.fn(conn)
            except BaseException as exc:
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                op.future.set_exception(translate(exc) if isinstance(exc, sqlite3.Error) else exc)
                continue
            conn.execute("RELEASE op")
            done.append((op, result))
        return done

    def _drain(self) -> list[_Op]:
        """Take every operation waiting in the queue (a stop request stays queued)."""
        ops: list[_Op] = []
        while True:
            try:
                op = self._queue.get_nowait()
            except queue.Empty:
                return ops
            if op is None:
                self._queue.put(None)
                return ops
            ops.append(op)

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        """Copy the WAL into the database as far as readers allow (`run_here`'s commits never
        do it themselves); a failure is for the next one to make up."""
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self.checkpoints += 1

    def _set_sync(self, conn: sqlite3.Connection, is_full: bool) -> None:
        """FULL for a batch that acknowledges something, NORMAL for one that does not.

        SQLite's `synchronous` belongs to the connection and takes effect from the next
        transaction, so it is switched between batches, only when it changes.
        """
        if is_full != self._is_full_sync:
            conn.execute(f"PRAGMA synchronous = {'FULL' if is_full else 'NORMAL'}")
            self._is_full_sync = is_full

    def _set_degraded(self, is_degraded: bool) -> None:
        """Enter or leave the degraded state, with one line each way."""
        self.lock_wait_ms = DEGRADED_BUSY_TIMEOUT_MS if is_degraded else BUSY_TIMEOUT_MS
        self.is_degraded = is_degraded
        if is_degraded:
            self._degraded_s, self.failed_fast = time.monotonic(), 0
            log.warning("the database is locked: failing writes fast until a commit succeeds")
        else:
            log.info(
                "the database is writable again after %.1f s; %s failed fast meanwhile",
                time.monotonic() - self._degraded_s,
                plural(self.failed_fast, "write"),
            )

    @staticmethod
    def _fail(batch: list[_Op], error: BaseException) -> None:
        for op in batch:
            if op.future.set_running_or_notify_cancel():
                op.future.set_exception(error)
