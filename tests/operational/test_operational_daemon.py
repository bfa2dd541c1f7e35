"""Operational events on the real daemon: told once per change of state, to the targets that
ask for them, never to the target they are about, and no storm when the alert target is down."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.events import Event, event_id, now_ms
from bridge.store.base import NewEvent
from bridge.store.sqlite import SQLiteStore
from tests.conftest import TEST_SECRET
from tests.helpers import REPO, DaemonProcess, serve_app, wait_until
from tests.scripted_server import Reply, scripted_server

pytestmark = pytest.mark.slow


class Receiver:
    """A target on 127.0.0.1 answering `code`, keeping every CloudEvent it was sent."""

    def __init__(self, code: int = 204) -> None:
        self.code = code
        self.received: list[dict[str, Any]] = []  # every request's event, failed ones too
        self.lock = threading.Lock()

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            event = json.loads(await request.body())
            with self.lock:
                self.received.append(event)
                code = self.code
            return Response(status_code=code)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])

    def types(self) -> list[str]:
        """The types received, in order."""
        with self.lock:
            return [e["type"] for e in self.received]

    def of_type(self, type: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.received if e["type"] == type]


def record(db: Path, event: Event, targets: list[str]) -> None:
    """Store an event for `targets` beside the running daemon (as `bridge send` would)."""

    async def go() -> None:
        store = SQLiteStore(db)
        store.open()
        try:
            await store.record_events([NewEvent(event, targets)])
        finally:
            store.close()

    asyncio.run(go())


def operational(db: Path) -> list[tuple[str, str | None]]:
    """The (type, subject) of every stored event of source `bridge`, in order."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT type, subject FROM events WHERE source = 'bridge' ORDER BY seq"
        ).fetchall()
    return [(t, s) for t, s in rows]


