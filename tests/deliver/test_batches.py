"""Delivery in batches: claims of a batch queued in the process, outcomes written per flush.

- The real daemon killed with SIGKILL while a batch is claimed and partly sent: after a
  restart every stored event is delivered; the only copies are of deliveries leased at the
  kill (at least once: duplicates allowed, counted, never a loss).
- Without a crash, every attempt the receiver saw is recorded, once.
- The recorder writes the outcomes (and the leases given back) that wait together in one
  store write, and every one of them lands.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.deliver.claims import CLAIM_BATCH
from bridge.deliver.recorder import Recorder
from bridge.events import Event, event_id, now_ms
from bridge.store.base import NewEvent
from bridge.store.deliveries import AttemptRecord
from bridge.store.sqlite import SQLiteStore
from tests.conftest import TEST_SECRET
from tests.helpers import DaemonProcess, eventually, serve_app, wait_until


class Receiver:
    """Answers 204 after `delay_s`; keeps every request's headers and body."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.hits: list[tuple[dict[str, str], bytes]] = []
        self._lock = threading.Lock()

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            body = await request.body()
            await asyncio.sleep(self.delay_s)
            with self._lock:
                self.hits.append((dict(request.headers), body))
            return Response(status_code=204)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._lock:
            hits = list(self.hits)
        for headers, body in hits:
            Webhook(TEST_SECRET).verify(body, headers)
            assert json.loads(body)["id"] == headers["webhook-id"]
            out[headers["webhook-id"]] = out.get(headers["webhook-id"], 0) + 1
        return out


def make_events(count: int, tag: str) -> list[Event]:
    at = now_ms()
    return [Event(event_id(tag, str(i)), tag, "thing.happened", "push", {"n": i, "pad": "x" * 100},
                  at) for i in range(count)]  # fmt: skip


def record(db: Path, events: list[Event]) -> None:
    async def go() -> None:
        store = SQLiteStore(db)
        store.open()
        try:
            for i in range(0, len(events), 100):
                await store.record_events([NewEvent(e, ["t1"]) for e in events[i : i + 100]])
        finally:
            store.close()

    asyncio.run(go())


