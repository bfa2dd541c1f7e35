"""The cost of sharing: ingest and delivery on PostgreSQL with 1, 2 and 3 replicas vs SQLite.

For each setup (SQLite with one bridge; PostgreSQL with 1, 2 and 3 bridges on one database)
it starts real `bridge run` processes and measures:

- ingest: signed Standard Webhooks POSTs, 64 in flight, spread round robin over the
  replicas; accepted (2xx) per second, in all and per replica;
- delivery: events put in the outbox through the store, the time until a loopback receiver
  has every one; delivered per second, in all and per replica;
- on PostgreSQL, the database's commits per second during each phase (pg_stat_database).

Ratios are against SQLite with one bridge, measured in the same run. On a 2-core machine
this shows what sharing one database costs, not scale: the replicas, the load generator,
the receiver and PostgreSQL share the same two cores.

Run: .venv/bin/python -m bench.scale_out [--events N] [--postgres URL]
(the URL defaults to $BRIDGE_TEST_POSTGRES_URL, else the local server of `make test`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psycopg

CONCURRENCY = 64
SECRET = "whsec_" + base64.b64encode(hashlib.sha256(b"bridge-bench").digest()[:24]).decode()
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
SINK = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
seen = set()
async def hook(request):
    await request.body()
    seen.add(request.headers["webhook-id"])
    return Response(status_code=204)
async def count(request):
    return PlainTextResponse(str(len(seen)))
app = Starlette(routes=[Route("/hook", hook, methods=["POST"]), Route("/count", count)])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def signed(n: int, run: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"type": "bench.ping", "seq": n, "note": "x" * 200}).encode()
    msg_id, ts = f"msg_{run}_{n}", int(time.time())
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return body, {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
    }


@dataclass
class Result:
    """One setup's figures."""

    name: str
    replicas: int
    ingest_per_s: float
    delivery_per_s: float
    ingest_commits_per_s: float | None
    delivery_commits_per_s: float | None


def commits(url: str | None) -> int | None:
    """The server's committed transactions so far, in this database (None for SQLite)."""
    if url is None:
        return None
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else None


@contextlib.contextmanager
def schema(url: str) -> Iterator[str]:
    name = f"bridge_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        sep = "&" if "?" in url else "?"
        yield f"{url}{sep}options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


@contextlib.contextmanager
def bridges(folder: Path, database: str, sink_url: str, count: int) -> Iterator[list[str]]:
    """`count` bridges on `database`, delivering to `sink_url`; yields their base URLs."""
    procs, urls = [], []
    try:
        for n in range(count):
            port = free_port()
            config = folder / f"bridge-{n}.yaml"
            config.write_text(
                f'database: "{database}"\nserver:\n  listen: 127.0.0.1:{port}\n'
                f"sources:\n  bench:\n    webhook:\n      verify: standard-webhooks\n"
                f"      secrets: {SECRET}\n"
                f"targets:\n  sink:\n    url: {sink_url}/hook\n    secret: {SECRET}\n"
                f"    events: [none.*]\n"
            )
            log = open(folder / f"bridge-{n}.log", "wb")  # noqa: SIM115
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "bridge", "run", "-c", str(config),
                     "--replica-id", f"bench-{n}", "--log-level", "warning"],
                    stdout=log, stderr=subprocess.STDOUT, cwd=folder,
                )
            )  # fmt: skip
            urls.append(f"http://127.0.0.1:{port}")
            wait_port(port)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


async def ingest(urls: list[str], count: int) -> float:
    """Accepted pushes per second, CONCURRENCY in flight, round robin over `urls`."""
    run = uuid.uuid4().hex[:6]
    prepared = [signed(n, run) for n in range(count)]
    queue = list(range(count))
    accepted = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def worker() -> None:
            nonlocal accepted
            while queue:
                n = queue.pop()
                body, headers = prepared[n]
                url = urls[n % len(urls)] + "/hooks/bench"
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    accepted += resp.status // 100 == 2

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        took = time.perf_counter() - started
    if accepted != count:
        raise RuntimeError(f"only {accepted} of {count} pushes were accepted")
    return count / took


