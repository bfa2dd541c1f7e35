"""Which writes wait for the disk: events and poll state do; a delivery's claim and outcome not.

SQLite's side is in test_store.py (the writer's `synchronous` per batch); this is
PostgreSQL's: `synchronous_commit = off` for the delivery writes' own transactions only, on
connections of their own, each of those writes still one transaction.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bridge.errors import StoreError
from bridge.events import Event, event_id, now_ms
from bridge.store import open_store


async def _show(conn: Any) -> str:
    cur = await conn.execute("SHOW synchronous_commit")
    row = await cur.fetchone()
    return str(row[0])


def test_postgres_delivery_writes_do_not_wait_for_the_flush(postgres_url: str) -> None:
    store: Any = open_store(postgres_url)
    store.open()
    try:
        assert asyncio.run(store.run(_show, durable=False)) == "off"
        # SET LOCAL ends with its transaction: the next one on the pool is durable again.
        assert all(asyncio.run(store.run(_show)) == "on" for _ in range(10))
        ev = Event(id=event_id("s", "1"), source="s", type="t", origin="push", data={},
                   recorded_ms=now_ms())  # fmt: skip
        assert asyncio.run(store.record_event(ev, ["sink"])) is True
        claimed = asyncio.run(store.claim_due({"sink": 5}, now_ms(), now_ms() + 60_000))
        assert [c.event.id for c in claimed.claims] == [ev.id]
        asyncio.run(store.release([claimed.claims[0].delivery_id]))
    finally:
        store.close()


def test_a_postgres_delivery_write_of_several_statements_is_one_transaction(
    postgres_url: str,
) -> None:
    """No BEGIN and no COMMIT on those connections: their statements, a result read between
    them, are still all written or none (a claim of several targets, a flush)."""
    store: Any = open_store(postgres_url)
    store.open()

    async def write_then_fail(conn: Any) -> None:
        await conn.execute(
            "INSERT INTO replicas (id, started_ms, heartbeat_ms) VALUES ('first', 1, 1)"
        )
        cur = await conn.execute("SELECT count(*) FROM replicas")
        assert (await cur.fetchone())[0] == 1  # the write is seen within its transaction
        await conn.execute(
            "INSERT INTO replicas (id, started_ms, heartbeat_ms) VALUES ('second', 1, 1)"
        )
        await conn.execute("SELECT 1 / 0")

    async def replicas(conn: Any) -> list[str]:
        cur = await conn.execute("SELECT id FROM replicas ORDER BY id")
        return [row[0] for row in await cur.fetchall()]

    async def main() -> None:
        with pytest.raises(StoreError, match="division by zero"):
            await store.run(write_then_fail, durable=False)
        assert await store.run(replicas) == []
        assert await store.run(replicas, durable=False) == []

    try:
        asyncio.run(main())
    finally:
        store.close()
