"""scale-out: ingest and delivery on PostgreSQL with 1, 2 and 3 replicas next to SQLite.

The same baselines as the `ingest` and `delivery` figures, measured in this figure: the bare
Starlette app for accepted pushes per second, a bare aiohttp loop for deliveries per second.
Each setup runs real `bridge run` processes: SQLite with one, then 1, 2 and 3 replicas on one
PostgreSQL database (a fresh schema each). Pushes are spread evenly over the replicas (64 in
flight in all); deliveries are events put in the outbox, timed until the receiver has them
all. Each row also gives the rate per replica and PostgreSQL's commits per second, and the
CPU per delivered event of the replicas and, when the server runs on this machine, of the
server processes serving the replicas' connections (from /proc: the database's own share).

On a 2-core machine the replicas, the load, the receiver and PostgreSQL share the cores:
this shows the cost of sharing one database, not scale. The server is
`$BRIDGE_TEST_POSTGRES_URL`, else the local one `make test` uses; without one the figure is
not available.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.context import Context, require_engine
from bench.figures.common import HOOK_PATH, failures_note, webhook_source_yaml
from bench.figures.delivery import (
    CONCURRENCY,
    as_requests,
    http_get_reset,
    make_events,
    outbox,
    record_all,
    wait_for_all,
)
from bench.load import TARGET_SECRET, LoadResult, Prepared, closed_loop, signed_requests
from bench.procs import NotAvailable, Proc, cpu_seconds, start_app, start_daemon
from bench.stats import Row

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
SETUPS = (("SQLite", 1), ("PostgreSQL", 1), ("PostgreSQL", 2), ("PostgreSQL", 3))
# A quick run keeps the ends of the range, so `make bench-quick` stays under 2 minutes.
QUICK_SETUPS = (("SQLite", 1), ("PostgreSQL", 1), ("PostgreSQL", 3))
MAX_RATE = 20_000  # bounds the prepared requests, as in the ingest figure
SETTLE_S = 1.5  # PostgreSQL's statistics reach pg_stat_database within about a second


def server_url() -> str:
    """The PostgreSQL server to measure on; NotAvailable when none answers."""
    import psycopg

    url = os.environ.get("BRIDGE_TEST_POSTGRES_URL") or DEFAULT_URL
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as exc:
        raise NotAvailable(f"no PostgreSQL server answers ({exc.__class__.__name__})") from exc
    return url


@contextlib.contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """A new schema on the server; yields a URL whose tables live in it; dropped after."""
    import psycopg

    name = f"bridge_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        # The connections are named after the schema: `server_cpu_s` finds their processes.
        yield (f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{name}"
               f"&application_name={name}")  # fmt: skip
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


def commits(url: str | None) -> int | None:
    """The server's committed transactions so far in this database, once they are reported."""
    if url is None:
        return None
    import psycopg

    time.sleep(SETTLE_S)
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else None


@contextlib.contextmanager
def replicas(work: Path, config: str, database: str, count: int) -> Iterator[list[Proc]]:
    """`count` bridges on one database, each named by its --replica-id."""
    with contextlib.ExitStack() as stack:
        procs = [
            stack.enter_context(
                start_daemon(work, config, name=f"bridge-{n}", log_level="warning",
                             database=database, args=("--replica-id", f"bench-{n}"))
            )
            for n in range(count)
        ]  # fmt: skip
        yield procs


async def spread(procs: list[Proc], requests: list[Prepared], duration_s: float) -> LoadResult:
    """Closed loops against every replica at once, 64 in flight in all; one merged result."""
    n = len(procs)
    parts = await asyncio.gather(
        *(
            closed_loop(p.url + HOOK_PATH, requests[i::n], concurrency=64 // n,
                        duration_s=duration_s)
            for i, p in enumerate(procs)
        )
    )  # fmt: skip
    merged = LoadResult(duration_s=max(p.duration_s for p in parts))
    for part in parts:
        merged.sent += part.sent
        merged.ok += part.ok
        merged.failed += part.failed
        merged.dropped += part.dropped
        merged.errors.extend(part.errors)
        for code, count in part.statuses.items():
            merged.statuses[code] = merged.statuses.get(code, 0) + count
    return merged


def server_cpu_s(url: str | None) -> dict[int, float] | None:
    """The CPU seconds used so far by each server process serving a connection named as
    the schema of `url` (the replicas'); None when the server is not on this machine."""
    if url is None:
        return None
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    name = str(conninfo_to_dict(url).get("application_name") or "")
    with psycopg.connect(url, autocommit=True, application_name="bench") as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (name,)
        ).fetchall()
    out = {}
    for (pid,) in rows:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() != "postgres":
                return None  # another machine's (or container's) process ids
            out[pid] = cpu_seconds(pid)
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return out or None


def used_s(before: dict[int, float] | None, after: dict[int, float] | None) -> float | None:
    """The CPU seconds the server processes alive at the end used since `before`."""
    if before is None or after is None:
        return None
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def per_s(before: int | None, after: int | None, took_s: float) -> float | None:
    if before is None or after is None:
        return None
    return round((after - before) / took_s, 1)


