"""ingest vs the peer: the bridge against Debian's `webhook` (adnanh/webhook), the same requests.

`webhook` is what many install today to receive a webhook: a Go server whose hook checks the
GitHub signature with a `payload-hmac-sha256` rule and then runs a command (`/bin/true`
here). It stores nothing; the bridge commits every event durably before its 2xx. Both get the
same GitHub-signed `push` deliveries (a distinct `X-GitHub-Delivery` each) from wrk with one
thread and 64 connections, a few seconds apart; the bridge has one `verify: github` source
and no target. `make bench` installs the `webhook` package when it runs as root; without it,
or without wrk, the figure says "not available". Beside each rate, the CPU of each side's
process per accepted request (`webhook`'s own, not the `/bin/true` it forks).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

from bench import wrk
from bench.context import Context, require_engine
from bench.figures.common import HOOK_PATH
from bench.figures.ingest import per_request_us
from bench.load import GITHUB_SECRET, Prepared, closed_loop, github_requests
from bench.procs import NotAvailable, Proc, cpu_seconds, free_port, start, start_daemon
from bench.stats import Goal, Row

WARMUP = 300
MAX_RATE = 20_000


def hooks_file(path: Path, secret: str) -> Path:
    """A hooks file with one hook `hook`: run `/bin/true` when the GitHub signature holds.

    A request whose signature does not hold gets a 403 (webhook answers 200 by default), so
    wrk counts it as an error.
    """
    hooks = [
        {
            "id": "hook",
            "execute-command": "/bin/true",
            "trigger-rule-mismatch-http-response-code": 403,
            "trigger-rule": {
                "match": {
                    "type": "payload-hmac-sha256",
                    "secret": secret,
                    "parameter": {"source": "header", "name": "X-Hub-Signature-256"},
                }
            },
        }
    ]
    path.write_text(json.dumps(hooks, indent=2))
    return path


def github_source_yaml(secret: str) -> str:
    """One GitHub source named `hook`, listening at /hooks/hook."""
    return f'sources:\n  hook:\n    webhook:\n      verify: github\n      secrets: ["{secret}"]\n'


def drive(
    proc: Proc, requests: list[Prepared], ctx: Context, side: str
) -> tuple[wrk.WrkResult, float | None]:
    """Warm up with a few requests, then wrk's closed loop; refuse a side that rejects them.

    Returns wrk's figures and the CPU microseconds `proc` spent per accepted request."""
    s = ctx.settings
    url = proc.url + HOOK_PATH
    warm = asyncio.run(closed_loop(url, requests[:WARMUP], concurrency=16, duration_s=10))
    if warm.ok == 0:
        raise NotAvailable(f"{side} accepted none of the signed requests ({warm.statuses})")
    cpu_before = cpu_seconds(proc.pid)
    got = wrk.closed_loop(
        url, requests[WARMUP:], ctx.workdir(f"peer/{side}"), connections=s.ingest_concurrency,
        duration_s=s.ingest_s,
    )  # fmt: skip
    return got, per_request_us(cpu_seconds(proc.pid) - cpu_before, got.ok)


def run(ctx: Context) -> list[Row]:
    """Measure `webhook`, then the bridge, with the same GitHub-signed requests."""
    require_engine("receive", "the inbound receiver")
    binary = shutil.which("webhook")
    if binary is None:
        raise NotAvailable("Debian's `webhook` is not installed (make bench installs it as root)")
    if not wrk.available():
        raise NotAvailable("wrk is not installed (make bench installs it as root)")
    s = ctx.settings
    work = ctx.workdir("peer")
    requests = github_requests(WARMUP + int(s.ingest_s * MAX_RATE))
    hooks = hooks_file(work / "hooks.json", GITHUB_SECRET)
    port = free_port()
    argv = [binary, "-hooks", str(hooks), "-ip", "127.0.0.1", "-port", str(port), "-nopanic"]
    with start("webhook", argv, work, port=port, health="/") as peer:
        base, base_cpu_us = drive(peer, requests, ctx, "webhook")
        peer.check_alive()
    with start_daemon(work, github_source_yaml(GITHUB_SECRET)) as bridge:
        got, cpu_us = drive(bridge, requests, ctx, "bridge")
        bridge.check_alive()
    notes = [f"wrk -t1 -c{s.ingest_concurrency}; webhook runs /bin/true per request"]
    for side, result in (("bridge", got), ("webhook", base)):
        if result.errors:
            notes.append(f"{side}: {result.errors} of {result.requests} failed")
    peer_name = "Debian's webhook, HMAC rule"
    return [
        Row("ingest vs peer", "GitHub-signed accepted/s", "req/s", got.rate, base.rate,
            peer_name, Goal("ratio", ">=", 1.2), note="; ".join(notes)),
        Row("ingest vs peer", "CPU per accepted webhook", "µs", cpu_us, base_cpu_us,
            peer_name),
        Row("ingest vs peer", "p99 to 2xx (64 in flight)", "ms", got.p99_ms, base.p99_ms,
            peer_name),
    ]  # fmt: skip
