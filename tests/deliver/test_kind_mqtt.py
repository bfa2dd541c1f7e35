"""What the mqtt kind does beyond every broker kind (`test_broker_kinds.py`): QoS 1, the MQTT 5
content type, binary mode's user properties as plain strings, the PUBACK as the answer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.deliver.brokers import attempts, make_events
from tests.deliver.consumers import consumer_for, deliver_and_read, placed
from tests.helpers import DaemonProcess


@pytest.mark.parametrize("mode", ["structured", "binary"])
def test_a_message_is_published_at_qos_1_with_its_content_type(
    tmp_path: Path, daemon: Callable[..., DaemonProcess], mode: str
) -> None:
    db = tmp_path / "bridge.db"
    (event,) = make_events(1)
    with placed(consumer_for("mqtt")) as consumer:
        _, (got,) = deliver_and_read(daemon, db, consumer, [event], mode=mode)
    message = got.raw
    assert message.qos == 1
    structured = mode == "structured"
    assert message.properties.ContentType == (
        "application/cloudevents+json" if structured else "application/json"
    )
    if not structured:  # MQTT 5 strings: no prefix, no encoding
        assert dict(message.properties.UserProperty)["subject"] == event.subject
    (attempt,) = attempts(db, event.id)
    assert attempt.error is None and attempt.response == f"puback for {message.topic}"
