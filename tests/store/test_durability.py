"""Which writes wait for the disk: events and poll state do; a delivery's claim and outcome not.

SQLite's side is in test_store.py (the writer's `synchronous` per batch); this is
PostgreSQL's: `synchronous_commit = off` for the delivery writes' own transactions only.
"""

from __future__ import annotations

import asyncio
from typing import Any

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
