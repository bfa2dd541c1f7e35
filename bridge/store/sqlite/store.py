"""The SQLite backend of the store: WAL mode, FULL sync, one group-committing writer.

Writes go through one `Writer` thread (see writer.py); reads run in worker threads (a short
one on the event loop's thread: `read_here`), each with its own read connection, which WAL
lets proceed while the writer commits.

The file is watched: the (device, inode) the writer opened is compared with what the path
holds after every commit and whenever the daemon asks (`lost_reason`, once a second). A file
deleted or replaced under the running daemon fails every write and read from then on; no
commit into the orphaned file is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import sqlite_utils

from bridge.errors import StoreError, StoreUnavailable
from bridge.events import now_ms
from bridge.store.base import PROBE_TIMEOUT_S, Store
from bridge.store.sqlite.events import SQLiteEvents
from bridge.store.sqlite.migrations import MIGRATIONS
from bridge.store.sqlite.outbox import SQLiteOutbox
from bridge.store.sqlite.poll import SQLitePollState
from bridge.store.sqlite.replicas import SQLiteReplicas
from bridge.store.sqlite.report import SQLiteReport
from bridge.store.sqlite.retention import SQLiteRetention
from bridge.store.sqlite.sessions import SQLiteSessions
from bridge.store.sqlite.tokens import SQLiteTokens
from bridge.store.sqlite.writer import BUSY_TIMEOUT_MS, Writer, translate

T = TypeVar("T")
log = logging.getLogger("bridge.store")

# How often the lock file is compared with the one locked (see `_recheck_lock`).
LOCK_CHECK_EVERY_S = 1.0
# The files SQLite keeps beside a database in WAL mode, found by the database's name.
_COMPANIONS = ("-wal", "-shm")
# The size of the readiness probe's row: a typical event's (two pages of the default 4 KiB).
PROBE_BYTES = 8192


def connect(path: str, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode with the bridge's pragmas."""
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
    )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def file_identity(path: str) -> tuple[int, int] | None:
    """The (device, inode) of the file at `path`, or None when there is no file there."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


def identity_problem(
    path: str, opened: tuple[int, int] | None, now: tuple[int, int] | None
) -> str | None:
    """What is wrong when the database opened as `opened` is now `now` at `path`, or None."""
    if opened is None or now == opened:
        return None
    if now is None:
        return f"the database file {path} was deleted"
    return f"the database file {path} was replaced by another file"


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply the migrations not yet recorded; return the names applied."""
    db = sqlite_utils.Database(conn)
    if "_migrations" not in db.table_names():
        db.table("_migrations").create({"name": str, "applied_ms": int}, pk="name")
    done = {row["name"] for row in db.table("_migrations").rows}
    applied = []
    for name, migration in MIGRATIONS:
        if name in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            migration(db)
            db.table("_migrations").insert({"name": name, "applied_ms": now_ms()})
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(name)
        log.debug("applied migration %s", name)
    if applied:
        # One line, not one a migration: a new database applies every one of them.
        what = "created the schema" if not done else "migrated the schema"
        log.info("%s: %d migration%s, up to %s", what, len(applied),
                 "" if len(applied) == 1 else "s", applied[-1])  # fmt: skip
    return applied


