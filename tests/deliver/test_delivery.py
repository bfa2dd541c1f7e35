"""Delivery to real receiving servers on 127.0.0.1, through a real SQLite outbox.

The Deliverer runs in the test's event loop; receivers run in threads (tests.helpers
serve_app); events go in through the store API as the inbound and polling engines do, and
the hub wakes the deliverer. Signatures are checked by the `standardwebhooks` library.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge import metrics
from bridge.cli import cli
from bridge.config import Config, load_config
from bridge.deliver.worker import Deliverer
from bridge.events import Event, event_id, now_ms
from bridge.routing import targets_for
from bridge.runtime import Runtime
from bridge.store.base import NewEvent
from bridge.store.deliveries import AttemptRecord, DeliveryRow
from bridge.store.sqlite import SQLiteStore
from tests.conftest import TEST_SECRET
from tests.helpers import eventually, serve_app

pytestmark = pytest.mark.anyio
_keys = itertools.count()


@dataclass
class Hit:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook receiver: records every request, answers from a plan, then `default`."""

    url: str = ""
    hits: list[Hit] = field(default_factory=list)
    plan: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    default: tuple[int, dict[str, str]] = (204, {})
    delay_s: float = 0.0
    in_flight: int = 0
    most_in_flight: int = 0

    def on(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            body = await request.body()
            self.hits.append(Hit(time.monotonic(), request.url.path, dict(request.headers), body))
            # One event loop serves these: the counters need no lock.
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            self.in_flight -= 1
            status, headers = self.plan.pop(0) if self.plan else self.default
            content = None if status in (204, 304) else f"answer {status}"
            return Response(content, status_code=status, headers=headers)

        return Starlette(routes=[Route("/{path:path}", hook, methods=["POST"])])


@contextlib.contextmanager
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    with serve_app(r.app()) as url:
        r.url = url
        yield r


@dataclass
class Bridge:
    path: Path
    config: Config
    store: SQLiteStore
    runtime: Runtime
    deliverer: Deliverer

    async def emit(
        self, source: str = "orders", type: str = "orders.created", *, notify: bool = True
    ) -> Event:
        """Store an event with its deliveries as an engine would, and tell the hub."""
        key = f"k{next(_keys)}-{time.monotonic_ns()}"
        event = Event(
            id=event_id(source, key),
            source=source,
            type=type,
            origin="push",
            data={"key": key, "text": "héllo"},
            recorded_ms=now_ms(),
            subject=key,
        )
        targets = targets_for(self.config.targets, source, type)
        assert await self.store.record_events([NewEvent(event, targets)]) == [True]
        if notify:
            self.runtime.hub.recorded([event])
        return event

    async def delivery(self, event: Event, target: str = "t1") -> DeliveryRow:
        (row,) = await self.store.list_deliveries(event_id=event.id, target=target)
        return row

    async def cli(self, *args: str) -> Result:
        # In a thread: the commands run their own event loop.
        runner = CliRunner()
        return await asyncio.to_thread(runner.invoke, cli, [*args, "-c", str(self.path)])


@contextlib.asynccontextmanager
async def bridge(tmp_path: Path, targets: str, sources: str = "") -> AsyncIterator[Bridge]:
    path = tmp_path / "config.yaml"
    path.write_text(f"database: bridge.db\n{sources}targets:\n{targets}")
    config = load_config(path)
    store = SQLiteStore(config.database_path)
    store.open()
    runtime = Runtime(config=config, store=store)
    deliverer = Deliverer(runtime)
    await deliverer.start()
    try:
        yield Bridge(path, config, store, runtime, deliverer)
    finally:
        await deliverer.stop(2.0)
        store.close()


def target(name: str, url: str, extra: str = "") -> str:
    lines = [f"  {name}:", f"    url: {url}", f"    secret: {TEST_SECRET}"]
    lines += [f"    {line}" for line in textwrap.dedent(extra).strip().splitlines()]
    return "\n".join(lines) + "\n"


async def test_structured_delivery_is_signed_and_recorded(tmp_path: Path) -> None:
    with receiver() as r:
        extra = "headers:\n  authorization: Bearer s3cr3t-token"
        async with bridge(tmp_path, target("t1", r.url + "/hook", extra)) as b:
            event = await b.emit()
            await eventually(lambda: r.hits)
            (hit,) = r.hits
            assert hit.headers["content-type"] == "application/cloudevents+json"
            assert hit.headers["authorization"] == "Bearer s3cr3t-token"
            assert hit.headers["user-agent"].startswith("bridge/")
            assert hit.headers["webhook-id"] == event.id
            assert Webhook(TEST_SECRET).verify(hit.body, hit.headers) == event.to_cloudevent()
            row = await eventually(
                lambda: _status(b, event, "delivered"),
            )
            assert row.attempts == 1 and row.last_code == 204 and row.delivered_ms
            (attempt,) = await b.store.list_attempts(event.id)
            assert attempt.status_code == 204 and attempt.error is None
            assert attempt.duration_ms is not None and attempt.duration_ms >= 0
            assert attempt.response is None  # a 204 has no body
            targets = json.loads((await b.cli("targets", "--json")).output)
            assert targets[0]["delivered"] == 1 and targets[0]["health"] == "ok"
            shown = (await b.cli("deliveries")).output
            assert event.id in shown and "delivered" in shown
            assert "s3cr3t-token" not in shown and TEST_SECRET not in shown


async def _status(b: Bridge, event: Event, status: str, name: str = "t1") -> DeliveryRow | None:
    row = await b.delivery(event, name)
    return row if row.status == status else None


async def test_binary_delivery_is_signed_with_ce_headers(tmp_path: Path) -> None:
    with receiver() as r:
        async with bridge(tmp_path, target("t1", r.url + "/hook", "format: binary")) as b:
            event = await b.emit()
            await eventually(lambda: r.hits)
            hit = r.hits[0]
            assert hit.headers["content-type"] == "application/json"
            assert hit.headers["ce-id"] == event.id == hit.headers["webhook-id"]
            assert hit.headers["ce-type"] == "orders.created"
            assert hit.headers["ce-source"] == "orders"
            assert hit.headers["ce-specversion"] == "1.0"
            assert Webhook(TEST_SECRET).verify(hit.body, hit.headers) == event.data


async def test_a_500_then_success_is_retried_with_the_same_webhook_id(tmp_path: Path) -> None:
    with receiver() as r:
        r.plan = [(500, {})]
        async with bridge(tmp_path, target("t1", r.url + "/hook", "retry: [20ms]")) as b:
            event = await b.emit()
            row = await eventually(lambda: _status(b, event, "delivered"))
            assert row.attempts == 2 and len(r.hits) == 2
            assert {h.headers["webhook-id"] for h in r.hits} == {event.id}
            for hit in r.hits:
                Webhook(TEST_SECRET).verify(hit.body, hit.headers)
            first, second = await b.store.list_attempts(event.id)
            assert first.status_code == 500 and first.error == "answered 500"
            assert first.response == "answer 500"
            assert second.status_code == 204
            assert first.at_ms < second.at_ms


async def test_retry_after_is_honoured(tmp_path: Path) -> None:
    with receiver() as r:
        r.plan = [(503, {"retry-after": "1"})]
        async with bridge(tmp_path, target("t1", r.url + "/hook", "retry: [10ms]")) as b:
            event = await b.emit()
            await eventually(lambda: _status(b, event, "delivered"))
            first, second = r.hits
            # The schedule alone would have retried after 10 ms.
            assert second.at - first.at >= 0.95


async def test_a_redirect_is_a_failure_and_never_followed(tmp_path: Path) -> None:
    with receiver() as r:
        r.default = (302, {"location": r.url + "/elsewhere"})
        async with bridge(tmp_path, target("t1", r.url + "/hook", "retry: [10ms]")) as b:
            event = await b.emit()
            row = await eventually(lambda: _status(b, event, "dead"))
            assert row.attempts == 2 and row.last_code == 302
            assert len(r.on("/hook")) == 2 and r.on("/elsewhere") == []


async def test_410_disables_the_target_until_enabled(tmp_path: Path) -> None:
    with receiver() as r:
        r.plan = [(410, {})]
        async with bridge(tmp_path, target("t1", r.url + "/hook")) as b:
            first = await b.emit()
            await eventually(lambda: _disabled(b))
            second = await b.emit()
            await asyncio.sleep(0.5)
            assert len(r.hits) == 1, "nothing is sent to a disabled target"
            assert (await b.delivery(second)).status == "pending"
            shown = json.loads((await b.cli("targets", "--json")).output)[0]
            assert shown["enabled"] is False and "410" in shown["health"]
            assert shown["backlog"] == 2
            result = await b.cli("target", "enable", "t1")
            assert result.exit_code == 0 and "target t1 enabled" in result.output
            for event in (first, second):
                await eventually(lambda e=event: _status(b, e, "delivered"))
            assert len(r.hits) == 3
            assert (await b.store.target_states())["t1"].disabled_ms is None


async def _disabled(b: Bridge) -> bool:
    state = (await b.store.target_states()).get("t1")
    return state is not None and state.disabled_ms is not None


async def test_dead_after_the_schedule_then_redelivered(tmp_path: Path) -> None:
    with receiver() as r:
        r.default = (500, {})
        extra = "retry: [10ms, 20ms]\ncircuit: {failures: 100}"
        async with bridge(tmp_path, target("t1", r.url + "/hook", extra)) as b:
            event = await b.emit()
            row = await eventually(lambda: _status(b, event, "dead"))
            assert row.attempts == 3 and len(r.hits) == 3
            dead = json.loads((await b.cli("deliveries", "--status", "dead", "--json")).output)
            assert [d["event_id"] for d in dead] == [event.id]
            await eventually(lambda: metrics.DEAD.labels("t1")._value.get() == 1)
            # Redelivered, it fails again: the schedule starts over, the count goes on.
            result = await b.cli("redeliver", "--dead")
            assert result.exit_code == 0 and "queued 1 dead delivery again" in result.output
            row = await eventually(lambda: len(r.hits) == 6 and _status(b, event, "dead"))
            assert row.attempts == 6 == len(await b.store.list_attempts(event.id))
            r.default = (204, {})
            result = await b.cli("redeliver", "--dead")
            assert result.exit_code == 0 and "queued 1 dead delivery again" in result.output
            row = await eventually(lambda: _status(b, event, "delivered"))
            assert {h.headers["webhook-id"] for h in r.hits} == {event.id}
            Webhook(TEST_SECRET).verify(r.hits[-1].body, r.hits[-1].headers)
            assert row.attempts == 7 == len(await b.store.list_attempts(event.id))


async def test_redelivery_of_a_delivered_event_keeps_its_webhook_id(tmp_path: Path) -> None:
    with receiver() as r, receiver() as r2:
        targets = target("t1", r.url + "/hook") + target("t2", r2.url + "/hook", "events: [nope]")
        async with bridge(tmp_path, targets) as b:
            event = await b.emit()
            first = await eventually(lambda: _status(b, event, "delivered"))
            result = await b.cli("redeliver", event.id)
            assert result.exit_code == 0 and "queued 1 delivery again" in result.output
            await eventually(lambda: len(r.hits) == 2)
            assert [h.headers["webhook-id"] for h in r.hits] == [event.id, event.id]
            # The first successful delivery stays the one latency is measured by.
            again = await eventually(lambda: _status(b, event, "delivered"))
            assert again.delivered_ms == first.delivered_ms
            # To a target the event never went to, on request.
            result = await b.cli("redeliver", event.id, "--target", "t2")
            assert result.exit_code == 0
            await eventually(lambda: r2.hits)
            assert r2.hits[0].headers["webhook-id"] == event.id
            unknown = await b.cli("redeliver", "evt_nope")
            assert unknown.exit_code == 2 and "evt_nope" in unknown.output
            usage = await b.cli("redeliver")
            assert usage.exit_code == 2


async def test_the_circuit_opens_then_closes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "bridge.deliver")
    with receiver() as r:
        r.default = (500, {})
        extra = """
            concurrency: 1
            retry: [10ms, 10ms, 10ms, 10ms, 10ms, 10ms]
            circuit: {failures: 2, cooldown: 300ms, max_cooldown: 5s}
        """
        async with bridge(tmp_path, target("t1", r.url + "/hook", extra)) as b:
            events = [await b.emit() for _ in range(4)]
            opened = await eventually(lambda: _circuit(b, "open"))
            assert len(r.hits) == 2 and opened.cooldown_s == pytest.approx(0.3)
            assert metrics.CIRCUIT.labels("t1")._value.get() == 2
            # One probe after the cool-down; it fails: open again, twice as long.
            reopened = await eventually(lambda: _circuit(b, "open", failures=3))
            assert len(r.hits) == 3 and reopened.cooldown_s == pytest.approx(0.6)
            assert r.hits[2].at - r.hits[1].at >= 0.29
            r.default = (204, {})
            for event in events:
                await eventually(lambda e=event: _status(b, e, "delivered"))
            state = (await b.store.target_states())["t1"]
            assert state.circuit == "closed" and state.failures == 0
            assert r.hits[3].at - r.hits[2].at >= 0.59
            # Every change of the circuit is one line at info, and nothing else says "circuit".
            changes = [
                (rec.levelname, re.sub(r"until \S+", "until T", rec.getMessage()))
                for rec in caplog.records
                if "circuit" in rec.getMessage()
            ]
            assert changes == [
                ("INFO", "target t1: circuit opened until T after 2 failures"),
                ("INFO", "target t1: circuit half-open: one probe"),
                ("INFO", "target t1: circuit opened until T after the probe failed"),
                ("INFO", "target t1: circuit half-open: one probe"),
                ("INFO", "target t1: circuit closed"),
            ]


