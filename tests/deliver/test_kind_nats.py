"""What the nats kind does beyond every broker kind (`test_broker_kinds.py`): `Nats-Msg-Id`
and the `ce-` headers, a subject no stream stores, the duplicate window dropping a
`bridge redeliver`, and a server that is down (then up)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.deliver.brokers import attempts, make_events, record, require, statuses
from tests.deliver.consumers import consumer_for, deliver_and_read, placed
from tests.deliver.private_brokers import PrivateBroker
from tests.helpers import DaemonProcess, run_cli, wait_until

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


def stream_messages(name: str, url: str = NATS_URL) -> int:
    async def go() -> int:
        nc = await nats.connect(url)
        try:
            info = await nc.jetstream().stream_info(name)
            return int(info.state.messages)
        finally:
            await nc.close()

    return asyncio.run(go())


def test_a_message_carries_nats_msg_id_and_percent_encoded_ce_headers(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    db = tmp_path / "bridge.db"
    (event,) = make_events(1)
    with placed(consumer_for("nats")) as consumer:
        _, (got,) = deliver_and_read(daemon, db, consumer, [event], mode="binary")
    headers = got.raw.headers
    assert headers["Nats-Msg-Id"] == event.id  # what the duplicate window keys on
    # Header values are percent-encoded as in the HTTP binding (the space of the subject).
    assert headers["ce-subject"] == event.subject.replace(" ", "%20")
    assert headers["ce-id"] == event.id and headers["content-type"] == "application/json"
    (attempt,) = attempts(db, event.id)
    assert attempt.response is not None
    assert attempt.response.startswith(f"stream {consumer.stream} seq ")  # NatsConsumer


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
    proc = daemon(
        f"""
        database: bridge.db
        targets:
          t1:
            nats: {{url: "{NATS_URL}", subject: "{prefix}.orders"}}
        """
    )
    record(db, [event])
    wait_until(lambda: statuses(db)[event.id] == "delivered", timeout_s=20)
    # An operator asks for it again, beside the running daemon.
    done = run_cli("redeliver", "-c", str(proc.config_path), event.id)
    assert done.returncode == 0, done.stderr
    wait_until(lambda: len(attempts(db, event.id)) == 2, timeout_s=20)
    wait_until(lambda: statuses(db)[event.id] == "delivered", timeout_s=20)
    second = attempts(db, event.id)[1]
    assert second.response is not None and second.response.endswith("(duplicate: already stored)")
    # Same Nats-Msg-Id: JetStream stored it once.
    assert stream_messages(name) == 1


def test_a_server_that_is_down_fails_attempts_opens_the_circuit_then_delivers_once_up(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    server = PrivateBroker("nats", tmp_path / "nats")  # not started yet
    db = tmp_path / "bridge.db"
    events = make_events(2)
    proc = daemon(
        f"""
        database: bridge.db
        targets:
          t1:
            nats: {{url: "{server.url}", subject: "down.orders"}}
            timeout: 1s
            retry: [0.2s, 0.2s, 0.2s, 0.2s, 0.2s, 0.2s, 0.2s, 0.2s, 0.2s, 0.2s, 0.2s, 0.2s]
            circuit: {{failures: 2, cooldown: 1s, max_cooldown: 2s}}
        """
    )
    record(db, events)
    wait_until(lambda: "circuit open" in proc.log(), timeout_s=20)
    assert set(statuses(db).values()) <= {"failed", "pending"}
    proc.wait_healthy()  # the daemon is alive and answering
    try:
        server.start()
        asyncio.run(_add_stream(server.url, "DOWN", "down"))
        wait_until(lambda: set(statuses(db).values()) == {"delivered"}, timeout_s=30)
        assert stream_messages("DOWN", server.url) == 2
    finally:
        server.stop()
    assert proc.terminate() == 0
    assert "Traceback" not in proc.log()
