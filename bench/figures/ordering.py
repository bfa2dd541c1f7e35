"""ordering: delivery with `ordering: subject` over 1,000 subjects, against the same target
without ordering.

The same N events (subjects `s0` .. `s999`, in turn) go into the outbox through the store API
while a daemon runs; the clock stops when the loopback receiver has seen every event id. The
baseline is the same daemon and target without `ordering`, measured in the same run: the cost
of ordering is the claim query's look for an earlier waiting delivery of each subject.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bench.context import Context, require_engine
from bench.figures.common import target_yaml
from bench.figures.delivery import (
    http_get_reset,
    make_events,
    outbox,
    record_all,
    wait_for_all,
)
from bench.procs import Proc, get_json, start_app, start_daemon
from bench.stats import Goal, Row

SUBJECTS = 1000


def _timed(work: Path, sink: Proc, events: list, ordered: bool) -> float:
    """Seconds from filling the outbox until the sink has every event."""
    yaml = target_yaml(sink.url + "/deliver") + ("    ordering: subject\n" if ordered else "")
    http_get_reset(sink)
    (work / "bridge.db").unlink(missing_ok=True)
    with start_daemon(work, yaml) as bridge:
        store = outbox(str(work / "bridge.db"))
        started = time.perf_counter()
        asyncio.run(record_all(store, events))
        done = wait_for_all(sink, len(events), 60 + len(events) / 50, bridge)
        bridge.check_alive()
    return done - started


def run(ctx: Context) -> list[Row]:
    """Unordered first, then ordered, into the same receiver."""
    require_engine("deliver", "the delivery workers")
    count = ctx.settings.delivery_events
    events = make_events(count, SUBJECTS)
    with start_app(ctx.workdir("ordering"), "sink", "--record") as sink:
        plain_s = _timed(ctx.workdir("ordering-plain"), sink, events, ordered=False)
        ordered_s = _timed(ctx.workdir("ordering-subject"), sink, events, ordered=True)
        repeated = get_json(sink.url + "/_stats")["requests"] - count
    note = f"{repeated} repeated deliveries" if repeated > 0 else ""
    return [
        Row("ordering", f"events/s ({count:,} events, {SUBJECTS:,} subjects)", "ev/s",
            count / ordered_s, count / plain_s, "the same target without ordering",
            Goal("ratio", ">=", 0.8), note=note,
            extra={"ordered_s": ordered_s, "plain_s": plain_s}),
    ]  # fmt: skip