async def _circuit(b: Bridge, circuit: str, failures: int | None = None) -> Any:
    state = (await b.store.target_states()).get("t1")
    if state and state.circuit == circuit and (failures is None or state.failures == failures):
        return state
    return None


async def test_event_type_and_source_filters(tmp_path: Path) -> None:
    sources = """sources:
  shop: {webhook: {verify: none, allow_unsigned: true}}
  crm: {webhook: {verify: none, allow_unsigned: true}}
"""
    with receiver() as r:
        targets = (
            target("orders", r.url + "/orders", "events: ['order.*']")
            + target("crm", r.url + "/crm", "sources: [crm]")
            + target("all", r.url + "/all")
        )
        async with bridge(tmp_path, targets, sources) as b:
            await b.emit("shop", "order.paid")
            await b.emit("shop", "customer.created")
            await b.emit("crm", "order.paid")
            await eventually(lambda: len(r.hits) == 6)
            types = {
                p: sorted(json.loads(h.body)["type"] for h in r.on(p))
                for p in ("/orders", "/crm", "/all")
            }
            assert types["/orders"] == ["order.paid", "order.paid"]
            assert types["/crm"] == ["order.paid"]
            assert len(types["/all"]) == 3
            assert {json.loads(h.body)["source"] for h in r.on("/crm")} == {"crm"}


