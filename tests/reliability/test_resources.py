"""Resources: a soak with flat memory and file descriptors; a database that is locked by
another process, and a disk that is full: inbound answers 503 with Retry-After, nothing
acknowledged is lost, and work resumes once the fault clears."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from bridge.config import parse_config
from bridge.daemon import Daemon
from tests.helpers import DaemonProcess, free_port, serve_app, wait_until
from tests.reliability.parts import (
    INBOUND_SECRET,
    TARGET_SECRET,
    Targets,
    Upstream,
    integrity,
    query,
    signed_headers,
    statuses,
)

pytestmark = pytest.mark.reliability

SOAK_S = 16.0
WARM_UP_S = 3.0


def config_text(
    target_url: str, upstream_url: str | None = None, database: str = "bridge.db"
) -> str:
    poll = (
        f"""
  items:
    poll:
      url: {upstream_url}/items
      every: 100ms
      items: data
      id: id
"""
        if upstream_url
        else ""
    )
    return f"""
database: {database}
sources:
  orders:
    webhook:
      verify: standard-webhooks
      secrets: [{INBOUND_SECRET}]
{poll}
targets:
  sink:
    url: {target_url}/sink
    secret: {TARGET_SECRET}
    timeout: 2s
    retry: [200ms, 500ms, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s]
    circuit: {{failures: 1000}}
