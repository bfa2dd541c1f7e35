"""The real daemon delivering: killed with SIGKILL mid-delivery, restarted, nothing lost."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.events import Event, event_id, now_ms
from bridge.store.base import NewEvent
from bridge.store.sqlite import SQLiteStore
from tests.conftest import TEST_SECRET
from tests.helpers import DaemonProcess, run_cli, serve_app, wait_until

EVENTS = 24


class SlowReceiver:
    """Answers 204 after `delay_s`, recording every request's headers and body."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.hits: list[tuple[dict[str, str], bytes]] = []
        self.in_flight = 0
        self._lock = threading.Lock()

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            body = await request.body()
            with self._lock:
                self.in_flight += 1
            try:
                await asyncio.sleep(self.delay_s)
            finally:
                with self._lock:
                    self.in_flight -= 1
            self.hits.append((dict(request.headers), body))
            return Response(status_code=204)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


def record(db: Path, events: list[Event]) -> None:
    async def go() -> None:
        store = SQLiteStore(db)
        store.open()
        try:
            await store.record_events([NewEvent(e, ["t1"]) for e in events])
        finally:
            store.close()

    asyncio.run(go())


def statuses(db: Path) -> dict[str, str]:
    async def go() -> dict[str, str]:
        store = SQLiteStore(db)
        store.open()
        try:
            rows = await store.list_deliveries(target="t1", limit=None)
        finally:
            store.close()
        return {r.event_id: r.status for r in rows}

    return asyncio.run(go())


