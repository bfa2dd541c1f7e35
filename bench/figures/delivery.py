"""delivery: N events in the outbox, delivered to a loopback receiver; the rate it sees.

The events go in through the store API (`record_events`, one pending delivery each for the
target `sink`) from another process while the daemon runs with the target disabled (disabled
in the database before the daemon starts: a disable made while it runs is taken within a
second, and the deliveries of that second, then the pause until the enable is taken, would
count in the span); then the target is enabled (`enable_target`, which the daemon takes
within a second) and the receiver notes when each new delivery arrives. The rate is the
receiver's, from its first delivery to its last, on both sides: the outbox is full before the
first, as the baseline's requests are prepared before it starts. The baseline is a bare
aiohttp client loop posting the same bodies, signed the same way, with as many in flight as
the target's default concurrency, to the same receiver.

A second row fills the outbox while the target takes deliveries (the figure's method until
December 2026): the other process's commits hold SQLite's write lock, and the daemon's claims
and outcomes wait for each; the time runs from the fill's start until the receiver has them all.

CPU per event: the daemon's (user + system, /proc) from just before the enable until the
receiver has the last, over the events; the bare loop's, this process's CPU time while it
posts (its requests prepared beforehand), over the same events.
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


def make_events(count: int, subjects: int = 0, first: int = 0) -> list:  # list[Event]
    """`count` events of a source `bench`, each with its `seq` (from `first`) in the data;
    with `subjects`, over that many subjects taken in turn."""
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
        for seq in range(first, first + count)
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


async def pause(store: Any) -> None:
    """Disable the target `sink` in the database of `store` (from `outbox`), made here if
    new: a daemon started on it afterwards delivers nothing until `enable`."""
    from bridge.events import now_ms

    store.open()
    try:
        await store.disable_target("sink", "the benchmark fills its outbox", now_ms())
    finally:
        store.close()


async def record_all(store: Any, events: list) -> None:
    """Put the events in the outbox of `store` (from `outbox`), in batches."""
    from bridge.store.base import NewEvent

    store.open()
    try:
        for i in range(0, len(events), BATCH):
            await store.record_events([NewEvent(e, ["sink"]) for e in events[i : i + BATCH]])
    finally:
        store.close()


async def enable(store: Any) -> None:
    """Enable the target `sink` again (after `pause`)."""
    store.open()
    try:
        await store.enable_target("sink")
    finally:
        store.close()


def arrival_span_s(sink: Proc) -> float:
    """The seconds from the receiver's first new delivery to its last (since its reset)."""
    stats = get_json(sink.url + "/_stats")
    if stats["first_ns"] is None or stats["last_ns"] is None:
        raise BenchError("the receiver has no deliveries")
    return max((stats["last_ns"] - stats["first_ns"]) / 1e9, 1e-6)


def per_s(count: int, span_s: float) -> float:
    """Deliveries a second over `span_s`, which runs from the first arrival to the last."""
    return (count - 1) / span_s if count > 1 else 0.0


def run(ctx: Context) -> list[Row]:
    """Bare loop first, then the daemon from a full outbox, then while it is filled."""
    require_engine("deliver", "the delivery workers")
    count = ctx.settings.delivery_events
    work = ctx.workdir("delivery")
    events = make_events(count)
    requests = as_requests(events)
    with start_app(work, "sink", "--record") as sink:
        cpu_started = time.process_time()
        bare = asyncio.run(
            closed_loop(sink.url + "/deliver", requests, concurrency=CONCURRENCY, duration_s=120)
        )
        bare_cpu_s = time.process_time() - cpu_started
        wait_for_all(sink, count, 30)
        bare_rate = per_s(count, arrival_span_s(sink))
        http_get_reset(sink)
        store = outbox(str(work / "bridge.db"))
        asyncio.run(pause(store))
        with start_daemon(work, target_yaml(sink.url + "/deliver")) as bridge:
            started = time.perf_counter()
            asyncio.run(record_all(store, events))
            recorded_s = time.perf_counter() - started
            cpu_started = cpu_seconds(bridge.pid)
            asyncio.run(enable(store))
            wait_for_all(sink, count, 60 + count / 50, bridge)
            bridge_cpu_s = cpu_seconds(bridge.pid) - cpu_started
            bridge_rate = per_s(count, arrival_span_s(sink))
            received = get_json(sink.url + "/_stats")["requests"]
            # The same again, the outbox filled by another process meanwhile.
            http_get_reset(sink)
            started = time.perf_counter()
            asyncio.run(record_all(store, make_events(count, first=count)))
            filled_s = time.perf_counter() - started
            meanwhile_s = wait_for_all(sink, count, 60 + count / 50, bridge) - started
            bridge.check_alive()
    note = failures_note(bare, "bare loop")
    if received > count:
        note = (note + "; " if note else "") + f"{received - count} repeated deliveries"
    baseline = f"bare aiohttp loop, {CONCURRENCY} in flight"
    return [
        Row("delivery", f"events/s ({count:,} events)", "ev/s", bridge_rate, bare_rate, baseline,
            Goal("ratio", ">=", 0.6), note=note, extra={"outbox_fill_s": recorded_s}),
        Row("delivery", "CPU per delivered event", "µs", bridge_cpu_s / count * 1e6,
            bare_cpu_s / count * 1e6, baseline, Goal("value", "<=", 250, "µs")),
        Row("delivery", "events/s, the outbox filled meanwhile by another process", "ev/s",
            count / meanwhile_s, bare_rate, baseline,
            note=f"the fill took {filled_s:.2f} s of the {meanwhile_s:.2f} s",
            extra={"bridge_s": meanwhile_s, "outbox_fill_s": filled_s}),
    ]  # fmt: skip


def http_get_reset(sink: Proc) -> None:
    """Forget what the sink has seen."""
    import urllib.request

    req = urllib.request.Request(sink.url + "/_reset", method="POST")
    with urllib.request.urlopen(req, timeout=5):
        pass
