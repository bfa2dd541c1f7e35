"""delivery: N events put in the outbox, the time until a loopback receiver has them all.

The events go in through the store API (`record_events`, one pending delivery each for the
target `sink`) while the daemon runs; the clock stops when the receiver has seen every event
id once. The baseline is a bare aiohttp client loop posting the same bodies, signed the same
way, with as many in flight as the target's default concurrency, to the same receiver.

CPU per event: the daemon's (user + system, /proc) from the first event put in the outbox
until the receiver has the last, over the events; the bare loop's, this process's CPU time
while it posts (its requests prepared beforehand), over the same events.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.context import Context, require_engine
from bench.figures.common import failures_note, target_yaml
from bench.load import TARGET_SECRET, Prepared, closed_loop, sign
from bench.procs import BenchError, Proc, cpu_seconds, get_json, start_app, start_daemon
from bench.stats import Goal, Row

CONCURRENCY = 16  # targets.NAME.concurrency's default
BATCH = 500


def make_events(count: int, subjects: int = 0) -> list:  # list[Event], imported lazily
    """`count` events of a source `bench`, each with its `seq` in the data; with `subjects`,
    over that many subjects taken in turn."""
    from bridge.events import Event, event_id, now_ms

    recorded = now_ms()
    return [
        Event(
            id=event_id("bench", str(seq)),
            source="bench",
            type="bench.ping",
            origin="push",
            data={"seq": seq, "note": "x" * 200},
            recorded_ms=recorded,
            subject=f"s{seq % subjects}" if subjects else None,
        )
        for seq in range(count)
    ]


def as_requests(events: list) -> list[Prepared]:
    """The events as signed structured-mode CloudEvents requests, as a deliverer sends them."""
    timestamp = int(time.time())
    out = []
    for seq, event in enumerate(events):
        body = event.to_json().encode()
        headers = {
            "content-type": "application/cloudevents+json",
            "webhook-id": event.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(TARGET_SECRET, event.id, timestamp, body),
        }
        out.append(Prepared(seq, body, headers))
    return out


def wait_for_all(sink: Proc, count: int, timeout_s: float, daemon: Proc | None = None) -> float:
    """Wait until the sink has `count` distinct deliveries; returns perf_counter then."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if get_json(sink.url + "/_stats")["unique"] >= count:
            return time.perf_counter()
        if daemon:
            daemon.check_alive()
        time.sleep(0.01)
    have = get_json(sink.url + "/_stats")["unique"]
    raise BenchError(f"the receiver had {have} of {count} deliveries after {timeout_s:g} s")


def outbox(database: str) -> Any:  # a Store, imported lazily
    """The store of `database`, not opened yet: made before a clock starts, so that the
    import of its backend (about 0.7 s, `bridge.config` and what it needs) is not timed
    (the first figure of a run to call this would pay it, the others not)."""
    from bridge.store import open_store

    return open_store(database)


async def record_all(store: Any, events: list) -> None:
    """Put the events in the outbox of `store` (from `outbox`), in batches."""
    from bridge.store.base import NewEvent

    store.open()
    try:
        for i in range(0, len(events), BATCH):
            await store.record_events([NewEvent(e, ["sink"]) for e in events[i : i + BATCH]])
    finally:
        store.close()


def run(ctx: Context) -> list[Row]:
    """Bare loop first, then the daemon, into the same receiver."""
    require_engine("deliver", "the delivery workers")
    count = ctx.settings.delivery_events
    work = ctx.workdir("delivery")
    events = make_events(count)
    requests = as_requests(events)
    with start_app(work, "sink", "--record") as sink:
        started, cpu_started = time.perf_counter(), time.process_time()
        bare = asyncio.run(
            closed_loop(sink.url + "/deliver", requests, concurrency=CONCURRENCY, duration_s=120)
        )
        bare_cpu_s = time.process_time() - cpu_started
        bare_s = wait_for_all(sink, count, 30) - started
        http_get_reset(sink)
        with start_daemon(work, target_yaml(sink.url + "/deliver")) as bridge:
            store = outbox(str(work / "bridge.db"))
            started, cpu_started = time.perf_counter(), cpu_seconds(bridge.pid)
            asyncio.run(record_all(store, events))
            recorded_s = time.perf_counter() - started
            bridge_s = wait_for_all(sink, count, 60 + count / 50, bridge) - started
            bridge_cpu_s = cpu_seconds(bridge.pid) - cpu_started
            bridge.check_alive()
        received = get_json(sink.url + "/_stats")["requests"]
    note = failures_note(bare, "bare loop")
    if received > count:
        note = (note + "; " if note else "") + f"{received - count} repeated deliveries"
    return [
        Row("delivery", f"events/s ({count:,} events)", "ev/s", count / bridge_s, count / bare_s,
            f"bare aiohttp loop, {CONCURRENCY} in flight", Goal("ratio", ">=", 0.6), note=note,
            extra={"bridge_s": bridge_s, "bare_s": bare_s, "outbox_fill_s": recorded_s}),
        Row("delivery", "CPU per delivered event", "µs", bridge_cpu_s / count * 1e6,
            bare_cpu_s / count * 1e6, f"bare aiohttp loop, {CONCURRENCY} in flight",
            Goal("value", "<=", 250, "µs")),
    ]  # fmt: skip


def http_get_reset(sink: Proc) -> None:
    """Forget what the sink has seen."""
    import urllib.request

    req = urllib.request.Request(sink.url + "/_reset", method="POST")
    with urllib.request.urlopen(req, timeout=5):
        pass
