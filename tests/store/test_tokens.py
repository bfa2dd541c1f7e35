"""The OAuth2 part of the store: a credential's rotated refresh token, on SQLite and
PostgreSQL alike, written in a durable commit of its own."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from bridge.store import Store
from bridge.store.sqlite import SQLiteStore
from bridge.store.tokens import StoredRefreshToken, initial_hash


def test_a_rotated_refresh_token_is_kept_and_replaced(backend: Callable[..., Store]) -> None:
    first, second = backend(), backend()
    assert asyncio.run(first.load_refresh_token("graph")) is None
    token = StoredRefreshToken("graph", initial_hash("rt-0"), "rt-1", rotated_ms=1_000)
    asyncio.run(first.save_refresh_token(token))
    assert asyncio.run(second.load_refresh_token("graph")) == token
    newer = StoredRefreshToken("graph", initial_hash("rt-0"), "rt-2", rotated_ms=2_000)
    asyncio.run(second.save_refresh_token(newer))
    assert asyncio.run(first.load_refresh_token("graph")) == newer
    assert asyncio.run(first.load_refresh_token("source:other")) is None
    assert "rt-2" not in repr(newer)


def test_a_rotation_is_a_durable_commit_of_its_own(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "bridge.db")
    store.open()
    try:
        writer = store.writer

        def batch(conn: sqlite3.Connection) -> tuple[int, int]:
            # The commits finished before this operation's batch, and its `synchronous`.
            return writer.commits, int(conn.execute("PRAGMA synchronous").fetchone()[0])

        gate = threading.Event()
        blocker = writer.submit(lambda conn: gate.wait(5))
        before = writer.submit(batch, durable=False)
        alone = writer.submit(batch, durable=False, alone=True)
        after = writer.submit(batch, durable=False)
        gate.set()
        blocker.result()
        shared = {before.result()[0], after.result()[0]}
        assert alone.result()[0] not in shared
        assert alone.result()[1] == 2  # FULL, though submitted as not durable
        assert asyncio.run(store.load_refresh_token("x")) is None
    finally:
        store.close()
