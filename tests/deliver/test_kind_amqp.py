"""What the amqp kind does beyond every broker kind (`test_broker_kinds.py`): persistent
messages with `message_id` and `cloudEvents_` headers, an unroutable message a failed attempt
(mandatory), an exchange that does not exist."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deliver.brokers import attempts, make_events, record, require, statuses
from tests.deliver.consumers import consumer_for, deliver_and_read, placed
from tests.helpers import DaemonProcess, wait_until

aio_pika = pytest.importorskip("aio_pika", reason="aio-pika (the amqp extra) is not installed")

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


async def _declare(exchange: str, queue: str | None, key: str) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        ex = await channel.declare_exchange(
            exchange, aio_pika.ExchangeType.TOPIC, auto_delete=False
        )
        if queue is not None:
            q = await channel.declare_queue(queue, durable=True)
            await q.bind(ex, key)


async def _cleanup(exchange: str, queue: str) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(queue)
        await channel.exchange_delete(exchange)


def read_back(queue: str, n: int) -> list[Any]:
    """`n` messages from `queue`, through aio-pika's consumer (each acked)."""

    async def go() -> list[Any]:
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            q = await channel.get_queue(queue)
            out: list[Any] = []
            async with q.iterator(timeout=5) as messages:
                async for message in messages:
                    await message.ack()
                    out.append(message)
                    if len(out) == n:
                        break
            return out

    return asyncio.run(go())


@pytest.fixture
def exchange() -> Iterator[tuple[str, str]]:
    """A topic exchange and a durable queue bound to `orders.#`: (exchange, queue)."""
    require("RabbitMQ", 5672)
    run = uuid.uuid4().hex[:10]
    name, queue = f"bridge-test-{run}", f"bridge-test-{run}-q"
    asyncio.run(_declare(name, queue, "orders.#"))
    yield name, queue
    asyncio.run(_cleanup(name, queue))


@pytest.mark.parametrize("mode", ["structured", "binary"])
def test_a_message_is_persistent_with_the_event_id_as_message_id(
    tmp_path: Path, daemon: Callable[..., DaemonProcess], mode: str
) -> None:
    db = tmp_path / "bridge.db"
    (event,) = make_events(1)
    with placed(consumer_for("amqp")) as consumer:
        _, (got,) = deliver_and_read(daemon, db, consumer, [event], mode=mode)
    message = got.raw
    assert message.message_id == event.id
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    if mode == "binary":  # the AMQP binding's prefix, the attributes' values as they are
        assert message.headers["cloudEvents_id"] == event.id
        assert message.headers["cloudEvents_subject"] == event.subject
    (attempt,) = attempts(db, event.id)
    assert attempt.response == f"confirmed by {consumer.exchange}"  # AmqpConsumer


def test_an_unroutable_message_is_a_failed_attempt_not_a_delivery(
    tmp_path: Path, daemon: Callable[..., DaemonProcess], exchange: tuple[str, str]
) -> None:
    name, _ = exchange
    db = tmp_path / "bridge.db"
    (event,) = make_events(1)
    daemon(
        f"""
        database: bridge.db
        targets:
          t1:
            amqp: {{url: "{AMQP_URL}", exchange: {name}, routing_key: "nobody.listens"}}
            retry: [0.2s, 0.2s, 0.2s, 0.2s, 0.2s, 0.2s]
            circuit: {{failures: 100}}
        """
    )
    record(db, [event])
    wait_until(lambda: len(attempts(db, event.id)) >= 2, timeout_s=20)
    tried = attempts(db, event.id)
    assert all(a.error and a.error.startswith("unroutable") for a in tried)
    assert statuses(db)[event.id] in ("failed", "dead")


def test_a_missing_exchange_is_a_failed_attempt_and_the_channel_comes_back(
    tmp_path: Path, daemon: Callable[..., DaemonProcess], exchange: tuple[str, str]
) -> None:
    name, queue = exchange
    db = tmp_path / "bridge.db"
    first, second = make_events(2)
    daemon(
        f"""
        database: bridge.db
        targets:
          missing:
            amqp: {{url: "{AMQP_URL}", exchange: {name}-gone, routing_key: orders}}
            retry: [0.2s, 0.2s, 0.2s]
            circuit: {{failures: 100}}
          t1:
            amqp: {{url: "{AMQP_URL}", exchange: {name}, routing_key: orders}}
        """
    )
    record(db, [first], target="missing")
    wait_until(lambda: len(attempts(db, first.id, "missing")) >= 2, timeout_s=20)
    assert all("no exchange" in (a.error or "") for a in attempts(db, first.id, "missing"))
    # The shared connection's channel was closed by the broker; the next publish reopens it.
    record(db, [second])
    wait_until(lambda: statuses(db).get(second.id) == "delivered", timeout_s=20)
    assert [m.message_id for m in read_back(queue, 1)] == [second.id]
