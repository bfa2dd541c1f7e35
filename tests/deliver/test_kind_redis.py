"""What the redis kind does beyond every broker kind (`test_broker_kinds.py`): the `id`
field, the entry id kept as the attempt's answer, `maxlen`, and a private server stopped
(the circuit opens) and started."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.deliver.brokers import attempts, make_events, record, require, statuses
from tests.deliver.consumers import consumer_for, deliver_and_read, placed
from tests.helpers import DaemonProcess, free_port, wait_until

redis = pytest.importorskip("redis", reason="redis-py (the redis extra) is not installed")

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def stream_prefix() -> Iterator[str]:
    """A fresh key prefix on the machine's Redis; every key under it deleted at the end."""
    require("Redis", 6379)
    prefix = f"bridge-test:{uuid.uuid4().hex[:10]}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
    finally:
        client.close()


def entries(stream: str, url: str = REDIS_URL) -> list[tuple[str, dict[str, str]]]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return [(entry_id, fields) for entry_id, fields in client.xrange(stream)]
    finally:
        client.close()


def test_each_entry_has_the_event_id_and_the_attempt_keeps_its_entry_id(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    db = tmp_path / "bridge.db"
    events = make_events(2)
    with placed(consumer_for("redis")) as consumer:
        _, got = deliver_and_read(daemon, db, consumer, events)
    for received in got:
        entry_id, fields = received.raw
        assert fields[b"id"].decode() == received.id  # for a consumer dropping duplicates
        (attempt,) = attempts(db, received.id)
        # Recorded after the XADD: the entry id Redis answered with.
        assert attempt.response == f"stream {received.where} entry {entry_id.decode()}"


def test_maxlen_trims_the_stream(
    tmp_path: Path, daemon: Callable[..., DaemonProcess], stream_prefix: str
) -> None:
    db = tmp_path / "bridge.db"
    events = make_events(250)
    stream = f"{stream_prefix}:trimmed"
    daemon(
        f"""
        database: bridge.db
        targets:
          t1:
            redis: {{url: "{REDIS_URL}", stream: "{stream}", maxlen: 10}}
            concurrency: 1
        """
    )
    record(db, events)
    wait_until(lambda: set(statuses(db).values()) == {"delivered"}, timeout_s=60)
    # `MAXLEN ~`: Redis trims whole nodes (100 entries by default), never below 10.
    assert 10 <= len(entries(stream)) < 250


@pytest.fixture
def redis_server_bin() -> str:
    found = shutil.which("redis-server")
    if found is None:
        pytest.skip("the redis-server binary is not installed")
    return found


def _private_redis(binary: str, port: int, folder: Path) -> subprocess.Popen[bytes]:
    folder.mkdir(exist_ok=True)
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    return subprocess.Popen(
        [*args, "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _pings(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def test_a_server_that_stops_fails_attempts_opens_the_circuit_then_delivers_once_back(
    tmp_path: Path, daemon: Callable[..., DaemonProcess], redis_server_bin: str
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    db = tmp_path / "bridge.db"
    server = _private_redis(redis_server_bin, port, tmp_path / "redis")
    try:
        wait_until(lambda: _pings(url), timeout_s=10)
        first, *rest = make_events(3)
        proc = daemon(
            f"""
            database: bridge.db
            targets:
              t1:
                redis: {{url: "{url}", stream: "orders"}}
                timeout: 1s
                retry: [0.2s, 0.2s, 0.2s, 0.2s, 0.2s, 0.2s, 0.2s, 0.2s, 0.2s, 0.2s, 0.2s]
                circuit: {{failures: 2, cooldown: 1s, max_cooldown: 2s}}
            """
        )
        record(db, [first])
        wait_until(lambda: statuses(db).get(first.id) == "delivered", timeout_s=20)

        server.terminate()
        server.wait(timeout=10)
        record(db, rest)
        wait_until(lambda: "circuit open" in proc.log(), timeout_s=20)
        errors = [a.error for e in rest for a in attempts(db, e.id)]
        assert errors and all(e for e in errors)
        assert all(statuses(db)[e.id] in ("failed", "pending") for e in rest)
        proc.wait_healthy()  # alive and answering

        server = _private_redis(redis_server_bin, port, tmp_path / "redis")
        wait_until(lambda: set(statuses(db).values()) == {"delivered"}, timeout_s=30)
        # The server kept nothing (no persistence): the stream holds the two sent after.
        assert {fields["id"] for _, fields in entries("orders", url)} == {e.id for e in rest}
        assert proc.terminate() == 0
        assert "Traceback" not in proc.log()
    finally:
        server.terminate()
        server.wait(timeout=10)