def sink_count(sink_url: str) -> int:
    with urllib.request.urlopen(sink_url + "/count", timeout=5) as resp:
        return int(resp.read())


def deliver(database: str, sink_url: str, count: int) -> float:
    """Events put in the outbox at once; delivered per second until the sink has them all."""
    from bridge.events import Event, event_id, now_ms
    from bridge.store import NewEvent, open_store

    before = sink_count(sink_url)
    store = open_store(database, replica_id="bench-loader")
    store.open()
    try:
        run = uuid.uuid4().hex[:6]
        events = [
            Event(event_id("bench", f"{run}-{n}"), "bench", "bench.ping", "push", {"n": n},
                  now_ms())
            for n in range(count)
        ]  # fmt: skip
        started = time.perf_counter()
        for start in range(0, count, 500):
            chunk = events[start : start + 500]
            asyncio.run(store.record_events([NewEvent(e, ["sink"]) for e in chunk]))
    finally:
        store.close()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if sink_count(sink_url) - before >= count:
                return count / (time.perf_counter() - started)
        time.sleep(0.05)
    raise RuntimeError("the sink did not get every delivery in 300 s")


@contextlib.contextmanager
def sink() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SINK, str(port)])
    try:
        wait_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def measure(name: str, database: str, pg: str | None, replicas: int, events: int) -> Result:
    """Start `replicas` bridges on `database` and measure ingest, then delivery."""
    folder = Path(tempfile.mkdtemp(prefix="bridge-bench-"))
    try:
        with sink() as sink_url, bridges(folder, database, sink_url, replicas) as urls:
            asyncio.run(ingest(urls, 300))  # warm up
            c0 = settled_commits(pg)
            t0 = time.perf_counter()
            ingest_rate = asyncio.run(ingest(urls, events))
            t1 = time.perf_counter()
            c1 = settled_commits(pg)
            delivery_rate = deliver(database, sink_url, events)
            t2 = time.perf_counter()
            c2 = settled_commits(pg)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    per_s = [
        (b - a) / (tb - ta) if a is not None and b is not None else None
        for a, b, ta, tb in ((c0, c1, t0, t1), (c1, c2, t1, t2))
    ]
    return Result(name, replicas, ingest_rate, delivery_rate, per_s[0], per_s[1])


def settled_commits(url: str | None) -> int | None:
    """`commits` once the backends have reported theirs (PostgreSQL's statistics lag ~1 s).

    The wait is outside the timed phases; the idle commits made meanwhile (heartbeats,
    outbox scans: a few per second per replica) are counted with the phase, a small excess.
    """
    if url is None:
        return None
    time.sleep(1.5)
    return commits(url)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def report(results: list[Result]) -> str:
    """The results as a Markdown table, ratios against the first (SQLite, one bridge)."""
    base = results[0]
    lines = [
        "| setup | ingest/s | per replica | ratio | delivered/s | per replica | ratio |"
        " commits/s (ingest, delivery) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {_fmt(r.ingest_per_s)} | {_fmt(r.ingest_per_s / r.replicas)}"
            f" | {r.ingest_per_s / base.ingest_per_s:.2f}x | {_fmt(r.delivery_per_s)}"
            f" | {_fmt(r.delivery_per_s / r.replicas)}"
            f" | {r.delivery_per_s / base.delivery_per_s:.2f}x"
            f" | {_fmt(r.ingest_commits_per_s)}, {_fmt(r.delivery_commits_per_s)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=3000, help="pushes and deliveries each")
    parser.add_argument(
        "--postgres", default=os.environ.get("BRIDGE_TEST_POSTGRES_URL", DEFAULT_URL)
    )
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        db = str(Path(folder) / "bridge.db")
        results.append(measure("SQLite, 1 bridge", db, None, 1, args.events))
    for replicas in (1, 2, 3):
        with schema(args.postgres) as url:
            name = f"PostgreSQL, {replicas} bridge{'s' * (replicas > 1)}"
            results.append(measure(name, url, args.postgres, replicas, args.events))
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