async def test_events_written_by_another_process_are_found_by_the_scan(tmp_path: Path) -> None:
    with receiver() as r:
        async with bridge(tmp_path, target("t1", r.url + "/hook")) as b:
            other = SQLiteStore(b.config.database_path)
            other.open()
            try:
                event = Event(event_id("x", "1"), "x", "x.y", "push", {"a": 1}, now_ms())
                await other.record_events([NewEvent(event, ["t1"])])
            finally:
                other.close()
            await eventually(lambda: r.hits)
            assert r.hits[0].headers["webhook-id"] == event.id


async def test_reload_adds_changes_and_removes_targets(tmp_path: Path) -> None:
    with receiver() as r:
        async with bridge(tmp_path, target("t1", r.url + "/one")) as b:
            await b.emit()
            await eventually(lambda: r.on("/one"))
            new_path = tmp_path / "new.yaml"
            new_path.write_text(
                "database: bridge.db\ntargets:\n"
                + target("t1", r.url + "/one-moved", "format: binary")
                + target("t2", r.url + "/two")
            )
            b.config = load_config(new_path)
            await b.deliverer.reload(b.config)
            await b.emit()
            await eventually(lambda: r.on("/one-moved") and r.on("/two"))
            assert r.on("/one-moved")[0].headers.get("ce-type") == "orders.created"
            # t2 removed: its new deliveries wait in the outbox, nothing is lost.
            b.config = load_config(b.path)
            await b.deliverer.reload(b.config)
            kept = Event(event_id("orders", "kept"), "orders", "o", "push", {}, now_ms())
            await b.store.record_events([NewEvent(kept, ["t1", "t2"])])
            b.runtime.hub.recorded([kept])
            await eventually(lambda: _status(b, kept, "delivered"))
            await asyncio.sleep(0.3)
            assert (await b.delivery(kept, "t2")).status == "pending"
            assert len(r.on("/two")) == 1


