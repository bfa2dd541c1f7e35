"""Load generators on aiohttp: closed-loop (as fast as it answers) and open-loop (fixed rate).

Both send requests prepared beforehand (signing is not what is measured), are bounded in
count and in time, and talk only to the URL given (always 127.0.0.1 here). The open-loop
sender measures each latency from the moment the request was due, not when it left, so a
server that falls behind is charged for the wait (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import aiohttp

# A fixed Standard Webhooks secret (24 random-looking bytes), used on both sides of a run.
WEBHOOK_SECRET = "whsec_" + base64.b64encode(hashlib.sha256(b"bridge-bench").digest()[:24]).decode()
TARGET_SECRET = (
    "whsec_" + base64.b64encode(hashlib.sha256(b"bridge-bench-t").digest()[:24]).decode()
)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks `webhook-signature` value for one message."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


@dataclass(frozen=True, slots=True)
class Prepared:
    """One request ready to send: its sequence number, body and headers."""

    seq: int
    body: bytes
    headers: dict[str, str]


def signed_requests(count: int, *, secret: str = WEBHOOK_SECRET, pad: int = 200) -> list[Prepared]:
    """`count` distinct signed Standard Webhooks requests with `seq` 0..count-1 in the body."""
    run = secrets.token_hex(4)
    timestamp = int(time.time())
    out = []
    for seq in range(count):
        msg_id = f"msg_{run}_{seq}"
        body = json.dumps(
            {"type": "bench.ping", "seq": seq, "data": {"note": "x" * pad}},
            separators=(",", ":"),
        ).encode()
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, msg_id, timestamp, body),
        }
        out.append(Prepared(seq, body, headers))
    return out


GITHUB_SECRET = hashlib.sha256(b"bridge-bench-github").hexdigest()[:40]


def github_requests(count: int, *, secret: str = GITHUB_SECRET, pad: int = 200) -> list[Prepared]:
    """`count` distinct GitHub-signed `push` deliveries (`X-Hub-Signature-256`), one GUID each."""
    out = []
    for seq in range(count):
        body = json.dumps(
            {"ref": "refs/heads/main", "seq": seq, "head_commit": {"message": "x" * pad}},
            separators=(",", ":"),
        ).encode()
        mac = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        headers = {
            "content-type": "application/json",
            "x-github-event": "push",
            "x-github-delivery": str(uuid.uuid4()),
            "x-hub-signature-256": f"sha256={mac}",
        }
        out.append(Prepared(seq, body, headers))
    return out


@dataclass
class LoadResult:
    """What a load run saw."""

    sent: int = 0
    ok: int = 0
    failed: int = 0
    dropped: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    duration_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    # seq -> monotonic_ns when it was due to be sent (open loop), for end-to-end figures
    due_ns: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Accepted (2xx) requests per second."""
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    def note(self, status: int | None, error: str | None = None) -> None:
        self.sent += 1
        if status is not None:
            self.statuses[status] = self.statuses.get(status, 0) + 1
        if status is not None and 200 <= status < 300:
            self.ok += 1
        else:
            self.failed += 1
            if error and len(self.errors) < 5:
                self.errors.append(error)


@contextlib.contextmanager
def quiet_gc() -> Iterator[None]:
    """Keep what exists now (the prepared requests above all) out of the collector's scans.

    A full collection walks every live object: with a few hundred thousand prepared
    requests that is 50 to 100 ms during which the generator neither sends nor reads, and
    the open loop would charge that stall to the server.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _session(limit: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit),
        timeout=aiohttp.ClientTimeout(total=30),
    )


async def _send(
    session: aiohttp.ClientSession, url: str, req: Prepared, out: LoadResult, t0: float
) -> None:
    status: int | None = None
    try:
        async with session.post(url, data=req.body, headers=req.headers) as resp:
            await resp.read()
            status = resp.status
            error = None if resp.status < 300 else f"HTTP {resp.status}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        error = f"{exc.__class__.__name__}: {exc}"
    done = time.perf_counter()
    out.note(status, error)
    if status is not None and 200 <= status < 300:
        out.latencies_s.append(done - t0)


async def closed_loop(
    url: str, requests: Sequence[Prepared], *, concurrency: int, duration_s: float
) -> LoadResult:
    """Keep `concurrency` requests in flight until the requests or `duration_s` run out."""
    out = LoadResult()
    position = iter(requests)
    with quiet_gc():
        return await _closed_loop(url, position, out, concurrency, duration_s)


async def _closed_loop(
    url: str, position: Iterator[Prepared], out: LoadResult, concurrency: int, duration_s: float
) -> LoadResult:
    async with _session(concurrency) as session:
        start = time.perf_counter()
        deadline = start + duration_s

        async def worker() -> None:
            for req in position:
                if time.perf_counter() >= deadline:
                    return
                await _send(session, url, req, out, time.perf_counter())

        await asyncio.wait_for(
            asyncio.gather(*(worker() for _ in range(concurrency))), timeout=duration_s + 30
        )
        out.duration_s = time.perf_counter() - start
    return out


async def open_loop(
    url: str,
    requests: Sequence[Prepared],
    *,
    rate: float,
    duration_s: float,
    max_in_flight: int = 512,
) -> LoadResult:
    """Send at a fixed `rate` for `duration_s`; latency counts from when each request was due."""
    out = LoadResult()
    count = min(len(requests), int(rate * duration_s))
    with quiet_gc():
        return await _open_loop(url, requests, out, count, rate, max_in_flight)


async def _open_loop(
    url: str,
    requests: Sequence[Prepared],
    out: LoadResult,
    count: int,
    rate: float,
    max_in_flight: int,
) -> LoadResult:
    tasks: set[asyncio.Task[None]] = set()
    async with _session(max_in_flight) as session:
        start, start_ns = time.perf_counter(), time.monotonic_ns()
        i = 0
        while i < count:
            now = time.perf_counter()
            while i < count and start + i / rate <= now:
                if len(tasks) >= max_in_flight:
                    out.dropped += 1  # the server is hopelessly behind; note, do not queue
                else:
                    out.due_ns[requests[i].seq] = start_ns + round(i / rate * 1e9)
                    task = asyncio.create_task(
                        _send(session, url, requests[i], out, start + i / rate)
                    )
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                i += 1
            if i < count:
                await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        if tasks:
            await asyncio.wait(tasks, timeout=30)
        out.duration_s = time.perf_counter() - start
    return out
