"""Crash: the real daemon is killed with SIGKILL three times under load; nothing acknowledged
is lost.

While a sender pushes 2,000 signed Standard Webhooks and an upstream's items change under a
poll every 100 ms, the daemon is killed at seeded random moments and restarted on the same
port and database (and once reloaded with SIGHUP, which reschedules the poll). The sender
acts as a provider: a request that got no answer (refused, reset, cut off) is sent again,
with the same webhook-id and a fresh signature.

What "nothing is lost" means here:
- Pushed: every request answered 2xx is one stored event (the retries of a message are
  duplicates by webhook-id), and reached every matching target at least once; every copy a
  target got carries the event's id as its webhook-id.
- Polled: a poll samples the upstream, so a version that lived between two polls may never
  be seen, and a poll killed before its commit saw nothing. What a poll *committed* must
  never be lost, and that is checkable from the events themselves: per item, the events form
  an unbroken chain (created, then each update's `previous_attributes.v` is the version of
  the event before it, and a delete's object is the last version), only of versions the
  upstream really served; the last event of each item matches the upstream's final state
  (deleted for an item that is gone); and every polled event reached its targets.
- The database passes `PRAGMA integrity_check`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import DaemonProcess, free_port, serve_app, wait_until
from tests.reliability.parts import (
    INBOUND_SECRET,
    TARGET_SECRET,
    Targets,
    Upstream,
    integrity,
    query,
    signed_headers,
    statuses,
)

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

SEED = 9_2026
MESSAGES = 2_000
CONCURRENCY = 16
PAUSE_S = 0.06  # between a sender worker's messages: about 250 a second in all
KILLS = 3


class Sender:
    """Pushes signed webhooks like a provider: retries what got no answer, records the 2xx."""

    def __init__(self, url: str, total: int) -> None:
        self.url = url
        self.total = total
        self.accepted: dict[int, int] = {}  # message -> the 2xx status that accepted it
        self.refused: dict[int, tuple[int, str]] = {}  # message -> a 4xx, never expected
        self.retries = 0
        self.finished = threading.Event()
        self.stop = threading.Event()

    @staticmethod
    def body(n: int) -> bytes:
        kind = "order.paid" if n % 3 == 0 else "order.created"
        return json.dumps({"type": kind, "seq": n, "amount": n * 7}).encode()

    async def send_one(self, session: aiohttp.ClientSession, n: int) -> None:
        body = self.body(n)
        for _ in range(1000):  # bounded; the deadline below ends it sooner
            if self.stop.is_set():
                return
            headers = signed_headers(INBOUND_SECRET, f"msg_{n:05d}", body)
            try:
                async with session.post(self.url, data=body, headers=headers) as resp:
                    text = await resp.text()
                    if 200 <= resp.status < 300:
                        self.accepted[n] = resp.status
                        return
                    if resp.status < 500 and resp.status != 429:
                        self.refused[n] = (resp.status, text)
                        return
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass  # no answer: the daemon is down or died mid-request
            self.retries += 1
            await asyncio.sleep(0.05)

    async def run(self) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(self.total):
            queue.put_nowait(n)
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def worker() -> None:
                while not queue.empty():
                    await self.send_one(session, queue.get_nowait())
                    await asyncio.sleep(PAUSE_S)

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        self.finished.set()


class Mutator:
    """Changes the upstream's items every 60 ms (seeded): creates, updates and deletes."""

    def __init__(self, up: Upstream, rng: random.Random) -> None:
        self.up = up
        self.rng = rng
        self.served_versions: set[tuple[str, int]] = set()
        self.next_key = 0
        self.stop = threading.Event()
        for _ in range(10):
            self._create()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _create(self) -> None:
        self.next_key += 1
        key = f"k{self.next_key}"
        self.up.items[key] = {"id": key, "v": 1}

    def _step(self) -> None:
        with self.up.lock:
            op = self.rng.choice(["create", "update", "update", "delete"])
            keys = sorted(self.up.items)
            if op == "create" or len(keys) < 5:
                self._create()
            elif op == "update" or len(keys) > 30:
                key = self.rng.choice(keys)
                self.up.items[key] = {"id": key, "v": self.up.items[key]["v"] + 1}
            else:
                del self.up.items[self.rng.choice(keys)]

    def _run(self) -> None:
        while not self.stop.wait(0.06):
            self._step()


def reload(proc: DaemonProcess, old: str, new: str) -> None:
    """Change the daemon's config file and send SIGHUP; wait until it is applied."""
    text = proc.config_path.read_text()
    assert old in text
    proc.config_path.write_text(text.replace(old, new))
    proc.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reloaded" in proc.log(), timeout_s=10)


def config_text(upstream: str, targets: str) -> str:
    common = f"secret: {TARGET_SECRET}\n    timeout: 2s\n    retry: [200ms, 500ms, 1s, 1s, 1s]"
    return f"""
database: bridge.db
sources:
  orders:
    webhook:
      verify: standard-webhooks
      secrets: [{INBOUND_SECRET}]
  items:
    poll:
      url: {upstream}/items
      every: 100ms
      timeout: 2s
      items: data
      id: id
      version: v
      baseline: emit
targets:
  everything:
    url: {targets}/everything
    {common}
  paid:
    url: {targets}/paid
    events: [order.paid]
    {common}
  items:
    url: {targets}/items
    sources: [items]
    {common}
"""


