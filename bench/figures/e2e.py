"""end to end: inbound webhook -> delivered to the target, at 200 events/s, p50 and p99.

Signed webhooks go to the daemon at a fixed rate; each carries a `seq` that comes back in
the delivered CloudEvent, and the receiver notes when each arrived. Latency is arrival minus
the moment the webhook was due to be sent (one monotonic clock for the whole machine), so it
holds the inbound request too: the moment of acceptance inside the daemon cannot be seen
from outside, and the delivery often lands before the sender has read its 2xx. The baseline
is one bare hop: the same sender at the same rate straight to the receiver, measured the
same way.

`e2e-disk` is the same figure with a disk-writing neighbour (`bench/neighbour.py`: 16 KiB
written and fsynced over and over) running throughout, bare hop included.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from bench.context import Context, require_engine
from bench.figures.common import (
    HOOK_PATH,
    check_accepts,
    failures_note,
    target_yaml,
    webhook_source_yaml,
)
from bench.figures.delivery import http_get_reset, wait_for_all
from bench.load import open_loop, signed_requests
from bench.procs import child_env, get_json, start_app, start_daemon
from bench.stats import Goal, Row, latency_summary_ms, pair_latencies_s

RATE = 200.0


@contextlib.contextmanager
def disk_neighbour(work: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run `bench/neighbour.py` (fsync'd writes) in `work` until the block ends."""
    argv = [sys.executable, "-m", "bench.neighbour", str(work / "neighbour.bin")]
    proc = subprocess.Popen(argv, env=child_env(), cwd=work)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def run(ctx: Context) -> list[Row]:
    """One bare hop at 200/s, then the daemon's inbound -> store -> delivery at 200/s."""
    return measure(ctx, "e2e", "end to end", p99_goal_ms=25)


def run_with_neighbour(ctx: Context) -> list[Row]:
    """The same, with a process making fsync'd writes to the same disk throughout."""
    work = ctx.workdir("e2e-disk")
    with disk_neighbour(work):
        return measure(ctx, "e2e-disk", "end to end, disk neighbour", p99_goal_ms=50)


def measure(ctx: Context, name: str, title: str, *, p99_goal_ms: float) -> list[Row]:
    """The figure's rows, as `title`, with its scratch files under `name`."""
    require_engine("receive", "the inbound receiver")
    require_engine("deliver", "the delivery workers")
    duration_s = ctx.settings.e2e_s
    work = ctx.workdir(name)
    requests = signed_requests(int(RATE * duration_s))
    with start_app(work, "sink", "--record") as sink:
        base = asyncio.run(open_loop(sink.url + "/direct", requests, rate=RATE,
                                     duration_s=duration_s))  # fmt: skip
        direct = get_json(sink.url + "/_stats?arrivals=1")["arrivals"]
        http_get_reset(sink)
        config = "sources:\n" + webhook_source_yaml() + target_yaml(sink.url + "/deliver")
        with start_daemon(work, config) as bridge:
            accepted = check_accepts(bridge, signed_requests(5), "no webhook route")
            wait_for_all(sink, accepted, 30, bridge)
            http_get_reset(sink)
            sent = asyncio.run(open_loop(bridge.url + HOOK_PATH, requests, rate=RATE,
                                         duration_s=duration_s))  # fmt: skip
            wait_for_all(sink, sent.ok, 30, bridge)
            arrivals = get_json(sink.url + "/_stats?arrivals=1")["arrivals"]
            bridge.check_alive()
    latencies, missing = pair_latencies_s(sent.due_ns, [(a[0], a[1]) for a in arrivals])
    e2e = latency_summary_ms(latencies)
    one_hop = latency_summary_ms(pair_latencies_s(base.due_ns, [(a[0], a[1]) for a in direct])[0])
    notes = [failures_note(sent, "inbound"), failures_note(base, "bare hop")]
    if missing > sent.failed + sent.dropped:
        notes.append(f"{missing - sent.failed - sent.dropped} accepted events never arrived")
    note = "; ".join(n for n in notes if n)
    bare = "one bare hop at 200/s"
    return [
        Row(title, "p50 sent -> delivered at 200/s", "ms", e2e.get("p50_ms"),
            one_hop.get("p50_ms"), bare, Goal("value", "<", 5, "ms"), note=note,
            extra={"bridge": e2e, "bare": one_hop}),
        Row(title, "p99 sent -> delivered at 200/s", "ms", e2e.get("p99_ms"),
            one_hop.get("p99_ms"), bare, Goal("value", "<", p99_goal_ms, "ms")),
    ]  # fmt: skip
