"""The mqtt kind through the real daemon: QoS 1 publishes read back by aiomqtt's own
subscriber, delivered on the PUBACK, binary mode's MQTT 5 user properties, and a broker
that is not there."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.events import Event
from tests.deliver.brokers import attempts, make_events, record, require, statuses
from tests.helpers import DaemonProcess, free_port, wait_until

aiomqtt = pytest.importorskip("aiomqtt", reason="aiomqtt (the mqtt extra) is not installed")

MQTT_URL = "mqtt://127.0.0.1:1883"


def publish_and_read(db: Path, events: list[Event], topic_filter: str) -> list[Any]:
    """Subscribe to `topic_filter` (aiomqtt, MQTT 5), record `events` for the daemon, and
    return the messages it publishes, one per event."""

    async def go() -> list[Any]:
        client = aiomqtt.Client("127.0.0.1", 1883, protocol=aiomqtt.ProtocolVersion.V5)
        async with client:
            await client.subscribe(topic_filter, qos=1)
            await asyncio.to_thread(record, db, events)
            got: list[Any] = []
            async with asyncio.timeout(20):
                async for message in client.messages:
                    got.append(message)
                    if len(got) == len(events):
                        break
            return got

    return asyncio.run(go())


def test_events_are_published_and_delivered_on_the_puback(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    require("Mosquitto", 1883)
    run = uuid.uuid4().hex[:10]
    db = tmp_path / "bridge.db"
    events = make_events(3)
    proc = daemon(
        f"""
        database: bridge.db
        targets:
          t1:
            mqtt: {{url: "{MQTT_URL}", topic: "bt/{run}/{{source}}/{{subject}}", qos: 1}}
            timeout: 3s
        """
    )
    messages = publish_and_read(db, events, f"bt/{run}/#")
    wait_until(lambda: set(statuses(db).values()) == {"delivered"}, timeout_s=20)
    by_id = {json.loads(m.payload)["id"]: m for m in messages}
    assert set(by_id) == {e.id for e in events}
    for event in events:
        message = by_id[event.id]
        assert str(message.topic) == f"bt/{run}/orders/{event.subject}"
        assert message.qos == 1
        assert message.properties.ContentType == "application/cloudevents+json"
        (attempt,) = attempts(db, event.id)
        assert attempt.error is None and attempt.response == f"puback for {message.topic}"
    assert proc.terminate() == 0
    assert "Traceback" not in proc.log()


def test_binary_mode_sends_attributes_as_user_properties(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    require("Mosquitto", 1883)
    run = uuid.uuid4().hex[:10]
    db = tmp_path / "bridge.db"
    (event,) = make_events(1)
    daemon(
        f"""
        database: bridge.db
        targets:
          t1:
            mqtt: {{url: "{MQTT_URL}", topic: "bt/{run}/orders"}}
            mode: binary
        """
    )
    (message,) = publish_and_read(db, [event], f"bt/{run}/#")
    assert json.loads(message.payload) == event.data
    assert message.properties.ContentType == "application/json"
    user = dict(message.properties.UserProperty)
    assert user["id"] == event.id
    assert user["type"] == "orders.created"
    assert user["source"] == "orders"
    assert user["specversion"] == "1.0"
    assert user["subject"] == event.subject  # MQTT 5 strings: no encoding needed
    wait_until(lambda: statuses(db)[event.id] == "delivered", timeout_s=20)


def test_a_broker_that_is_not_there_fails_attempts_and_opens_the_circuit(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    db = tmp_path / "bridge.db"
    events = make_events(2)
    proc = daemon(
        f"""
        database: bridge.db
        targets:
          t1:
            mqtt: {{url: "mqtt://127.0.0.1:{free_port()}", topic: orders}}
            timeout: 1s
            retry: [0.2s, 0.2s, 0.2s, 0.2s, 0.2s, 0.2s, 0.2s, 0.2s]
            circuit: {{failures: 2, cooldown: 1s}}
        """
    )
    record(db, events)
    wait_until(lambda: "circuit open" in proc.log(), timeout_s=20)
    errors = [a.error for e in events for a in attempts(db, e.id)]
    assert errors and all(e and e.startswith("cannot connect") for e in errors)
    proc.wait_healthy()
    assert proc.terminate() == 0
    assert "Traceback" not in proc.log()