def measure_setup(
    ctx: Context, work: Path, database: str, pg: str | None, count: int, sink: Proc
) -> dict[str, Any]:
    """Ingest then delivery through `count` replicas on `database`."""
    s = ctx.settings
    # Pushes go to no target (`events` matches none): ingest measures the inbound path alone;
    # the outbox is filled through the store for the delivery phase.
    config = (
        "sources:\n"
        + webhook_source_yaml()
        + f'targets:\n  sink:\n    url: {sink.url}/deliver\n    events: ["none.*"]\n'
        + f'    secret: "{TARGET_SECRET}"\n'
    )
    requests = signed_requests(300 + int(s.ingest_s * MAX_RATE))
    events = make_events(s.delivery_events)
    with replicas(work, config, database, count) as procs:
        asyncio.run(spread(procs, requests[:300], 10))  # warm up
        c0 = commits(pg)
        got = asyncio.run(spread(procs, requests[300:], s.ingest_s))
        c1 = commits(pg)
        http_get_reset(sink)
        server_started = server_cpu_s(database if pg else None)
        store = outbox(database)
        started, cpu_started = time.perf_counter(), replicas_cpu_s(procs)
        asyncio.run(record_all(store, events))
        took_s = wait_for_all(sink, len(events), 60 + len(events) / 50, procs[0]) - started
        delivery_cpu_s = replicas_cpu_s(procs) - cpu_started
        server_s = used_s(server_started, server_cpu_s(database if pg else None))
        c2 = commits(pg)
        for proc in procs:
            proc.check_alive()
    return {
        "ingest": got.rate,
        "delivery": len(events) / took_s,
        "delivery_cpu_us": delivery_cpu_s / len(events) * 1e6,
        "server_cpu_us": None if server_s is None else server_s / len(events) * 1e6,
        "ingest_commits_per_s": per_s(c0, c1, got.duration_s),
        "delivery_commits_per_s": per_s(c1, c2, took_s),
        "note": failures_note(got, f"{count} replicas"),
    }


def shares(label: str, rate: float, count: int, commits_per_s: float | None) -> str:
    """The note of a row: the rate per replica and the database's commits per second."""
    if commits_per_s is None:
        return ""
    return f"{label}: {rate / count:,.0f}/s per replica, {commits_per_s:,.0f} commits/s"


def replicas_cpu_s(procs: list[Proc]) -> float:
    """The CPU seconds (user + system) the replicas have used so far, together."""
    return sum(cpu_seconds(proc.pid) for proc in procs)


def baselines(ctx: Context, sink: Proc) -> tuple[float, float, float]:
    """The bare app's accepted/s, the bare aiohttp loop's deliveries/s and its CPU per
    delivered event in µs (the loop runs in this process)."""
    s = ctx.settings
    requests = signed_requests(300 + int(s.ingest_s * MAX_RATE))
    bare = asyncio.run(
        closed_loop(sink.url + HOOK_PATH, requests, concurrency=64, duration_s=s.ingest_s)
    )
    events = make_events(s.delivery_events)
    http_get_reset(sink)
    started, cpu_started = time.perf_counter(), time.process_time()
    asyncio.run(
        closed_loop(sink.url + "/deliver", as_requests(events), concurrency=CONCURRENCY,
                    duration_s=120)
    )  # fmt: skip
    bare_s = wait_for_all(sink, len(events), 30) - started
    bare_cpu_us = (time.process_time() - cpu_started) / len(events) * 1e6
    return bare.rate, len(events) / bare_s, bare_cpu_us


def run(ctx: Context) -> list[Row]:
    """Both baselines, then each setup, into the same receiver."""
    require_engine("deliver", "the delivery workers")
    pg = server_url()
    work = ctx.workdir("scale-out")
    rows: list[Row] = []
    with start_app(work, "sink", "--record") as sink:
        bare_ingest, bare_delivery, bare_cpu_us = baselines(ctx, sink)
        for backend, count in QUICK_SETUPS if ctx.settings.quick else SETUPS:
            label = f"{backend}, {count} replica{'s' * (count > 1)}"
            if backend == "SQLite":
                got = measure_setup(ctx, work, str(work / "sqlite.db"), None, count, sink)
            else:
                with fresh_schema(pg) as url:
                    got = measure_setup(ctx, work, url, pg, count, sink)
            ingest, delivery = float(got["ingest"] or 0), float(got["delivery"] or 0)
            ingest_note = shares(label, ingest, count, got["ingest_commits_per_s"])
            rows.append(
                Row("scale-out", f"accepted/s, {label}", "req/s", ingest, bare_ingest,
                    "bare Starlette 204",
                    note="; ".join(n for n in (ingest_note, got["note"]) if n),
                    extra={"per_replica": round(ingest / count, 1),
                           "db_commits_per_s": got["ingest_commits_per_s"]})
            )  # fmt: skip
            rows.append(
                Row("scale-out", f"delivered/s, {label}", "ev/s", delivery, bare_delivery,
                    f"bare aiohttp loop, {CONCURRENCY} in flight",
                    note=shares(label, delivery, count, got["delivery_commits_per_s"]),
                    extra={"per_replica": round(delivery / count, 1),
                           "db_commits_per_s": got["delivery_commits_per_s"]})
            )  # fmt: skip
            rows.append(
                Row("scale-out", f"CPU per delivered event, {label}", "µs",
                    float(got["delivery_cpu_us"]), bare_cpu_us,
                    f"bare aiohttp loop, {CONCURRENCY} in flight (its process)",
                    note="the replicas' CPU together, not the database server's")
            )  # fmt: skip
            if got["server_cpu_us"] is not None:
                rows.append(
                    Row("scale-out", f"server CPU per delivered event, {label}", "µs",
                        float(got["server_cpu_us"]),
                        note="the PostgreSQL processes of the replicas' connections (/proc);"
                             " not the outbox's filling")
                )  # fmt: skip
    return rows
