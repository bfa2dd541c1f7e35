"""ingest: signed Standard Webhooks POSTs to the running daemon against a bare Starlette app.

Both sides get the same prepared requests from the same generators: first closed-loop (64
in flight, as fast as answered; wrk when installed, else aiohttp) for throughput and time to
the 2xx, then open-loop at 1,000 req/s (aiohttp) for the p99 the issue promises. The daemon
has one webhook source and no target.

The CPU of each side per accepted request (user + system seconds of its process over the
closed loop, from /proc, divided by the 2xx answers) is the steadiest figure on a shared
machine: a neighbour's load slows the requests a second, much less the CPU each one takes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from bench import wrk
from bench.context import Context, require_engine
from bench.figures.common import (
    HOOK_PATH,
    check_accepts,
    failures_note,
    webhook_source_yaml,
)
from bench.load import Prepared, closed_loop, open_loop, signed_requests
from bench.procs import cpu_seconds, start_app, start_daemon
from bench.stats import Goal, Row, latency_summary_ms

RATE = 1000.0
WARMUP = 300
# An upper bound on what the closed loop can send per second here; bounds the run's size.
MAX_RATE = 20_000


@dataclass
class Side:
    """What one side (bare app or daemon) did under both loads."""

    rate: float
    latency: dict[str, float]
    paced: dict[str, float]
    notes: list[str]
    cpu_us: float | None  # CPU microseconds per accepted request, closed loop


def per_request_us(cpu_s: float, accepted: int) -> float | None:
    """CPU microseconds per accepted request; None when nothing was accepted."""
    return cpu_s / accepted * 1e6 if accepted > 0 else None


def measure(url: str, requests: list[Prepared], ctx: Context, side: str, pid: int) -> Side:
    """Warm up, then closed-loop throughput (wrk if installed), then open-loop at 1,000/s."""
    s = ctx.settings
    closed_n = int(s.ingest_s * MAX_RATE)
    warm, closed, fixed = (
        requests[:WARMUP],
        requests[WARMUP : WARMUP + closed_n],
        requests[WARMUP + closed_n :],
    )
    asyncio.run(closed_loop(url, warm, concurrency=16, duration_s=10))
    notes = []
    cpu_before = cpu_seconds(pid)
    if wrk.available():
        got = wrk.closed_loop(
            url, closed, ctx.workdir(f"ingest/{side}"), connections=s.ingest_concurrency,
            duration_s=s.ingest_s,
        )  # fmt: skip
        cpu_us = per_request_us(cpu_seconds(pid) - cpu_before, got.ok)
        rate = got.rate
        latency = {"p50_ms": got.p50_ms, "p99_ms": got.p99_ms, "max_ms": got.max_ms}
        if got.errors:
            notes.append(f"{side} closed-loop: {got.errors} of {got.requests} failed (wrk)")
    else:
        flat = asyncio.run(
            closed_loop(url, closed, concurrency=s.ingest_concurrency, duration_s=s.ingest_s)
        )
        cpu_us = per_request_us(cpu_seconds(pid) - cpu_before, flat.ok)
        rate, latency = flat.rate, latency_summary_ms(flat.latencies_s)
        notes.append(failures_note(flat, f"{side} closed-loop"))
    paced = asyncio.run(open_loop(url, fixed, rate=RATE, duration_s=s.rate_s))
    notes.append(failures_note(paced, f"{side} at 1,000 req/s"))
    paced_ms = latency_summary_ms(paced.latencies_s)
    return Side(rate, latency, paced_ms, [n for n in notes if n], cpu_us)


def run(ctx: Context) -> list[Row]:
    """Measure the bare app, then the daemon, with the same requests."""
    require_engine("receive", "the inbound receiver")
    s = ctx.settings
    work = ctx.workdir("ingest")
    requests = signed_requests(WARMUP + int(s.ingest_s * MAX_RATE) + int(s.rate_s * RATE) + 10)
    with start_app(work, "sink") as sink:
        base = measure(sink.url + HOOK_PATH, requests, ctx, "bare", sink.pid)
    config = "sources:\n" + webhook_source_yaml()
    with start_daemon(work, config) as bridge:
        check_accepts(bridge, signed_requests(5), "no webhook route")
        got = measure(bridge.url + HOOK_PATH, requests, ctx, "bridge", bridge.pid)
        bridge.check_alive()
    generator = "wrk -t1" if wrk.available() else "aiohttp"
    note = "; ".join([f"closed loop by {generator}", *got.notes, *base.notes])
    bare = "bare Starlette 204"
    conc = s.ingest_concurrency
    return [
        Row("ingest", f"accepted/s ({conc} in flight)", "req/s", got.rate, base.rate, bare,
            Goal("ratio", ">=", 0.65), note=note),
        Row("ingest", f"CPU per accepted webhook ({conc} in flight)", "µs", got.cpu_us,
            base.cpu_us, bare, Goal("value", "<=", 150, "µs")),
        Row("ingest", f"p50 to 2xx ({conc} in flight)", "ms", got.latency.get("p50_ms"),
            base.latency.get("p50_ms"), bare),
        Row("ingest", f"p99 to 2xx ({conc} in flight)", "ms", got.latency.get("p99_ms"),
            base.latency.get("p99_ms"), bare),
        Row("ingest", "p99 to 2xx at 1,000 req/s", "ms", got.paced.get("p99_ms"),
            base.paced.get("p99_ms"), bare, Goal("value", "<", 20, "ms"),
            extra={"bridge": got.paced, "bare": base.paced}),
    ]  # fmt: skip
