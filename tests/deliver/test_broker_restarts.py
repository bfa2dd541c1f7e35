"""A broker stopped and started in the middle of a burst loses nothing acknowledged, for every
broker kind: the real daemon delivers a burst to a broker the test started itself (Debian's
nats-server, rabbitmq-server, redis-server, mosquitto on a free port, their data kept in the
test's folder), the broker stops part-way (SIGTERM, as its service manager would stop it)
while more events are stored, and starts again on the same data. Every stored event then
reaches the consumer, read with the broker's own library: a JetStream consumer, an AMQP
consumer, `XREAD`, an MQTT subscriber's persistent session. Duplicates only as the protocol
allows: none on JetStream (its duplicate window drops a resend of the same `Nats-Msg-Id`),
at least once on the others."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.deliver.brokers import make_events, record, statuses
from tests.deliver.consumers import CONSUMERS, consumer_for, target_config
from tests.deliver.private_brokers import private_broker
from tests.helpers import DaemonProcess, wait_until

# Events stored before the stop (it comes once the first are acknowledged, the rest in
# flight or waiting), and while the broker is down.
BEFORE, DURING = 500, 100
# A minute of retries half a second apart: longer than RabbitMQ takes to boot again.
RETRIES = "[" + ", ".join(["0.5s"] * 120) + "]"


@pytest.mark.timeout(300)  # RabbitMQ boots twice
@pytest.mark.parametrize("kind", list(CONSUMERS))
def test_a_broker_restarted_mid_burst_loses_nothing_acknowledged(
    tmp_path: Path, daemon: Callable[..., DaemonProcess], kind: str
) -> None:
    library = CONSUMERS[kind].library
    pytest.importorskip(library, reason=f"{library} (the {kind} extra) is not installed")
    db = tmp_path / "bridge.db"
    before, during = make_events(BEFORE), make_events(DURING, type="orders.paid")
    stored = {e.id for e in before + during}
    with private_broker(kind, tmp_path / "broker") as broker:
        consumer = consumer_for(kind, broker.url)
        asyncio.run(consumer.prepare())
        proc = daemon(
            target_config(
                consumer,
                timeout="2s",
                retry=RETRIES,
                circuit="{failures: 5, cooldown: 0.5s, max_cooldown: 1s}",
            )
        )
        record(db, before)
        wait_until(lambda: list(statuses(db).values()).count("delivered") >= 20, timeout_s=30)
        broker.stop()
        acked_at_stop = {i for i, s in statuses(db).items() if s == "delivered"}
        record(db, during)
        # The daemon finds the broker gone: attempts fail (the circuit opens), it stays up.
        wait_until(lambda: "failed" in statuses(db).values(), timeout_s=30)
        proc.wait_healthy()
        assert all(statuses(db)[e.id] != "delivered" for e in during)

        broker.start()
        wait_until(lambda: set(statuses(db).values()) == {"delivered"}, timeout_s=180)
        got = Counter(r.id for r in asyncio.run(consumer.read(stored, timeout_s=60)))
    # Every event stored reached the consumer; in particular every one acknowledged before
    # the stop survived it.
    missing = stored - set(got)
    assert missing == set(), (
        f"{len(missing)} of {len(stored)} missing: {len(missing & acked_at_stop)} acked before "
        f"the stop, {len(missing & {e.id for e in during})} stored while it was down"
    )
    assert acked_at_stop and acked_at_stop <= set(got)
    assert set(got) <= stored
    if kind == "nats":
        assert [i for i, n in got.items() if n > 1] == []
    assert proc.terminate() == 0
    assert "Traceback" not in proc.log()
