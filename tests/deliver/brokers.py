"""Shared parts of the broker kinds' tests: the services on this machine, the outbox."""

from __future__ import annotations

import asyncio
import socket
import uuid
from pathlib import Path

import pytest

from bridge.events import Event, event_id, now_ms
from bridge.store.base import NewEvent
from bridge.store.deliveries import AttemptRow, DeliveryRow
from bridge.store.sqlite import SQLiteStore


def require(service: str, port: int) -> None:
    """Skip, naming the service, when nothing listens on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return
    except OSError:
        pytest.skip(f"{service} is not reachable on 127.0.0.1:{port}")


def make_events(n: int, source: str = "orders", type: str = "orders.created") -> list[Event]:
    """`n` events with unique ids (a test's events never meet another run's)."""
    run = uuid.uuid4().hex[:8]
    return [
        Event(
            event_id(source, f"{run}-{i}"),
            source,
            type,
            "push",
            {"n": i, "text": "héllo"},
            now_ms(),
            subject=f"order {run}-{i}",
        )
        for i in range(n)
    ]


def _run(db: Path, fn):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        store = SQLiteStore(db)
        store.open()
        try:
            return await fn(store)
        finally:
            store.close()

    return asyncio.run(go())


def record(db: Path, events: list[Event], target: str = "t1") -> None:
    """Store `events` with a delivery to `target`, as the engines would."""
    _run(db, lambda store: store.record_events([NewEvent(e, [target]) for e in events]))


def deliveries(db: Path, target: str = "t1") -> dict[str, DeliveryRow]:
    """The deliveries to `target`, by event id."""
    rows = _run(db, lambda store: store.list_deliveries(target=target, limit=None))
    return {r.event_id: r for r in rows}


def statuses(db: Path, target: str = "t1") -> dict[str, str]:
    """Each delivery's status, by event id."""
    return {i: r.status for i, r in deliveries(db, target).items()}


def attempts(db: Path, event_id: str, target: str = "t1") -> list[AttemptRow]:
    """The attempts of one delivery, oldest first."""
    result: list[AttemptRow] = _run(db, lambda store: store.list_attempts(event_id, target))
    return result