"""


def push(client: httpx.Client, n: int, size: int = 0) -> httpx.Response:
    body = json.dumps({"type": "order.created", "n": n, "pad": "x" * size}).encode()
    return client.post(
        "/hooks/orders", content=body, headers=signed_headers(INBOUND_SECRET, f"m{n}", body)
    )


def accepted_ids(db: Path) -> set[str]:
    return {row[0] for row in query(db, "SELECT upstream_id FROM events WHERE source = 'orders'")}


# -- the soak ----------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_soak_keeps_memory_and_file_descriptors_flat(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    db = tmp_path / "bridge.db"
    up = Upstream()
    up.set({"id": i, "v": 0} for i in range(50))
    receivers = Targets(delay_s=0.005)
    samples: list[tuple[float, int, int]] = []
    with serve_app(up.app()) as up_url, serve_app(receivers.app()) as target_url:
        proc = daemon(config_text(target_url, up_url))
        pid = proc.proc.pid
        stop = threading.Event()
        sent: list[int] = []

        def sender(worker: int) -> None:
            with httpx.Client(base_url=proc.url, timeout=10) as client:
                n = worker
                while not stop.is_set():
                    assert push(client, n, size=200).status_code == 202
                    sent.append(n)
                    n += 4
                    time.sleep(0.02)

        def mutate() -> None:
            i = 0
            while not stop.wait(0.05):
                with up.lock:
                    key = str(i % 50)
                    up.items[key] = {"id": key, "v": i}
                i += 1

        with ThreadPoolExecutor(5) as pool:
            futures = [pool.submit(sender, w) for w in range(4)] + [pool.submit(mutate)]
            started = time.monotonic()
            while time.monotonic() - started < SOAK_S:
                samples.append((time.monotonic() - started, rss_kib(pid), fds(pid)))
                time.sleep(0.25)
            stop.set()
            for future in futures:
                future.result()
        wait_until(lambda: set(statuses(db)) == {"delivered"}, timeout_s=30, interval_s=0.2)
        assert proc.terminate() == 0
    assert accepted_ids(db) == {f"m{n}" for n in sent}
    assert receivers.ids("sink") == {row[0] for row in query(db, "SELECT id FROM events")}
    assert len(sent) > 1000, "a moderate load"
    measured = [s for s in samples if s[0] >= WARM_UP_S]
    half = len(measured) // 2
    first, second = measured[:half], measured[half:]
    rss_first, rss_second = max(s[1] for s in first), max(s[1] for s in second)
    fds_first, fds_second = max(s[2] for s in first), max(s[2] for s in second)
    # Generous: caches may still settle; a leak per request or per poll would not fit.
    assert rss_second <= rss_first * 1.15 + 8 * 1024, (rss_first, rss_second)
    assert fds_second <= fds_first + 8, (fds_first, fds_second)


# -- a locked database -------------------------------------------------------------------------


def test_a_database_locked_past_the_busy_timeout_answers_503_then_resumes(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    db = tmp_path / "bridge.db"
    up = Upstream()
    up.set([{"id": 1, "v": 1}])
    receivers = Targets()
    with serve_app(up.app()) as up_url, serve_app(receivers.app()) as target_url:
        proc = daemon(config_text(target_url, up_url))
        client = httpx.Client(base_url=proc.url, timeout=30)
        assert [push(client, n).status_code for n in range(5)] == [202] * 5
        wait_until(lambda: query(db, "SELECT count(*) FROM poll_items") == [(1,)])
        # Another process holds the write lock for longer than the 5 s busy timeout.
        holder = sqlite3.connect(db, isolation_level=None, timeout=10)
        holder.execute("BEGIN IMMEDIATE")
        try:
            up.set([{"id": 1, "v": 2}, {"id": 2, "v": 1}])
            with ThreadPoolExecutor(2) as pool:
                answers = list(pool.map(lambda n: push(client, n), range(5, 7)))
            # Polls ran meanwhile and saw the change, but could not commit it.
            assert query(db, "SELECT count(*) FROM events WHERE source = 'items'") == [(0,)]
        finally:
            holder.rollback()
            holder.close()
        codes = [r.status_code for r in answers]
        assert 503 in codes, codes
        for r in answers:
            if r.status_code == 503:
                assert r.headers["retry-after"].isdigit()
        acknowledged = {
            f"m{n}" for n, r in zip(range(5, 7), answers, strict=True) if r.status_code < 300
        }
        assert acknowledged <= accepted_ids(db)
        # The lock is gone: the provider's retries are taken, the poll's change is seen.
        retried = [push(client, n).status_code for n in range(5, 7)]
        assert retried == [200 if f"m{n}" in acknowledged else 202 for n in range(5, 7)]
        wait_until(
            lambda: query(db, "SELECT count(*) FROM events WHERE source = 'items'") == [(2,)]
        )
        expected = {f"m{n}" for n in range(7)}
        assert accepted_ids(db) == expected
        wait_until(lambda: set(statuses(db)) == {"delivered"}, timeout_s=20, interval_s=0.1)
        client.close()
        assert proc.terminate() == 0
    assert integrity(db) == "ok"
    assert receivers.ids("sink") == {row[0] for row in query(db, "SELECT id FROM events")}
    assert "cannot store a webhook (answered 503)" in proc.log()
    assert "Traceback" not in proc.log()


# -- a full disk -------------------------------------------------------------------------------


@contextlib.contextmanager
def small_file_system(where: Path, size: str = "6m") -> Iterator[bool]:
    """Mount a tmpfs of `size` at `where` if this machine lets us; yields whether it did."""
    where.mkdir()
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: Path) -> Path:
    """Fill the file system of `folder` to the last byte with one file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_answers_503_loses_nothing_and_resumes(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    receivers = Targets()
    with small_file_system(tmp_path / "fs") as mounted, serve_app(receivers.app()) as target_url:
        if mounted:
            disk_full_on_tmpfs(tmp_path, daemon, receivers, target_url)
        else:
            disk_full_by_the_store_fault(tmp_path, receivers, target_url)


def disk_full_on_tmpfs(
    tmp_path: Path, daemon: Callable[..., DaemonProcess], receivers: Targets, target_url: str
) -> None:
    """The real thing: the database on a small tmpfs that the test fills up."""
    db = tmp_path / "fs" / "bridge.db"
    proc = daemon(config_text(target_url, database="fs/bridge.db"))
    client = httpx.Client(base_url=proc.url, timeout=30)
    try:
        assert [push(client, n).status_code for n in range(5)] == [202] * 5
        wait_until(lambda: receivers.ids("sink") and len(receivers.ids("sink")) == 5)
        filler = fill(db.parent)
        answers = {n: push(client, n, size=3000) for n in range(5, 205)}
        refused = [n for n, r in answers.items() if r.status_code == 503]
        assert refused, "the full disk was noticed"
        assert all(r.status_code in (202, 503) for r in answers.values())
        assert all(answers[n].headers["retry-after"].isdigit() for n in refused)
        acknowledged = {f"m{n}" for n, r in answers.items() if r.status_code == 202}
        assert acknowledged | {f"m{n}" for n in range(5)} <= accepted_ids(db)
        # Space again: the provider's retries are taken, and everything is delivered.
        filler.unlink()
        assert {push(client, n, size=3000).status_code for n in refused} == {202}
        assert accepted_ids(db) == {f"m{n}" for n in range(205)}
        wait_until(lambda: set(statuses(db)) == {"delivered"}, timeout_s=30, interval_s=0.1)
        assert len(receivers.ids("sink")) == 205
    finally:
        client.close()
        proc.kill()
    assert integrity(db) == "ok"
    assert "cannot store a webhook (answered 503)" in proc.log()
    assert "Traceback" not in proc.log()


def disk_full_by_the_store_fault(tmp_path: Path, receivers: Targets, target_url: str) -> None:
    """Where mounting is not allowed: the store's commit fails as SQLite's does on ENOSPC."""
    port = free_port()
    config = parse_config(
        f"server:\n  listen: 127.0.0.1:{port}\n" + config_text(target_url),
        path=tmp_path / "config.yaml",
    )
    bridge = Daemon(config)
    ready = threading.Event()
    thread = threading.Thread(
        target=lambda: asyncio.run(bridge.run(on_ready=lambda _: ready.set())), daemon=True
    )
    thread.start()
    assert ready.wait(20)
    assert bridge.runtime is not None
    writer = bridge.runtime.store.writer  # type: ignore[attr-defined]
    db = tmp_path / "bridge.db"
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        assert [push(client, n).status_code for n in range(5)] == [202] * 5
        writer.fault = sqlite3.OperationalError("database or disk is full")
        answers = [push(client, n) for n in range(5, 10)]
        assert [r.status_code for r in answers] == [503] * 5
        assert all(r.headers["retry-after"].isdigit() for r in answers)
        assert accepted_ids(db) == {f"m{n}" for n in range(5)}
        writer.fault = None
        assert [push(client, n).status_code for n in range(5, 10)] == [202] * 5
        wait_until(lambda: set(statuses(db)) == {"delivered"}, timeout_s=30, interval_s=0.1)
        assert len(receivers.ids("sink")) == 10
    finally:
        client.close()
        bridge.request_stop()
        thread.join(timeout=20)
    assert integrity(db) == "ok"


def test_readyz_is_503_with_the_reason_while_the_disk_is_full_and_200_once_it_is_not(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    receivers = Targets()
    with small_file_system(tmp_path / "fs") as mounted, serve_app(receivers.app()) as target_url:
        if mounted:
            readyz_on_a_full_tmpfs(tmp_path, daemon, target_url)
        else:
            readyz_on_the_store_fault(tmp_path, target_url)


def readyz_on_a_full_tmpfs(
    tmp_path: Path, daemon: Callable[..., DaemonProcess], target_url: str
) -> None:
    """The real thing: every webhook gets 503 for want of space, and so does `/readyz` (it
    said 200 before: its probe rewrote a page in place, which a full disk still allows)."""
    proc = daemon(config_text(target_url, database="fs/bridge.db"))
    client = httpx.Client(base_url=proc.url, timeout=30)
    try:
        assert push(client, 0).status_code == 202
        assert client.get("/readyz").status_code == 200
        filler = fill(tmp_path / "fs")
        answers = [push(client, n, size=3000).status_code for n in range(1, 41)]
        assert 503 in answers
        samples = [client.get("/readyz") for _ in range(5)]
        # Each sample is taken with the disk full: every one is 503, with the reason.
        assert [r.status_code for r in samples] == [503] * 5
        for ready in samples:
            assert ready.json()["problems"] == ["the store cannot be written"]
            assert "disk is full" in ready.json()["store_error"]
        assert push(client, 41, size=3000).status_code == 503
        filler.unlink()
        wait_until(lambda: client.get("/readyz").status_code == 200, timeout_s=20, interval_s=0.1)
        assert push(client, 41, size=3000).status_code == 202
    finally:
        client.close()
        proc.kill()
    assert "Traceback" not in proc.log()


def readyz_on_the_store_fault(tmp_path: Path, target_url: str) -> None:
    """Where mounting is not allowed: the store's commits fail as SQLite's do on ENOSPC."""
    port = free_port()
    config = parse_config(
        f"server:\n  listen: 127.0.0.1:{port}\n" + config_text(target_url),
        path=tmp_path / "config.yaml",
    )
    bridge = Daemon(config)
    ready = threading.Event()
    thread = threading.Thread(
        target=lambda: asyncio.run(bridge.run(on_ready=lambda _: ready.set())), daemon=True
    )
    thread.start()
    assert ready.wait(20)
    assert bridge.runtime is not None
    writer = bridge.runtime.store.writer  # type: ignore[attr-defined]
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        writer.fault = sqlite3.OperationalError("database or disk is full")
        ready_now = client.get("/readyz")
        assert ready_now.status_code == 503
        assert "disk is full" in ready_now.json()["store_error"]
        writer.fault = None
        assert client.get("/readyz").status_code == 200
    finally:
        client.close()
        bridge.request_stop()
        thread.join(timeout=20)


# -- a database file deleted or replaced under the daemon --------------------------------------


def copy_database(db: Path, to: Path) -> None:
    """A consistent copy of `db` at `to` (SQLite's backup, as an operator's restore would)."""
    source, copy = sqlite3.connect(f"file:{db}?mode=ro", uri=True), sqlite3.connect(to)
    try:
        source.backup(copy)
    finally:
        source.close()
        copy.close()


@pytest.mark.parametrize("fault", ["deleted", "replaced"])
def test_a_database_file_deleted_or_replaced_is_never_acknowledged_into_and_the_daemon_exits(
    tmp_path: Path, daemon: Callable[..., DaemonProcess], fault: str
) -> None:
    db = tmp_path / "bridge.db"
    receivers = Targets()
    with serve_app(receivers.app()) as target_url:
        proc = daemon(config_text(target_url))
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            assert [push(client, n).status_code for n in range(3)] == [202] * 3
            if fault == "deleted":
                db.unlink()
            else:
                copy_database(db, tmp_path / "restored.db")
                os.replace(tmp_path / "restored.db", db)
            # At once, before the once-a-second check: nothing is acknowledged into the old
            # file.
            answers = [push(client, n) for n in range(3, 6)]
            assert [r.status_code for r in answers] == [503] * 3
            assert all(r.headers["retry-after"].isdigit() for r in answers)
            ready = client.get("/readyz")
            assert ready.status_code == 503, ready.text
        # Then it exits with status 1, for the service manager to restart it.
        assert proc.proc.wait(timeout=20) == 1
        log = proc.log()
        said = [line for line in log.splitlines() if "not ready, answering 503" in line]
        assert len(said) == 1 and f"was {fault}" in said[0], said
        assert "Traceback" not in log
        # Restarted, it opens what the path holds now; the provider's retries are taken.
        again = daemon(config_text(target_url), port=proc.port)
        with httpx.Client(base_url=again.url, timeout=10) as client:
            assert [push(client, n).status_code for n in range(3, 6)] == [202] * 3
            assert client.get("/readyz").status_code == 200
        expected = {f"m{n}" for n in range(3, 6)}
        if fault == "replaced":
            expected |= {"m0", "m1", "m2"}
        assert accepted_ids(db) == expected
        assert again.terminate() == 0
    assert integrity(db) == "ok"