def test_kill_9_three_times_under_load_loses_nothing(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    rng = random.Random(SEED)
    db = tmp_path / "bridge.db"
    port = free_port()
    up = Upstream()
    mutator = Mutator(up, random.Random(SEED + 1))
    receivers = Targets(delay_s=0.02)  # deliveries are in flight when the kills come
    procs: list[DaemonProcess] = []
    with serve_app(up.app()) as up_url, serve_app(receivers.app()) as target_url:
        config = config_text(up_url, target_url)
        procs.append(daemon(config, port=port))
        sender = Sender(f"http://127.0.0.1:{port}/hooks/orders", MESSAGES)
        sending = threading.Thread(target=lambda: asyncio.run(sender.run()), daemon=True)
        mutator.thread.start()
        sending.start()
        try:
            # Kill at seeded moments spread over the load, each a little after a threshold.
            for i, threshold in enumerate(
                sorted(rng.sample(range(MESSAGES // 10, MESSAGES * 8 // 10), KILLS))
            ):
                wait_until(lambda t=threshold: len(sender.accepted) >= t, timeout_s=60)
                time.sleep(rng.uniform(0.0, 0.25))
                procs[-1].kill()
                procs.append(daemon(config, port=port))
                if i == 0:
                    # A reload under load too: the poll is rescheduled mid-flight.
                    reload(procs[-1], "every: 100ms", "every: 150ms")
            assert sender.finished.wait(timeout=60), "the sender did not finish"
        finally:
            sender.stop.set()
            mutator.stop.set()
            mutator.thread.join(timeout=5)
            sending.join(timeout=10)
        final = {key: item["v"] for key, item in up.items.items()}

        # The daemon catches up: the final state polled, every delivery made.
        def caught_up() -> bool:
            snapshot = dict(query(db, "SELECT key, version FROM poll_items"))
            return snapshot == {k: f"v:{v}" for k, v in final.items()}

        wait_until(caught_up, timeout_s=20, interval_s=0.1)
        # The killed processes' leases expire (timeout + 5 s) before their rows go again.
        wait_until(lambda: set(statuses(db)) == {"delivered"}, timeout_s=40, interval_s=0.2)
        assert procs[-1].terminate() == 0
    assert integrity(db) == "ok"
    assert sender.refused == {}
    assert len(sender.accepted) == MESSAGES
    assert sender.retries > 0, "the kills cut requests off"

    check_pushed(db, receivers)
    served = {(key, v) for answer in up.served for key, v in answer.items()}
    check_polled(db, receivers, final, served)
    for proc in procs:
        assert "Traceback" not in proc.log(), proc.log()[-3000:]


def check_pushed(db: Path, receivers: Targets) -> None:
    """Each message is one event, delivered to every matching target, with one webhook-id."""
    events = dict(
        query(db, "SELECT json_extract(data, '$.seq'), id FROM events WHERE source = 'orders'")
    )
    assert len(events) == MESSAGES
    assert query(db, "SELECT count(*) FROM events WHERE source = 'orders'") == [(MESSAGES,)]
    ids_by_seq: dict[int, set[str]] = defaultdict(set)
    for name in ("everything", "paid"):
        seen: set[int] = set()
        for hit in receivers.on(name):
            assert hit.verified, "every delivery is signed"
            event = hit.event
            assert event["id"] == hit.webhook_id
            if event["source"] != "orders":
                continue
            seq = event["data"]["seq"]
            seen.add(seq)
            ids_by_seq[seq].add(hit.webhook_id)
        wanted = set(range(MESSAGES)) if name == "everything" else set(range(0, MESSAGES, 3))
        assert seen == wanted, f"{name}: {len(wanted - seen)} missing, {len(seen - wanted)} extra"
    # Duplicates (a message sent again, a delivery sent again) carry the same webhook-id.
    assert all(ids == {events[seq]} for seq, ids in ids_by_seq.items())


def check_polled(
    db: Path, receivers: Targets, final: dict[str, int], served: set[tuple[str, int]]
) -> None:
    """The polled events chain per item, use served versions, end in the final state."""
    rows = query(
        db, "SELECT id, subject, change, data FROM events WHERE source = 'items' ORDER BY seq"
    )
    chains: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for _, key, change, data in rows:
        chains[key].append((change, json.loads(data)))
    assert chains, "the poll made events"
    for key, chain in chains.items():
        assert chain[0][0] == "created", (key, chain)
        last_v = None
        for change, data in chain:
            v = data["object"]["v"]
            assert (key, v) in served, f"{key} v{v} was never served"
            if change == "updated":
                assert data["previous_attributes"] == {"v": last_v}, (key, chain)
            elif change == "deleted":
                assert v == last_v, (key, chain)
            else:
                assert last_v is None, (key, chain)
            last_v = v
        last_change, last = chain[-1]
        if key in final:
            assert last_change != "deleted" and last["object"]["v"] == final[key], (key, chain)
        else:
            assert last_change == "deleted", (key, chain)
    assert final.keys() <= chains.keys()
    ids = {row[0] for row in rows}
    for name in ("everything", "items"):
        got = {h.webhook_id for h in receivers.on(name) if h.event["source"] == "items"}
        assert got == ids, f"{name}: {len(ids - got)} polled events not delivered"
    assert not any(h.event["source"] == "items" for h in receivers.on("paid"))
    with contextlib.suppress(KeyError):
        del chains  # large; free before the next test