async def test_claims_are_leases_that_expire(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "lease.db")
    store.open()
    try:
        event = Event(event_id("s", "1"), "s", "s.x", "push", {"a": [1, "é"]}, now_ms())
        await store.record_events([NewEvent(event, ["t1", "t2"])])
        t = now_ms() + 10
        first = await store.claim_due({"t1": 10}, t, t + 1_000)
        (claim,) = first.claims
        assert claim.event == event and claim.attempts == 0 and claim.target == "t1"
        assert (await store.claim_due({"t1": 10}, t + 999, t + 2_000)).claims == []
        # The holder died: once its lease expires the delivery is claimable again.
        (again,) = (await store.claim_due({"t1": 10}, t + 1_000, t + 3_000)).claims
        assert again.delivery_id == claim.delivery_id
        record = AttemptRecord(
            claim.delivery_id,
            event.id,
            "t1",
            t,
            5,
            500,
            "oops",
            "answered 500",
            "failed",
            t + 5_000,
        )
        await store.record_attempts([record])
        later = await store.claim_due({"t1": 10}, t + 1_001, t + 4_000)
        assert later.claims == [] and later.next_due_ms == t + 5_000
        (row,) = await store.list_deliveries(event_id=event.id, target="t1")
        assert (row.status, row.attempts, row.lease_ms, row.last_code) == ("failed", 1, None, 500)
        # Released leases (a graceful stop) are claimable at once.
        (other,) = (await store.claim_due({"t2": 1}, t, t + 60_000)).claims
        await store.release([other.delivery_id])
        assert len((await store.claim_due({"t2": 1}, t, t + 60_000)).claims) == 1
        assert await store.redeliver(["evt_unknown"], None, t) == {"evt_unknown": 0}
        assert await store.redeliver(["evt_unknown"], "t1", t) == {"evt_unknown": 0}
    finally:
        store.close()


async def test_concurrency_and_rate_limit_each_target(tmp_path: Path) -> None:
    with receiver() as slow, receiver() as paced:
        slow.delay_s = 0.1
        targets = target("slow", slow.url + "/s", "concurrency: 2") + target(
            "paced", paced.url + "/p", "rate: 20"
        )
        async with bridge(tmp_path, targets) as b:
            events = [await b.emit() for _ in range(8)]
            for event in events:
                await eventually(lambda e=event: _status(b, e, "delivered", "slow"))
                await eventually(lambda e=event: _status(b, e, "delivered", "paced"))
            assert slow.most_in_flight == 2, "at most `concurrency` requests in flight"
            # 20 per second: the last 7 of 8 requests span 6 intervals of 50 ms. The span, not
            # each gap, is asserted, and not from the first request, which opens the connection
            # and may arrive late on a loaded machine: arrival times jitter by a few ms.
            span_s = paced.hits[-1].at - paced.hits[1].at
            assert len(paced.hits) == 8 and span_s >= 0.25, span_s
