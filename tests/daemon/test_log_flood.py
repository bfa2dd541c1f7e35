"""A database locked by another process, read in the real daemon's log: the state in two
lines (when it begins, when it ends, with its duration), each repeated failure printed once
and its repeats counted, not printed."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.conftest import TEST_SECRET
from tests.helpers import serve_app, wait_until

LOCK_S = 8.0  # longer than the writer's busy timeout (5 s): the writes then fail fast

# Holds the database's write lock for a while, as another process (`sqlite3` in a shell,
# a backup) would; says "locked" once it holds it.
LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
print("released", flush=True)
"""


class Upstream:
    """A target that takes every delivery, and a polled API with one item."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.delivered = 0

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            await request.body()
            with self.lock:
                self.delivered += 1
            return Response(status_code=204)

        async def items(request: Request) -> Response:
            return JSONResponse([{"id": "1"}])

        return Starlette(routes=[Route("/in", hook, methods=["POST"]), Route("/items", items)])


def config_text(url: str) -> str:
    return f"""
        database: flood.db
        sources:
          hook:
            webhook: {{verify: none, allow_unsigned: true}}
          api:
            poll: {{url: "{url}/items", every: 200ms, id: id}}
        targets:
          t:
            url: {url}/in
            secret: {TEST_SECRET}
            events: ["hook*"]
    """


def hold_lock(database: Path, seconds: float) -> subprocess.Popen[str]:
    """Start the locker; return once it holds the lock."""
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(database), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert locker.stdout is not None
    assert locker.stdout.readline().strip() == "locked"
    return locker


def test_a_locked_database_is_said_in_two_lines_and_repeats_are_counted(daemon) -> None:
    up = Upstream()
    with serve_app(up.app()) as url:
        proc = daemon(config_text(url))
        base = proc.url
        assert httpx.post(base + "/hooks/hook", json={"id": "before"}).status_code == 202
        wait_until(lambda: up.delivered == 1, timeout_s=15)

        locker = hold_lock(proc.config_path.parent / "flood.db", LOCK_S)
        refused = 0
        for n in range(200):  # bounded: the lock ends after LOCK_S
            if locker.poll() is not None:
                break
            answer = httpx.post(base + "/hooks/hook", json={"id": f"in-{n}"}, timeout=15)
            refused += answer.status_code == 503
            time.sleep(0.1)
        assert locker.wait(timeout=30) == 0
        assert locker.stdout is not None
        locker.stdout.close()
        assert refused >= 2, "webhooks were refused while the database was locked"

        # After the lock: a webhook is stored, delivered, and the log says each part is back.
        assert httpx.post(base + "/hooks/hook", json={"id": "after"}).status_code == 202
        wait_until(lambda: "the database is writable again after" in proc.log(), timeout_s=15)
        wait_until(lambda: "source hook: webhooks are stored again after" in proc.log(), 15)
        wait_until(lambda: "deliveries are claimed again after" in proc.log(), timeout_s=15)
        assert proc.terminate() == 0
    log = proc.log()
    lines = log.splitlines()

    # The state: one line when it begins, one when it ends, with its duration and count.
    began = [line for line in lines if "the database is locked: failing writes fast" in line]
    assert len(began) == 1 and " WARNING " in began[0]
    (ended,) = [line for line in lines if "the database is writable again" in line]
    found = re.search(r"after (\d+\.\d) s; (\d+) writes? failed fast meanwhile$", ended)
    assert found, ended
    assert 0 < float(found[1]) <= LOCK_S and int(found[2]) >= refused

    # Each failure of one kind printed once: no message is repeated while it lasted.
    failures = [line.split(" ", 2)[2] for line in lines if "database is locked" in line]
    kinds = Counter(re.sub(r"evt_\w+", "EVENT", line) for line in failures)
    assert kinds and max(kinds.values()) == 1, kinds
    assert sum("cannot store a webhook (answered 503)" in line for line in lines) == 1

    # ...and its repeats counted into the line that says it passed: every 503 accounted for.
    (stored,) = [line for line in lines if "webhooks are stored again after" in line]
    counted = re.search(r"of failures \((\d+) more like it not shown\)$", stored)
    assert counted, stored
    assert 1 + int(counted[1]) == refused
