"""`ordering: subject` on the real daemon: arrival order per subject under retries, 5xx
bursts and a kill -9, other subjects in parallel."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.events import Event, event_id, now_ms
from bridge.store.base import NewEvent
from bridge.store.sqlite import SQLiteStore
from tests.conftest import TEST_SECRET
from tests.helpers import DaemonProcess, serve_app, wait_until

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

SUBJECTS = 10
PER_SUBJECT = 12
UNORDERED = 10


class OrderChecker:
    """A receiver that fails on purpose and notes every request that came out of order.

    Out of order: a request for the k-th event of a subject while an earlier event of that
    subject has not been answered 2xx yet. It answers 503 to the first try of every fifth
    event, 500 to everything during a burst (requests 40 to 70), 204 otherwise.
    """

    def __init__(self) -> None:
        self.requests = 0
        self.accepted: dict[str, list[int]] = {}  # subject -> seqs answered 2xx, in order
        self.tried: set[int] = set()
        self.violations: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            event = json.loads(await request.body())
            subject, seq = event.get("subject"), event["data"]["seq"]
            with self._lock:
                self.requests += 1
                number = self.requests
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
                if subject is not None:
                    done = set(self.accepted.get(subject, []))
                    earlier = [s for s in event["data"]["before"] if s not in done]
                    if earlier:
                        self.violations.append(f"{subject}: {seq} came before {earlier}")
            await asyncio.sleep(0.02)
            with self._lock:
                self.in_flight -= 1
                first_try = seq not in self.tried
                self.tried.add(seq)
                if 40 <= number <= 70:
                    return Response(status_code=500)
                if seq % 5 == 0 and first_try:
                    return Response(status_code=503)
                if subject is not None and seq not in self.accepted.get(subject, []):
                    self.accepted.setdefault(subject, []).append(seq)
            return Response(status_code=204)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])

    def count(self) -> int:
        with self._lock:
            return sum(len(v) for v in self.accepted.values())


def make_events() -> list[Event]:
    """Subjects taken in turn; each event lists the earlier seqs of its subject."""
    events = []
    seen: dict[str, list[int]] = {}
    for seq in range(SUBJECTS * PER_SUBJECT + UNORDERED):
        subject = f"cus_{seq % SUBJECTS}" if seq < SUBJECTS * PER_SUBJECT else None
        before = list(seen.get(subject, [])) if subject else []
        if subject:
            seen.setdefault(subject, []).append(seq)
        events.append(Event(event_id("orders", str(seq)), "orders", "order.updated", "push",
                            {"seq": seq, "before": before}, now_ms(), subject=subject))  # fmt: skip
    return events


def _with_store(db: Path, fn: Callable) -> object:
    async def go() -> object:
        store = SQLiteStore(db)
        store.open()
        try:
            return await fn(store)
        finally:
            store.close()

    return asyncio.run(go())


def statuses(db: Path) -> list[str]:
    rows = _with_store(db, lambda s: s.list_deliveries(target="ordered", limit=None))
    return [r.status for r in rows]  # type: ignore[attr-defined]


def test_order_per_subject_holds_under_retries_bursts_and_kill_9(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    checker = OrderChecker()
    db = tmp_path / "bridge.db"
    events = make_events()
    with serve_app(checker.app()) as url:
        config = f"""
            database: bridge.db
            targets:
              ordered:
                url: {url}/hook
                secret: {TEST_SECRET}
                ordering: subject
                concurrency: 8
                timeout: 1s
                retry: [50ms, 100ms, 200ms, 300ms, 500ms, 1s, 1s, 1s, 1s, 1s]
                circuit: {{failures: 1000}}
        """
        first = daemon(config)
        _with_store(db, lambda s: s.record_events([NewEvent(e, ["ordered"]) for e in events]))
        # Kill in the middle: past the burst, with requests in flight.
        wait_until(lambda: checker.requests > 75 and checker.in_flight > 0, timeout_s=60,
                   interval_s=0.005)  # fmt: skip
        first.kill()
        assert set(statuses(db)) != {"delivered"}, "killed before the end"
        second = daemon(config)
        # Leases of the killed process expire after the timeout plus a margin.
        wait_until(lambda: set(statuses(db)) == {"delivered"}, timeout_s=90, interval_s=0.1)
        assert second.terminate() == 0
        assert "Traceback" not in first.log() + second.log()

    assert checker.violations == []
    for subject, seqs in checker.accepted.items():
        assert seqs == sorted(seqs), subject
        assert len(seqs) == PER_SUBJECT, subject
    assert checker.count() == SUBJECTS * PER_SUBJECT
    # Other subjects did not wait for one another.
    assert checker.most_in_flight > 1