@pytest.mark.slow
def test_kill_9_mid_delivery_then_restart_delivers_everything(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    receiver = SlowReceiver(delay_s=0.4)
    db = tmp_path / "bridge.db"
    events = [
        Event(event_id("orders", str(i)), "orders", "orders.created", "push", {"n": i}, now_ms())
        for i in range(EVENTS)
    ]
    with serve_app(receiver.app()) as url:
        config = f"""
            database: bridge.db
            targets:
              t1:
                url: {url}/hook
                secret: {TEST_SECRET}
                timeout: 2s
                concurrency: 4
        """
        first = daemon(config)
        record(db, events)
        # Kill while requests are in flight and most deliveries are still waiting.
        wait_until(lambda: len(receiver.hits) >= 4 and receiver.in_flight > 0, timeout_s=20)
        first.kill()
        before = statuses(db)
        assert sorted(before) == sorted(e.id for e in events)
        assert list(before.values()).count("delivered") < EVENTS

        second = daemon(config)
        # Leases of the killed process expire after the timeout plus a margin.
        wait_until(lambda: set(statuses(db).values()) == {"delivered"}, timeout_s=40)
        assert second.terminate() == 0
        assert "Traceback" not in first.log() + second.log()

    by_id: dict[str, int] = {}
    for headers, body in receiver.hits:
        # Every request, duplicates included, is signed and says which event it carries.
        Webhook(TEST_SECRET).verify(body, headers)
        assert json.loads(body)["id"] == headers["webhook-id"]
        by_id[headers["webhook-id"]] = by_id.get(headers["webhook-id"], 0) + 1
    assert set(by_id) == {e.id for e in events}, "every event arrived"
    assert len(receiver.hits) >= EVENTS
    # The requests in flight at the kill were sent again after their leases expired, with
    # the same webhook-id, so the receiver can drop the copies.
    assert max(by_id.values()) >= 2


def test_a_restart_resumes_pending_deliveries(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    receiver = SlowReceiver(delay_s=0.0)
    db = tmp_path / "bridge.db"
    events = [
        Event(event_id("orders", f"p{i}"), "orders", "orders.created", "push", {"n": i}, now_ms())
        for i in range(5)
    ]
    record(db, events)  # before any daemon ran: the outbox is already there
    with serve_app(receiver.app()) as url:
        proc = daemon(
            f"""
            database: bridge.db
            targets:
              t1:
                url: {url}/hook
                secret: {TEST_SECRET}
            """
        )
        wait_until(lambda: len(receiver.hits) >= 5, timeout_s=20)
        wait_until(lambda: set(statuses(db).values()) == {"delivered"}, timeout_s=10)
        assert proc.terminate() == 0
    assert {h["webhook-id"] for h, _ in receiver.hits} == {e.id for e in events}


def test_sigterm_lets_deliveries_finish_or_releases_them(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    receiver = SlowReceiver(delay_s=7.0)  # longer than the 5 s grace period
    db = tmp_path / "bridge.db"
    event = Event(event_id("orders", "slow"), "orders", "orders.created", "push", {}, now_ms())
    with serve_app(receiver.app()) as url:
        proc = daemon(
            f"""
            database: bridge.db
            targets:
              t1:
                url: {url}/hook
                secret: {TEST_SECRET}
                timeout: 60s
            """
        )
        record(db, [event])
        wait_until(lambda: receiver.in_flight == 1, timeout_s=10)
        assert proc.terminate(timeout_s=20) == 0
    assert "will be sent again" in proc.log()

    async def lease() -> tuple[str, int | None]:
        store = SQLiteStore(db)
        store.open()
        try:
            (row,) = await store.list_deliveries(event_id=event.id)
        finally:
            store.close()
        return row.status, row.lease_ms

    # The cut delivery is not left leased for a minute: a restart sends it at once.
    assert asyncio.run(lease()) == ("pending", None)


class SwitchedReceiver:
    """Answers `code` (500 until switched), recording the webhook-id of every request."""

    def __init__(self) -> None:
        self.code = 500
        self.hits: list[str] = []

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            await request.body()
            self.hits.append(request.headers.get("webhook-id", ""))
            return Response(status_code=self.code)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


def target_state(db: Path) -> object:
    async def go() -> object:
        store = SQLiteStore(db)
        store.open()
        try:
            return (await store.target_states()).get("t1")
        finally:
            store.close()

    return asyncio.run(go())


def test_a_reset_sends_the_backlog_held_by_an_open_circuit_at_once(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    receiver = SwitchedReceiver()
    db = tmp_path / "bridge.db"
    with serve_app(receiver.app()) as url:
        proc = daemon(
            f"""
            database: bridge.db
            targets:
              t1:
                url: {url}/hook
                secret: {TEST_SECRET}
                retry: [10ms, 10ms, 10ms, 10ms]
                circuit: {{failures: 2, cooldown: 1h, max_cooldown: 2h}}
            """
        )
        c = ("-c", str(proc.config_path))
        event = Event(event_id("orders", "held"), "orders", "orders.created", "push", {}, now_ms())
        record(db, [event])
        wait_until(lambda: getattr(target_state(db), "circuit", None) == "open", timeout_s=20)
        wait_until(lambda: "target t1: circuit opened until" in proc.log(), timeout_s=5)
        assert "after 2 failures" in proc.log()
        receiver.code = 204

        # A redelivery says that the open circuit holds it, until when, and how to end it.
        again = run_cli("redeliver", event.id, *c)
        assert again.returncode == 0, again.stderr
        assert "queued 1 delivery again" in again.stdout
        assert "target t1: circuit open until " in again.stdout
        assert "'bridge target reset t1' (or the page's \"Retry now\") sends it now" in again.stdout
        assert "cli: " in again.stderr and "redelivered to every target" in again.stderr
        listed = json.loads(run_cli("redeliver", event.id, *c, "--json").stdout)
        (held,) = listed["circuit"]
        assert (held["target"], held["state"]) == ("t1", "open") and held["until"].endswith("Z")

        # The cool-down is an hour: only the reset, seen by the running daemon, sends it now.
        reset = run_cli("target", "reset", "t1", *c)
        assert reset.returncode == 0, reset.stderr
        assert reset.stdout.startswith("target t1: its circuit was open until ")
        assert "and is now closed" in reset.stdout and "reset target t1" in reset.stderr
        wait_until(lambda: statuses(db) == {event.id: "delivered"}, timeout_s=20)
        wait_until(lambda: "target t1: circuit closed by reset" in proc.log(), timeout_s=5)
        assert receiver.hits == [event.id] * 3

        # Two failed attempts, then one after the redeliveries: each listed, each counted.
        shown = json.loads(run_cli("event", "show", event.id, *c, "--json").stdout)
        (delivery,) = shown["deliveries"]
        assert delivery["attempts"] == 3 == len(delivery["history"])
        assert proc.terminate() == 0