def rows(db: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def config(url: str, concurrency: int) -> str:
    return f"""
        database: bridge.db
        targets:
          t1:
            url: {url}/hook
            secret: {TEST_SECRET}
            timeout: 1s
            concurrency: {concurrency}
    """


@pytest.mark.slow
def test_kill_9_mid_batch_then_restart_delivers_every_stored_event(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    count = 600
    receiver = Receiver(delay_s=0.03)
    db = tmp_path / "bridge.db"
    events = make_events(count, "kill")
    with serve_app(receiver.app()) as url:
        first = daemon(config(url, 16))
        record(db, events)  # durable (FULL) commits: acknowledged, must all arrive
        # Kill once a few batches went through, with the outbox far from empty.
        wait_until(lambda: len(receiver.hits) >= 3 * CLAIM_BATCH, timeout_s=60)
        first.kill()
        killed_ms = now_ms()
        leased = {
            r[0]
            for r in rows(db, "SELECT event_id FROM deliveries WHERE status IN ('pending',"
                          " 'failed') AND lease_ms > ?", (killed_ms,))
        }  # fmt: skip
        delivered_before = rows(db, "SELECT count(*) FROM deliveries WHERE status = 'delivered'")
        # Mid-batch: more deliveries were claimed than could be in flight (16), and some done.
        assert len(leased) > 16, len(leased)
        assert 0 < delivered_before[0][0] < count

        second = daemon(config(url, 16))
        # The killed process's leases expire (timeout + margin: 6 s); then all is sent.
        wait_until(
            lambda: (
                rows(db, "SELECT count(*) FROM deliveries WHERE status != 'delivered'") == [(0,)]
            ),
            timeout_s=60,
        )
        assert second.terminate() == 0
    assert "Traceback" not in first.log() + second.log()
    got = receiver.counts()
    assert set(got) == {e.id for e in events}, "every stored event arrived"
    copies = {i: n - 1 for i, n in got.items() if n > 1}
    # Copies only of deliveries leased at the kill (sent, or about to be, unrecorded).
    assert set(copies) <= leased, set(copies) - leased
    print(f"kill -9 mid-batch: {len(leased)} leased at the kill, {sum(copies.values())} copies")


def test_every_attempt_of_a_batch_is_recorded_once(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    count = 300
    receiver = Receiver(delay_s=0.0)
    db = tmp_path / "bridge.db"
    events = make_events(count, "all")
    with serve_app(receiver.app()) as url:
        proc = daemon(config(url, 16))
        record(db, events)
        wait_until(
            lambda: (
                rows(db, "SELECT count(*) FROM deliveries WHERE status = 'delivered'") == [(count,)]
            ),
            timeout_s=60,
        )
        assert proc.terminate() == 0
    got = receiver.counts()
    assert set(got) == {e.id for e in events} and set(got.values()) == {1}
    # One attempt row per request the receiver saw, each delivery's count agreeing.
    attempts = rows(
        db, "SELECT event_id, count(*), max(status_code) FROM attempts GROUP BY event_id"
    )
    assert {(e, n, code) for e, n, code in attempts} == {(e.id, 1, 204) for e in events}
    assert rows(db, "SELECT DISTINCT attempts, lease_ms FROM deliveries") == [(1, None)]


def test_the_recorder_writes_a_flush_in_one_store_write(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "bridge.db")
    store.open()
    try:
        asyncio.run(_flush_in_one_write(store))
    finally:
        store.close()


async def _flush_in_one_write(store: SQLiteStore) -> None:
    events = make_events(CLAIM_BATCH + 8, "flush")
    await store.record_events([NewEvent(e, ["t1"]) for e in events])
    at = now_ms() + 10
    claims = (await store.claim_due({"t1": len(events)}, at, at + 60_000)).claims
    assert len(claims) == len(events)
    sent, kept = claims[:CLAIM_BATCH], claims[CLAIM_BATCH:]
    recorder = Recorder(store)
    commits = store.writer.commits

    def done(c: Any) -> AttemptRecord:
        return AttemptRecord(c.delivery_id, c.event.id, "t1", at, 3, 200, None, None,
                             "delivered", at + 3)  # fmt: skip

    waiting = [asyncio.create_task(recorder.record(done(c))) for c in sent]
    recorder.release([c.delivery_id for c in kept])
    await asyncio.gather(*waiting)
    await recorder.drain()
    # Every outcome and every release that waited together: one write, one commit.
    assert recorder.flushes == 1 and store.writer.commits == commits + 1
    listed = {d.event_id: d for d in await store.list_deliveries(limit=None)}
    assert {listed[c.event.id].status for c in sent} == {"delivered"}
    for c in sent:
        assert len(await store.list_attempts(c.event.id)) == 1
    assert {(listed[c.event.id].status, listed[c.event.id].lease_ms) for c in kept} == {
        ("pending", None)
    }
    # The released ones are claimable again at once.
    again = (await store.claim_due({"t1": 100}, at + 1, at + 60_000)).claims
    assert sorted(c.delivery_id for c in again) == sorted(c.delivery_id for c in kept)


def test_an_ordered_targets_outcome_brings_the_next_flush_forward(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "bridge.db")
    store.open()
    try:
        asyncio.run(_soon_flush(store))
    finally:
        store.close()


async def _soon_flush(store: SQLiteStore) -> None:
    from bridge.deliver.recorder import FLUSH_S, SOON_S

    events = make_events(3, "soon")
    await store.record_events([NewEvent(e, ["t1"]) for e in events])
    at = now_ms() + 10
    claims = (await store.claim_due({"t1": 3}, at, at + 60_000)).claims
    recorder = Recorder(store)
    written: list[BaseException | None] = []

    def outcome(c: Any) -> AttemptRecord:
        return AttemptRecord(c.delivery_id, c.event.id, "t1", at, 3, 200, None, None,
                             "delivered", at + 3)  # fmt: skip

    # The first outcome goes on the loop's next turn; the next one waits for the pause after
    # it, the long one, until an outcome that holds back its subject's next delivery comes.
    loop = asyncio.get_running_loop()

    def add(claim: Any, soon: bool = False) -> tuple[float, float]:
        before = loop.time()
        recorder.add(outcome(claim), written.append, soon=soon)
        return before, loop.time()

    def is_due(pause_s: float, added: tuple[float, float]) -> bool:
        """The flush is timed `pause_s` after the last one, or at once when that time had
        passed by the add (a loaded machine)."""
        due, at = recorder._flushed_at + pause_s, recorder._timer_at
        return at == pytest.approx(due) or (due <= added[1] and added[0] <= at <= added[1])

    recorder.add(outcome(claims[0]), written.append)
    await recorder.drain()
    assert is_due(FLUSH_S, add(claims[1]))
    assert is_due(SOON_S, add(claims[2], soon=True))
    await recorder.drain()
    assert written == [None, None, None] and recorder.flushes == 2
    listed = await store.list_deliveries(limit=None)
    assert {d.status for d in listed} == {"delivered"}


def test_a_request_built_with_its_batch_is_sent_only_in_its_second_and_config() -> None:
    """A batch's requests are built as it is claimed (`Deliverer._prepare`); one is sent as
    it is only within the second its timestamp and signature say and while the target keeps
    the config it was built with; else the send builds it again."""
    from bridge.config.models import TargetConfig
    from bridge.deliver.worker import Ready, Target

    config = TargetConfig.model_validate({"url": "http://127.0.0.1:9/hook", "secret": TEST_SECRET})
    target = Target("t", config)
    second = 1_700_000_000
    ready = Ready(second, config, object())
    assert ready.fits(target, second * 1000)
    assert ready.fits(target, second * 1000 + 999)
    assert not ready.fits(target, second * 1000 + 1000)  # the next second: a new timestamp
    assert not ready.fits(target, second * 1000 - 1)
    target.configure(
        TargetConfig.model_validate({"url": "http://127.0.0.1:9/hook", "secret": TEST_SECRET})
    )
    assert not ready.fits(target, second * 1000)  # reloaded (an equal config too): built again


@pytest.mark.anyio
async def test_a_send_cancelled_from_outside_does_not_stall_its_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A send takes its target's next queued delivery itself (one task a slot); a send that
    ends in a CancelledError not of the daemon's stop (a library's stray one) must still let
    the rest of the queue go, and its own delivery is sent again once its lease ends."""
    from bridge.deliver.kinds.webhook import Webhook as WebhookKind
    from tests.deliver.test_delivery import bridge, receiver, target

    real = WebhookKind.post
    posts: list[int] = []

    async def post(self: WebhookKind, target_: Any, request: Any) -> Any:
        posts.append(1)
        if len(posts) == 1:
            raise asyncio.CancelledError  # not from `stop`
        return await real(self, target_, request)

    monkeypatch.setattr(WebhookKind, "post", post)
    with receiver() as r:
        async with bridge(tmp_path, target("t1", r.url + "/hook", "concurrency: 1")) as b:
            # In one commit, so that the first claim takes a whole batch (4: four rounds of
            # the one slot) and the queue holds three when the first send is cancelled.
            events = [Event(event_id("orders", f"k{i}"), "orders", "orders.created", "push",
                            {"i": i}, now_ms()) for i in range(8)]  # fmt: skip
            await b.store.record_events([NewEvent(e, ["t1"]) for e in events])
            b.runtime.hub.recorded(events)

            async def seven_delivered() -> bool:
                statuses = sorted([(await b.delivery(e)).status for e in events])
                return statuses == ["delivered"] * 7 + ["pending"]

            # Seven sent and recorded by the sends after the cancelled one, none held back;
            # the cancelled one waits for its lease to end.
            await eventually(seven_delivered)
            target_ = b.deliverer.targets["t1"]
            assert len(r.hits) == 7 and target_.in_flight == 0 and not target_.queue