def delivery_statuses(db: Path, target: str) -> list[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT status FROM deliveries WHERE target = ?", (target,))
        return [status for (status,) in rows.fetchall()]


def test_a_circuit_opened_and_closed_is_told_to_another_target_never_to_itself(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    down, alerts = Receiver(503), Receiver(204)
    db = tmp_path / "bridge.db"
    with serve_app(down.app()) as down_url, serve_app(alerts.app()) as alerts_url:
        proc = daemon(
            f"""
            database: bridge.db
            operational:
              delivery_failing_after: 2
            targets:
              down:
                url: {down_url}/hook
                secret: {TEST_SECRET}
                events: ["orders.*", "bridge.*"]   # would take its own alerts: it must not
                retry: [10ms, 10ms, 10ms, 10ms, 10ms, 10ms, 10ms, 10ms, 10ms, 10ms]
                circuit: {{failures: 3, cooldown: 300ms, max_cooldown: 600ms}}
              alerts:
                url: {alerts_url}/hook
                secret: {TEST_SECRET}
                events: ["bridge.*"]
            """
        )
        order = Event(event_id("orders", "1"), "orders", "orders.created", "push", {}, now_ms())
        record(db, order, ["down"])
        wait_until(lambda: alerts.of_type("bridge.target.circuit_opened"), timeout_s=20)
        # A failed probe opens it again: the same spell, not news.
        probes = len(down.received)
        wait_until(lambda: len(down.received) >= probes + 1, timeout_s=20)
        with down.lock:
            down.code = 204
        wait_until(lambda: alerts.of_type("bridge.target.circuit_closed"), timeout_s=20)
        wait_until(lambda: delivery_statuses(db, "down") == ["delivered"], timeout_s=20)
        # Every operational event is delivered to alerts: its outbox drains.
        told = [t for t, _ in operational(db)]
        wait_until(lambda: len(alerts.received) == len(told), timeout_s=20)
        assert proc.terminate() == 0
        assert "Traceback" not in proc.log()

    assert told == [
        "bridge.delivery.failing",
        "bridge.target.circuit_opened",
        "bridge.target.circuit_closed",
    ]
    assert alerts.types() == told
    (failing,) = alerts.of_type("bridge.delivery.failing")
    (opened,) = alerts.of_type("bridge.target.circuit_opened")
    (closed,) = alerts.of_type("bridge.target.circuit_closed")
    for event in (failing, opened, closed):
        assert event["source"] == "bridge" and event["subject"] == "targets/down"
        assert event["origin"] == "bridge" and event["data"]["target"] == "down"
        assert event["data"]["since"].endswith("Z")
        assert event["data"]["message"].startswith("target down: ")
    assert failing["data"]["failures"] == 2 and "answered 503" in failing["data"]["error"]
    assert "answered 503" in opened["data"]["error"] and opened["data"]["until"].endswith("Z")
    assert closed["data"]["since"] == opened["data"]["since"]
    # The target the events are about never got one, though its `events` ask for bridge.*.
    assert {e["source"] for e in down.received} == {"orders"}


def slack_transform() -> str:
    """The `transform` of examples/alerts.yaml's Slack target, as documented."""
    example = yaml.safe_load((REPO / "examples/alerts.yaml").read_text())
    return str(example["targets"]["slack-alerts"]["transform"])


def test_a_source_failing_then_recovering_is_told_once_each(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    alerts, slack = Receiver(204), Receiver(200)
    db = tmp_path / "bridge.db"
    items = Reply(200, [{"id": 1}])
    broken = Reply(500, {"error": "upstream on fire"})
    with (
        scripted_server() as (script, upstream),
        serve_app(alerts.app()) as alerts_url,
        serve_app(slack.app()) as slack_url,
    ):
        script.route("/items", broken)
        proc = daemon(
            f"""
            database: bridge.db
            operational:
              source_failing_after: 3
            sources:
              items:
                poll:
                  url: {upstream}/items
                  every: 100ms
                  id: id
            targets:
              alerts:
                url: {alerts_url}/hook
                secret: {TEST_SECRET}
                sources: [bridge]
                events: ["bridge.source.*"]
              slack:                                  # as examples/alerts.yaml has it
                url: {slack_url}/hook
                secret: {TEST_SECRET}
                events: ["bridge.source.*"]
                mode: binary
                transform: {json.dumps(slack_transform())}
            """
        )
        wait_until(lambda: alerts.of_type("bridge.source.failing"), timeout_s=20)
        polls = len(script.paths())
        wait_until(lambda: len(script.paths()) >= polls + 3, timeout_s=20)  # still failing
        script.route("/items", items)
        wait_until(lambda: alerts.of_type("bridge.source.recovered"), timeout_s=20)
        polls = len(script.paths())
        wait_until(lambda: len(script.paths()) >= polls + 3, timeout_s=20)  # still fine
        stored = operational(db)
        wait_until(lambda: len(slack.received) == 2, timeout_s=20)
        assert proc.terminate() == 0

    assert stored == [
        ("bridge.source.failing", "sources/items"),
        ("bridge.source.recovered", "sources/items"),
    ]
    assert alerts.types() == ["bridge.source.failing", "bridge.source.recovered"]
    (failing,) = alerts.of_type("bridge.source.failing")
    (recovered,) = alerts.of_type("bridge.source.recovered")
    assert failing["data"]["source"] == "items" and failing["data"]["failures"] == 3
    assert "500" in failing["data"]["error"]
    assert failing["data"]["message"].startswith("source items: 3 failed polls in a row")
    assert recovered["data"]["failures"] >= 6
    assert recovered["data"]["since"] == failing["data"]["since"]
    # Slack's incoming webhook gets the whole body it wants: {"text": ...}, nothing else.
    since = failing["data"]["since"]
    assert slack.received == [
        {"text": f":rotating_light: {failing['data']['message']} (since {since})"},
        {"text": f":white_check_mark: {recovered['data']['message']} (since {since})"},
    ]


def test_no_storm_when_the_alert_target_itself_is_down(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    alerts = Receiver(503)
    db = tmp_path / "bridge.db"
    with scripted_server() as (script, upstream), serve_app(alerts.app()) as alerts_url:
        script.route("/items", Reply(500, {"error": "down"}))
        proc = daemon(
            f"""
            database: bridge.db
            operational:
              source_failing_after: 2
              delivery_failing_after: 1
            sources:
              items:
                poll:
                  url: {upstream}/items
                  every: 100ms
                  id: id
            targets:
              alerts:
                url: {alerts_url}/hook
                secret: {TEST_SECRET}
                events: ["bridge.*"]
                retry: [10ms, 10ms, 10ms]
                circuit: {{failures: 2, cooldown: 100ms, max_cooldown: 200ms}}
            """
        )
        # Its alert fails, fails again, opens its circuit, and goes dead: none of it is news.
        wait_until(lambda: delivery_statuses(db, "alerts") == ["dead"], timeout_s=30)
        # The source recovers: the one event after that must be the next one stored.
        script.route("/items", Reply(200, [{"id": 1}]))
        wait_until(lambda: len(operational(db)) >= 2, timeout_s=20)
        polls = len(script.paths())
        wait_until(lambda: len(script.paths()) >= polls + 3, timeout_s=20)
        stored = operational(db)
        assert proc.terminate() == 0

    assert stored == [
        ("bridge.source.failing", "sources/items"),
        ("bridge.source.recovered", "sources/items"),
    ]
    # Four attempts of the first alert (the last one dead), then the second one's.
    assert alerts.types()[:4] == ["bridge.source.failing"] * 4
