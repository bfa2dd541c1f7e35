"""The nats kind through the real daemon: JetStream publishes read back by nats-py's own
subscriber, attempts delivered only on the stream's ack, the duplicate window, binary mode,
and a server that is down (then up)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deliver.brokers import (
    attempts,
    make_events,
    record,
    redeliver,
    require,
    statuses,
)
from tests.helpers import DaemonProcess, free_port, wait_until

nats = pytest.importorskip("nats", reason="nats-py (the nats extra) is not installed")

NATS_URL = "nats://127.0.0.1:4222"


@pytest.fixture
def stream() -> Iterator[tuple[str, str]]:
    """A fresh JetStream stream on the machine's NATS: (its name, its subject prefix)."""
    require("NATS", 4222)
    run = uuid.uuid4().hex[:10]
    name, prefix = f"BRIDGE_{run}", f"bt.{run}"
    asyncio.run(_add_stream(NATS_URL, name, prefix))
    yield name, prefix
    asyncio.run(_delete_stream(NATS_URL, name))


async def _add_stream(url: str, name: str, prefix: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().add_stream(name=name, subjects=[f"{prefix}.>"], duplicate_window=120)
    finally:
        await nc.close()


async def _delete_stream(url: str, name: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()


def read_back(name: str, prefix: str, n: int, url: str = NATS_URL) -> list[Any]:
    """The stream's messages, fetched by an ephemeral pull consumer (nats-py's own)."""

    async def go() -> list[Any]:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            sub = await js.pull_subscribe(f"{prefix}.>", stream=name)
            msgs = await sub.fetch(n, timeout=5)
            for msg in msgs:
                await msg.ack()
            return msgs
        finally:
            await nc.close()

    return asyncio.run(go())


def stream_messages(name: str, url: str = NATS_URL) -> int:
    async def go() -> int:
        nc = await nats.connect(url)
        try:
            info = await nc.jetstream().stream_info(name)
            return int(info.state.messages)
        finally:
            await nc.close()

    return asyncio.run(go())


def test_events_are_published_to_jetstream_and_delivered_on_its_ack(
    tmp_path: Path, daemon: Callable[..., DaemonProcess], stream: tuple[str, str]
) -> None:
    name, prefix = stream
    db = tmp_path / "bridge.db"
    events = make_events(3)
    proc = daemon(
        f"""
        database: bridge.db
        targets:
          t1:
            nats: {{url: "{NATS_URL}", subject: "{prefix}.{{type}}.{{subject}}", stream: {name}}}
            timeout: 2s
        """
    )
    record(db, events)
    wait_until(lambda: set(statuses(db).values()) == {"delivered"}, timeout_s=20)

    msgs = read_back(name, prefix, 3)
    by_id = {m.headers["Nats-Msg-Id"]: m for m in msgs}
    assert set(by_id) == {e.id for e in events}
    for event in events:
        msg = by_id[event.id]
        # `{type}` keeps its dots as tokens; the subject's space is not allowed: `_`.
        assert msg.subject == f"{prefix}.orders.created.{event.subject.replace(' ', '_')}"
        assert msg.headers["content-type"] == "application/cloudevents+json"
        body = json.loads(msg.data)
        assert body["id"] == event.id and body["data"] == event.data
        (attempt,) = attempts(db, event.id)
        # The attempt keeps what the stream acknowledged.
        assert attempt.error is None
        assert attempt.response is not None and attempt.response.startswith(f"stream {name} seq ")
    assert proc.terminate() == 0
    assert "Traceback" not in proc.log()


def test_a_subject_no_stream_stores_is_a_failed_attempt_until_one_does(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    require("NATS", 4222)
    run = uuid.uuid4().hex[:10]
    name, prefix = f"BRIDGE_{run}", f"bt.{run}"
    db = tmp_path / "bridge.db"
    (event,) = make_events(1)
    daemon(
        f"""
        database: bridge.db
        targets:
          t1:
            nats: {{url: "{NATS_URL}", subject: "{prefix}.x"}}
            timeout: 1s
            retry: [0.3s, 0.3s, 0.3s, 0.3s, 0.3s, 0.3s, 0.3s, 0.3s, 0.3s, 0.3s]
            circuit: {{failures: 100}}
        """
    )
    record(db, [event])
    # No stream takes the subject: nobody acknowledges, so the attempt is not a delivery.
    wait_until(lambda: len(attempts(db, event.id)) >= 2, timeout_s=20)
    assert statuses(db)[event.id] == "failed"
    assert all(a.error for a in attempts(db, event.id))
    asyncio.run(_add_stream(NATS_URL, name, prefix))
    try:
        wait_until(lambda: statuses(db)[event.id] == "delivered", timeout_s=20)
        assert stream_messages(name) == 1
    finally:
        asyncio.run(_delete_stream(NATS_URL, name))


def test_a_redelivery_is_dropped_by_the_duplicate_window(
    tmp_path: Path, daemon: Callable[..., DaemonProcess], stream: tuple[str, str]
) -> None:
    name, prefix = stream
    db = tmp_path / "bridge.db"
    (event,) = make_events(1)
    daemon(
        f"""
        database: bridge.db
        targets:
          t1:
            nats: {{url: "{NATS_URL}", subject: "{prefix}.orders"}}
        """
    )
    record(db, [event])
    wait_until(lambda: statuses(db)[event.id] == "delivered", timeout_s=20)
    redeliver(db, [event.id])
    wait_until(lambda: len(attempts(db, event.id)) == 2, timeout_s=20)
    wait_until(lambda: statuses(db)[event.id] == "delivered", timeout_s=20)
    second = attempts(db, event.id)[1]
    assert second.response is not None and "duplicate" in second.response
    # Same Nats-Msg-Id: JetStream stored it once.
    assert stream_messages(name) == 1


def test_binary_mode_sends_data_as_the_payload_and_attributes_as_ce_headers(
    tmp_path: Path, daemon: Callable[..., DaemonProcess], stream: tuple[str, str]
) -> None:
    name, prefix = stream
    db = tmp_path / "bridge.db"
    (event,) = make_events(1)
    daemon(
        f"""
        database: bridge.db
        targets:
          t1:
            nats: {{url: "{NATS_URL}", subject: "{prefix}.orders"}}
            mode: binary
        """
    )
    record(db, [event])
    wait_until(lambda: statuses(db)[event.id] == "delivered", timeout_s=20)
    (msg,) = read_back(name, prefix, 1)
    assert json.loads(msg.data) == event.data
    assert msg.headers["content-type"] == "application/json"
    assert msg.headers["ce-specversion"] == "1.0"
    assert msg.headers["ce-id"] == event.id
    assert msg.headers["ce-type"] == "orders.created"
    assert msg.headers["ce-source"] == "orders"
    # Header values are percent-encoded as in the HTTP binding (the space of the subject).
    assert msg.headers["ce-subject"] == event.subject.replace(" ", "%20")
    assert msg.headers["Nats-Msg-Id"] == event.id


@pytest.fixture
def nats_server_bin() -> str:
    found = shutil.which("nats-server")
    if found is None:
        pytest.skip("the nats-server binary is not installed")
    return found


def test_a_server_that_is_down_fails_attempts_opens_the_circuit_then_delivers_once_up(
    tmp_path: Path, daemon: Callable[..., DaemonProcess], nats_server_bin: str
) -> None:
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    db = tmp_path / "bridge.db"
    events = make_events(2)
    proc = daemon(
        f"""
        database: bridge.db
        targets:
          t1:
            nats: {{url: "{url}", subject: "down.orders"}}
            timeout: 1s
            retry: [0.2s, 0.2s, 0.2s, 0.2s, 0.2s, 0.2s, 0.2s, 0.2s, 0.2s, 0.2s, 0.2s, 0.2s]
            circuit: {{failures: 2, cooldown: 1s, max_cooldown: 2s}}
        """
    )
    record(db, events)
    wait_until(lambda: "circuit open" in proc.log(), timeout_s=20)
    errors = [a.error for e in events for a in attempts(db, e.id)]
    assert errors and all(e and e.startswith("cannot connect") for e in errors)
    assert set(statuses(db).values()) <= {"failed", "pending"}
    proc.wait_healthy()  # the daemon is alive and answering

    server = subprocess.Popen(
        [nats_server_bin, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(tmp_path / "js")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _can_connect(url), timeout_s=10)
        asyncio.run(_add_stream(url, "DOWN", "down"))
        wait_until(lambda: set(statuses(db).values()) == {"delivered"}, timeout_s=30)
        assert stream_messages("DOWN", url) == 2
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert proc.terminate() == 0
    assert "Traceback" not in proc.log()


def _can_connect(url: str) -> bool:
    async def go() -> bool:
        try:
            nc = await nats.connect(url, connect_timeout=0.5, max_reconnect_attempts=0)
        except Exception:
            return False
        await nc.close()
        return True

    return asyncio.run(go())
