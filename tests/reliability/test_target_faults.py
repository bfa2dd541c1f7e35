"""Targets that fail in every way a receiver can, then recover: the real daemon delivers
everything deliverable, dead only what exhausted its schedule, and follows no redirect."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.config import load_config
from bridge.events import Event, event_id, now_ms
from bridge.routing import targets_for
from bridge.store.base import NewEvent
from bridge.store.sqlite import SQLiteStore
from tests.helpers import DaemonProcess, free_port, run_cli, serve_app, wait_until
from tests.reliability.parts import TARGET_SECRET, Targets, query

pytestmark = pytest.mark.reliability

EVENTS = 5
FAULTS = {
    "t500": "500",
    "hang": "hang",
    "trickle": "trickle",
    "r429": "429",
    "r302": "302",
    "g410": "410",
    "doomed": "500",
}
# Long enough to outlast the fault phase: the deliveries must not die meanwhile.
RETRY = "[200ms, 400ms, 800ms, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s]"


def target(name: str, url: str, retry: str = RETRY) -> str:
    return f"""
  {name}:
    url: {url}
    secret: {TARGET_SECRET}
    timeout: 1s
    retry: {retry}
    circuit: {{failures: 3, cooldown: 300ms, max_cooldown: 1s}}"""


def store_events(db: Path, config_path: Path, count: int) -> list[Event]:
    """Store events with their deliveries as an engine of the daemon would (another writer)."""
    config = load_config(config_path)
    events = [
        Event(event_id("orders", f"o{i}"), "orders", "orders.created", "push", {"n": i}, now_ms())
        for i in range(count)
    ]

    async def go() -> None:
        store = SQLiteStore(db)
        store.open()
        try:
            batch = [NewEvent(e, targets_for(config.targets, e.source, e.type)) for e in events]
            await store.record_events(batch)
        finally:
            store.close()

    asyncio.run(go())
    return events


def attempts(db: Path, target: str) -> list[tuple[int | None, str | None]]:
    return query(
        db, "SELECT status_code, error FROM attempts WHERE target = ? ORDER BY id", (target,)
    )


def by_status(db: Path) -> dict[tuple[str, str], int]:
    rows = query(db, "SELECT target, status, count(*) FROM deliveries GROUP BY target, status")
    return {(t, s): n for t, s, n in rows}


def test_every_target_fault_then_recovery(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    db = tmp_path / "bridge.db"
    down_port = free_port()
    receivers = Targets(modes=dict(FAULTS), hang_s=2.5, trickle_s=1.5)
    with serve_app(receivers.app()) as url:
        config = (
            "database: bridge.db\ntargets:"
            + "".join(
                target(name, f"{url}/{name}", "[100ms, 100ms]" if name == "doomed" else RETRY)
                for name in FAULTS
            )
            + target("down", f"http://127.0.0.1:{down_port}/down")
        )
        proc = daemon(config)
        events = store_events(db, proc.config_path, EVENTS)
        ids = {e.id for e in events}

        # The fault phase: every target fails its first attempts, each in its own way.
        def failed_twice() -> bool:
            return all(len(attempts(db, name)) >= 2 for name in (*FAULTS, "down") if name != "g410")

        wait_until(failed_twice, timeout_s=20, interval_s=0.1)
        wait_until(lambda: by_status(db).get(("doomed", "dead")) == EVENTS, timeout_s=15)
        assert all(error and "cannot connect" in error for _, error in attempts(db, "down"))
        assert all(error and "timed out" in error for _, error in attempts(db, "hang"))
        assert all(error and "timed out" in error for _, error in attempts(db, "trickle"))
        assert {code for code, _ in attempts(db, "t500")} == {500}
        assert {code for code, _ in attempts(db, "r302")} == {302}
        # 410 disables the target at once: nothing more is sent to it until it is enabled.
        wait_until(lambda: query(db, "SELECT disabled_ms FROM targets WHERE name='g410'"))
        sent_410 = len(receivers.on("g410"))
        assert 1 <= sent_410 <= EVENTS
        # Retry-After: 2 holds each delivery back at least 2 s, though its schedule says 200ms.
        wait_until(lambda: len(receivers.on("r429")) > EVENTS, timeout_s=15)
        for event in events:
            times = [h.at for h in receivers.on("r429") if h.webhook_id == event.id]
            assert all(b - a >= 1.9 for a, b in itertools.pairwise(times)), times

        # Recovery: the receivers answer again, the down one comes up, 410 is enabled.
        receivers.modes = {"doomed": "500"}
        assert len(receivers.on("g410")) == sent_410
        with serve_app(receivers.app(), port=down_port):
            result = run_cli("target", "enable", "g410", "-c", str(proc.config_path))
            assert result.returncode == 0, result.stderr
            deliverable = [*(n for n in FAULTS if n != "doomed"), "down"]

            def all_delivered() -> bool:
                counts = by_status(db)
                return all(counts.get((n, "delivered")) == EVENTS for n in deliverable)

            wait_until(all_delivered, timeout_s=30, interval_s=0.1)
            assert proc.terminate() == 0

    counts = by_status(db)
    # Dead is exactly what exhausted its schedule: the doomed target's, nothing else.
    assert {key: n for key, n in counts.items() if key[1] != "delivered"} == {
        ("doomed", "dead"): EVENTS
    }
    for name in deliverable:
        assert receivers.ids(name) == ids, name
    assert receivers.on("followed") == [], "a redirect was followed"
    assert all(hit.verified for hit in receivers.hits), "every request is signed"
    assert "Traceback" not in proc.log()
