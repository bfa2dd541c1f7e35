"""What every broker kind does alike, through the real daemon and the machine's brokers:
each event reaches the consumer exactly as the broker's own library reads it and the
CloudEvents SDK parses it (structured and, where the protocol has headers, binary mode), the
attempt keeps what the broker acknowledged; a broker that is not there is a failed attempt
and opens the circuit, never a crash. What differs per kind is in `test_kind_KIND.py`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.deliver.brokers import attempts, make_events, record
from tests.deliver.consumers import (
    CONSUMERS,
    assert_same_event,
    consumer_for,
    deliver_and_read,
    placed,
)
from tests.helpers import DaemonProcess, free_port, wait_until

KIND_MODES = [(kind, mode) for kind, cls in CONSUMERS.items() for mode in cls.modes]


@pytest.mark.parametrize(("kind", "mode"), KIND_MODES)
def test_every_event_reaches_the_consumer_as_the_sdk_parses_it(
    tmp_path: Path, daemon: Callable[..., DaemonProcess], kind: str, mode: str
) -> None:
    db = tmp_path / "bridge.db"
    events = make_events(3)
    keys = {"timeout": "3s"} | ({"mode": mode} if mode == "binary" else {})
    with placed(consumer_for(kind)) as consumer:
        proc, got = deliver_and_read(daemon, db, consumer, events, **keys)
    by_id = {r.id: r for r in got}
    assert len(got) == len(events) and set(by_id) == {e.id for e in events}
    for event in events:
        assert_same_event(by_id[event.id], event)
        assert by_id[event.id].where == consumer.where(event)
        (attempt,) = attempts(db, event.id)
        assert attempt.error is None and attempt.response  # what the broker acknowledged
    assert proc.terminate() == 0
    assert "Traceback" not in proc.log()


@pytest.mark.parametrize("kind", list(CONSUMERS))
def test_a_broker_that_is_not_there_fails_attempts_and_opens_the_circuit(
    tmp_path: Path, daemon: Callable[..., DaemonProcess], kind: str
) -> None:
    port = free_port()  # nothing listens there
    url = {
        "nats": f"nats://127.0.0.1:{port}",
        "amqp": f"amqp://guest:guest@127.0.0.1:{port}/",
        "redis": f"redis://:s3cret-pass@127.0.0.1:{port}/0",
        "mqtt": f"mqtt://127.0.0.1:{port}",
    }[kind]
    consumer = consumer_for(kind, url)
    db = tmp_path / "bridge.db"
    events = make_events(2)
    proc = daemon(
        f"""
        database: bridge.db
        targets:
          t1:
            {consumer.target()}
            timeout: 1s
            retry: [0.2s, 0.2s, 0.2s, 0.2s, 0.2s, 0.2s, 0.2s, 0.2s]
            circuit: {{failures: 2, cooldown: 1s}}
        """
    )
    record(db, events)
    wait_until(lambda: "circuit open" in proc.log(), timeout_s=20)
    errors = [a.error for e in events for a in attempts(db, e.id)]
    assert errors and all(e and e.startswith("cannot connect") for e in errors)
    assert "guest:guest" not in proc.log() and "s3cret-pass" not in proc.log()
    proc.wait_healthy()  # alive and answering
    assert proc.terminate() == 0
    assert "Traceback" not in proc.log()