class SQLiteStore(
    SQLiteEvents,
    SQLitePollState,
    SQLiteOutbox,
    SQLiteReport,
    SQLiteReplicas,
    SQLiteRetention,
    SQLiteSessions,
    SQLiteTokens,
    Store,
):
    """The store in one SQLite file."""

    def __init__(self, path: str | Path, replica_id: str | None = None) -> None:
        from bridge.store import default_replica_id

        self.path = str(path)
        self.replica_id = replica_id or default_replica_id()
        self._recorded_leases: set[str] = set()
        # The file the writer opened, (device, inode): a different one there means the
        # database was deleted or replaced under us (None for `:memory:`, before open).
        self._identity: tuple[int, int] | None = None
        # The same for its WAL and shared-memory files, which SQLite finds by name.
        self._companions: dict[str, tuple[int, int] | None] = {}
        here = None if self.path == ":memory:" or self.path.startswith("file:") else self._open_here
        self.writer = Writer(self._open_writer, check=self.lost_reason, connect_here=here)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._is_open = False
        # The open lock file beside the database while this process owns it (a daemon), its
        # (device, inode), and the database file held under the same lock.
        self._owner_fd: int | None = None
        self._database_fd: int | None = None
        self._lock_identity: tuple[int, int] | None = None
        self._lock_checked_s = 0.0
        self._lock_guard = threading.Lock()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    @property
    def location(self) -> str:
        return self.path

    # -- lifecycle -------------------------------------------------------------------------

    def _open_writer(self) -> sqlite3.Connection:
        conn = connect(self.path)
        migrate(conn)
        if self.path != ":memory:" and not self.path.startswith("file:"):
            self._identity = file_identity(self.path)
            self._companions = {
                self.path + suffix: file_identity(self.path + suffix) for suffix in _COMPANIONS
            }
        return conn

    def _open_here(self) -> sqlite3.Connection:
        """The connection of `Writer.run_here`: never waits for a lock, never syncs, never
        checkpoints (see writer.py)."""
        conn = connect(self.path)
        conn.execute("PRAGMA busy_timeout = 0")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        return conn

    def _discard_orphaned_companions(self) -> None:
        """Delete our WAL and shared-memory files once our database file is gone: SQLite
        keeps them when the file was deleted or replaced, and the next open of the path would
        apply the old database's pages to the new file."""
        for name, identity in self._companions.items():
            if identity is not None and file_identity(name) == identity:
                with contextlib.suppress(OSError):
                    os.unlink(name)
                    log.warning("removed %s, which belonged to the lost database file", name)

    def lost_reason(self) -> str | None:
        """Whether the database file is still the one the writer opened (see the base); the
        lock file is re-checked on the way."""
        self._recheck_lock()
        if self.writer.lost is None:
            # Sticky: from now on every write and read fails (a plain store of a str, safe
            # from any thread).
            self.writer.lost = identity_problem(self.path, self._identity, file_identity(self.path))
        return self.writer.lost

    @property
    def lock_path(self) -> str | None:
        """The lock file beside the database a daemon holds (None for an in-memory one)."""
        if self.path == ":memory:" or self.path.startswith("file:"):
            return None
        return self.path + ".lock"

    def take_ownership(self) -> None:
        """Hold an exclusive `flock` on `DATABASE.lock`, and on the database file itself,
        until `close`.

        One daemon owns a SQLite database, so that what it keeps in memory about it (its
        leases, its batches) can be trusted; a second `bridge run` on the same file stops
        here. The lock on the database file holds even when the lock file is deleted under
        the running daemon (a new file at that path would be free to lock); the lock file,
        which tools and people look for, is re-checked by inode like the database file
        (`lost_reason`) and taken again when it was deleted or replaced. flock and SQLite's
        own (POSIX) locks do not interact on Linux. The kernel drops the locks when the
        process ends, however it ends, so a crash leaves no stale lock. `bridge events` and
        the other commands do not take them.
        """
        lock_path = self.lock_path
        if lock_path is None or self._owner_fd is not None:
            return
        fd = self._lock(lock_path, os.O_RDWR, 0o600)
        try:
            # Created if missing: SQLite takes an empty file for a new database.
            self._database_fd = self._lock(self.path, os.O_RDONLY, 0o644)
        except StoreError:
            os.close(fd)
            raise
        self._owner_fd = fd
        self._lock_identity = os.fstat(fd).st_dev, os.fstat(fd).st_ino

    def _lock(self, path: str, mode: int, permissions: int) -> int:
        """An open descriptor of `path` (created if missing) under an exclusive flock."""
        lock_path = self.lock_path
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, mode | os.O_CREAT | os.O_CLOEXEC, permissions)
        except OSError as exc:
            # The same words as `open`'s: the database's folder is what is wrong.
            raise StoreError(f"cannot open the database {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise StoreError(
                f"another bridge is already running on the database {self.path} (it holds"
                f" {lock_path}); one bridge process owns a SQLite database"
            ) from exc
        return fd

    def _recheck_lock(self) -> None:
        """Take the lock file again when it was deleted or replaced under us (at most once
        every LOCK_CHECK_EVERY_S: `lost_reason` runs after every commit too)."""
        lock_path, now_s = self.lock_path, time.monotonic()
        if lock_path is None or self._owner_fd is None or now_s < self._lock_checked_s:
            return
        with self._lock_guard:
            self._lock_checked_s = now_s + LOCK_CHECK_EVERY_S
            if file_identity(lock_path) == self._lock_identity:
                return
            try:
                fd = self._lock(lock_path, os.O_RDWR, 0o600)
            except StoreError as exc:
                log.error(
                    "the lock file %s was replaced and cannot be taken again: %s", lock_path, exc
                )
                return
            os.close(self._owner_fd)
            self._owner_fd = fd
            self._lock_identity = os.fstat(fd).st_dev, os.fstat(fd).st_ino
            log.warning(
                "the lock file %s was deleted or replaced under the running bridge: taken again"
                " (the database file's own lock kept any other bridge out meanwhile)",
                lock_path,
            )

    def _release_ownership(self) -> None:
        # Only once every connection is closed: closing a descriptor of the database file
        # drops the process's POSIX locks on it, SQLite's included.
        for fd in (self._owner_fd, self._database_fd):
            if fd is not None:
                os.close(fd)
        self._owner_fd = self._database_fd = None

    def open(self) -> None:
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self.writer.start()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database {self.path}: {exc}") from exc
        except OSError as exc:
            raise StoreError(f"cannot open the database {self.path}: {exc.strerror}") from exc
        self._is_open = True

    def close(self) -> None:
        # Readers first: the writer's connection, closing last, is the one that checkpoints
        # the WAL into the file it opened (the right one, even when the path now holds another).
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self.writer.stop()
        if self.writer.lost is not None:
            self._discard_orphaned_companions()
        self._local = threading.local()
        self._is_open = False
        self._release_ownership()

    # -- plumbing --------------------------------------------------------------------------

    def _reader(self, *, waits: bool = True) -> sqlite3.Connection:
        """This thread's read connection: one that waits for a lock (up to the busy
        timeout), or one that never does (`waits=False`, for `read_here`)."""
        name = "conn" if waits else "conn_here"
        conn: sqlite3.Connection | None = getattr(self._local, name, None)
        if conn is None:
            conn = connect(self.path, readonly=True)
            if not waits:
                conn.execute("PRAGMA busy_timeout = 0")
            setattr(self._local, name, conn)
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def read_sync(self, fn: Callable[[sqlite3.Connection], T], *, waits: bool = True) -> T:
        """Run a read in this thread on its own read connection (`waits=False`: one that
        never waits for a lock, StoreUnavailable at once instead)."""
        if not self._is_open:
            raise StoreError("the store is closed")
        if self.writer.lost is not None:
            # A new read connection would open whatever the path holds now, with our WAL.
            raise StoreUnavailable(self.writer.lost)
        try:
            return fn(self._reader(waits=waits))
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read in a worker thread."""
        return await asyncio.to_thread(self.read_sync, fn)

    async def read_here(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a short read (a row by its key) on this thread, the event loop's: the hop to
        a worker thread and back costs more CPU than such a read. Its connection never waits
        for a lock; when one stands in the way (rare in WAL mode: a recovery, another
        process's exclusive lock), the read goes to a worker thread, which waits for it, so
        the loop never does."""
        try:
            return self.read_sync(fn, waits=False)
        except StoreUnavailable:
            if not self._is_open or self.writer.lost is not None:
                raise
            return await self.read(fn)

    async def write(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Run a write in the next group commit; returns once it is durable (once it is
        committed, not yet synced to the disk, when `durable` is False: see writer.py)."""
        return await self.writer.run(fn, durable=durable)

    async def write_here(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a write that acknowledges nothing (committed, not synced to the disk), at once
        on this thread when no other write is under way (see writer.py's `run_here`)."""
        return await self.writer.run_here(fn)

    async def write_alone(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a write in a durable commit of its own, shared with no other write."""
        return await self.writer.run(fn, alone=True)

    async def write_problem(self) -> str | None:
        def probe(conn: sqlite3.Connection) -> None:
            # A row as large as a typical event, in the main file, gone in the same commit:
            # it needs new pages where an update in place (an earlier probe's) would reuse
            # space the WAL already holds, and so pass on a full disk.
            conn.execute(
                "INSERT INTO _migrations (name, applied_ms) VALUES (zeroblob(?), 0)",
                (PROBE_BYTES,),
            )
            conn.execute("DELETE FROM _migrations WHERE typeof(name) = 'blob'")

        try:
            await asyncio.wait_for(self.write(probe), timeout=PROBE_TIMEOUT_S)
        except StoreError as exc:
            return str(exc)
        except TimeoutError:
            return f"no commit within {PROBE_TIMEOUT_S:g} s"
        return None
