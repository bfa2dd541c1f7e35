"""The consumer side of each broker kind, as its users would write it: a place in the broker
for the test's messages (a JetStream stream, a RabbitMQ exchange and durable queue, a Redis
key prefix, an MQTT persistent session), the target that publishes there, and reading the
messages back with the broker's own client library (a JetStream pull consumer, an aio-pika
consumer, `XREAD`, an aiomqtt subscriber).

Each message read is parsed by the official CloudEvents SDK (`cloudevents`) as the binding
says: its AMQP binding (`cloudEvents_` application properties) for RabbitMQ, its HTTP binding
for NATS headers (the NATS binding's `ce-` headers are HTTP's), its JSON event format for
structured messages; MQTT 5 has no binding in the SDK, so its user properties are read as
the MQTT binding says (one per attribute, named for it, `Content Type` as `datacontenttype`)
into the SDK's `CloudEvent`, whose validation runs.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from bridge.events import Event
from tests.deliver.brokers import record, require, statuses
from tests.helpers import DaemonProcess, wait_until

STRUCTURED = "application/cloudevents+json"


@dataclass
class Received:
    """One message a consumer read: the CloudEvent the SDK parsed, where it was published
    (subject, routing key, stream or topic), and the library's own message."""

    cloudevent: Any  # cloudevents.core.base.BaseCloudEvent
    where: str
    raw: Any

    @property
    def id(self) -> str:
        return str(self.cloudevent.get_id())


def _sdk() -> Any:
    return pytest.importorskip("cloudevents.core.v1.event", reason="the cloudevents SDK")


def parse_structured(body: bytes) -> Any:
    """A structured-mode message's body through the SDK's JSON event format."""
    _sdk()
    from cloudevents.core.formats.json import JSONFormat

    return JSONFormat().read(None, body)


def expected_attributes(event: Event) -> dict[str, Any]:
    """What the SDK should find on a message delivering `event` (`data` aside)."""
    ce = event.to_cloudevent()
    ce.pop("data", None)
    return ce


def assert_same_event(received: Received, event: Event) -> None:
    """The SDK's CloudEvent is `event`: every attribute and the data."""
    got = received.cloudevent.get_attributes()
    want = expected_attributes(event)
    assert {k: v for k, v in got.items() if k in want} == want
    # The SDK gives an event without `time` the time it parsed it (the bridge sends none);
    # MQTT's user properties carry the trace context as the Distributed Tracing extension's
    # attributes.
    assert set(got) - set(want) <= {"time", "traceparent", "tracestate"}
    assert received.cloudevent.get_data() == event.data


class Consumer:
    """A place for one test's messages in one broker, and reading them back."""

    kind: ClassVar[str]
    service: ClassVar[str]  # the name a skip gives
    port: ClassVar[int]  # the machine's shared broker
    library: ClassVar[str]
    modes: ClassVar[tuple[str, ...]] = ("structured", "binary")

    def __init__(self, url: str) -> None:
        self.url = url
        self.run = uuid.uuid4().hex[:10]

    def target(self) -> str:
        """The target's kind as a YAML flow mapping (`nats: {...}`)."""
        raise NotImplementedError

    def where(self, event: Event) -> str:
        """The subject, routing key, stream or topic `target()` gives `event`."""
        raise NotImplementedError

    async def prepare(self) -> None:
        """Create the place (stream, queue, session) before anything is published."""

    async def read(self, ids: set[str], timeout_s: float = 20.0) -> list[Received]:
        """Every message until each of `ids` was seen (duplicates kept), within `timeout_s`."""
        raise NotImplementedError

    async def cleanup(self) -> None:
        """Remove the place (on a shared broker)."""


def _seen_all(got: list[Received], ids: set[str]) -> bool:
    return ids <= {r.id for r in got}


class NatsConsumer(Consumer):
    kind, service, port, library = "nats", "NATS", 4222, "nats"

    @property
    def stream(self) -> str:
        return f"BRIDGE_{self.run}"

    def target(self) -> str:
        subject = f"bt.{self.run}.{{type}}.{{subject}}"
        return f'nats: {{url: "{self.url}", subject: "{subject}", stream: {self.stream}}}'

    def where(self, event: Event) -> str:
        return f"bt.{self.run}.{event.type}.{(event.subject or '_').replace(' ', '_')}"

    async def _connect(self) -> Any:
        import nats

        return await nats.connect(self.url, max_reconnect_attempts=0)

    async def prepare(self) -> None:
        from nats.js.api import StorageType

        nc = await self._connect()
        try:
            await nc.jetstream().add_stream(
                name=self.stream,
                subjects=[f"bt.{self.run}.>"],
                duplicate_window=120,
                storage=StorageType.FILE,
            )
        finally:
            await nc.close()

    async def read(self, ids: set[str], timeout_s: float = 20.0) -> list[Received]:
        import nats.errors

        _sdk()
        from cloudevents.core.bindings import http
        from cloudevents.core.formats.json import JSONFormat

        nc = await self._connect()
        got: list[Received] = []
        try:
            sub = await nc.jetstream().pull_subscribe(f"bt.{self.run}.>", stream=self.stream)
            deadline = time.monotonic() + timeout_s
            while not _seen_all(got, ids) and time.monotonic() < deadline:
                try:
                    msgs = await sub.fetch(100, timeout=1)
                except nats.errors.TimeoutError:
                    continue
                for msg in msgs:
                    await msg.ack()
                    headers = dict(msg.headers or {})
                    message = http.HTTPMessage(headers=headers, body=msg.data)
                    got.append(Received(http.from_http(message, JSONFormat()), msg.subject, msg))
        finally:
            await nc.close()
        return got

    async def cleanup(self) -> None:
        nc = await self._connect()
        try:
            await nc.jetstream().delete_stream(self.stream)
        finally:
            await nc.close()


class AmqpConsumer(Consumer):
    kind, service, port, library = "amqp", "RabbitMQ", 5672, "aio_pika"

    @property
    def exchange(self) -> str:
        return f"bridge-test-{self.run}"

    def target(self) -> str:
        return f'amqp: {{url: "{self.url}", exchange: {self.exchange}, routing_key: "{{type}}"}}'

    def where(self, event: Event) -> str:
        return event.type

    async def _connect(self) -> Any:
        import aio_pika

        deadline = time.monotonic() + 30
        while True:  # a RabbitMQ that has just started may listen before it accepts logins
            try:
                return await aio_pika.connect(self.url, timeout=5)
            except (TimeoutError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def prepare(self) -> None:
        import aio_pika

        async with await self._connect() as connection:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(
                self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue(f"{self.exchange}-q", durable=True)
            await queue.bind(exchange, "#")

    async def read(self, ids: set[str], timeout_s: float = 20.0) -> list[Received]:
        _sdk()
        from cloudevents.core.bindings import amqp
        from cloudevents.core.formats.json import JSONFormat

        got: list[Received] = []
        async with await self._connect() as connection:
            channel = await connection.channel()
            queue = await channel.get_queue(f"{self.exchange}-q")
            deadline = time.monotonic() + timeout_s
            while not _seen_all(got, ids) and time.monotonic() < deadline:
                message = await queue.get(fail=False, timeout=5)
                if message is None:
                    await asyncio.sleep(0.05)
                    continue
                await message.ack()
                # AMQP 0-9-1's headers table carries what AMQP 1.0 calls application properties.
                amqp_message = amqp.AMQPMessage(
                    properties={"content-type": message.content_type},
                    application_properties=dict(message.headers or {}),
                    application_data=message.body,
                )
                parsed = amqp.from_amqp(amqp_message, JSONFormat())
                got.append(Received(parsed, message.routing_key or "", message))
        return got

    async def cleanup(self) -> None:
        async with await self._connect() as connection:
            channel = await connection.channel()
            await channel.queue_delete(f"{self.exchange}-q")
            await channel.exchange_delete(self.exchange)


class RedisConsumer(Consumer):
    kind, service, port, library = "redis", "Redis", 6379, "redis"
    modes = ("structured",)  # Redis streams have no headers

    def target(self) -> str:
        return f'redis: {{url: "{self.url}", stream: "bridge-test:{self.run}:{{source}}"}}'

    def where(self, event: Event) -> str:
        return f"bridge-test:{self.run}:{event.source}"

    async def read(self, ids: set[str], timeout_s: float = 20.0) -> list[Received]:
        import redis.asyncio as aioredis

        got: list[Received] = []
        client = aioredis.Redis.from_url(self.url)
        try:
            keys = [k async for k in client.scan_iter(f"bridge-test:{self.run}:*")]
            last = dict.fromkeys(keys, "0")
            deadline = time.monotonic() + timeout_s
            while not _seen_all(got, ids) and time.monotonic() < deadline:
                keys = [k async for k in client.scan_iter(f"bridge-test:{self.run}:*")]
                for key in keys:
                    last.setdefault(key, "0")
                answer = await client.xread(last, count=500, block=200) if last else []
                for key, entries in answer:
                    for entry_id, fields in entries:
                        last[key] = entry_id
                        assert fields[b"content-type"].decode() == STRUCTURED
                        parsed = parse_structured(fields[b"event"])
                        assert fields[b"id"].decode() == parsed.get_id()
                        got.append(Received(parsed, key.decode(), (entry_id, fields)))
                if not last:
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()
        return got

    async def cleanup(self) -> None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self.url)
        try:
            async for key in client.scan_iter(f"bridge-test:{self.run}:*"):
                await client.delete(key)
        finally:
            await client.aclose()


class MqttConsumer(Consumer):
    """A persistent MQTT 5 session subscribed at QoS 1 before anything is published: the
    broker queues the messages for it while it is away, as it does for a real consumer."""

    kind, service, port, library = "mqtt", "Mosquitto", 1883, "aiomqtt"

    def target(self) -> str:
        return f'mqtt: {{url: "{self.url}", topic: "bt/{self.run}/{{source}}/{{subject}}"}}'

    def where(self, event: Event) -> str:
        return f"bt/{self.run}/{event.source}/{event.subject or '_'}"

    def _client(self, *, keep: bool) -> Any:
        import aiomqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        host, port = self.url.removeprefix("mqtt://").split(":")
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600 if keep else 0
        return aiomqtt.Client(
            host,
            int(port),
            identifier=f"bridge-test-{self.run}",
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=properties,
        )

    async def prepare(self) -> None:
        async with self._client(keep=True) as client:
            await client.subscribe(f"bt/{self.run}/#", qos=1)

    async def read(self, ids: set[str], timeout_s: float = 20.0) -> list[Received]:
        got: list[Received] = []
        async with self._client(keep=True) as client:
            # The session's subscription delivers what was queued as soon as it resumes.
            try:
                async with asyncio.timeout(timeout_s):
                    async for message in client.messages:
                        got.append(Received(parse_mqtt(message), str(message.topic), message))
                        if _seen_all(got, ids):
                            break
            except TimeoutError:
                pass
        return got

    async def cleanup(self) -> None:
        async with self._client(keep=False):
            pass  # the session ends with this connection


def parse_mqtt(message: Any) -> Any:
    """An MQTT 5 message as the CloudEvents MQTT binding says, into the SDK's CloudEvent:
    structured when its content type is `application/cloudevents+json`, else binary (each
    user property an attribute, the content type `datacontenttype`, the payload `data`)."""
    sdk = _sdk()
    content_type = getattr(message.properties, "ContentType", None)
    if content_type == STRUCTURED:
        return parse_structured(message.payload)
    attributes: dict[str, Any] = dict(getattr(message.properties, "UserProperty", []))
    if content_type is not None:
        attributes["datacontenttype"] = content_type
    data = json.loads(message.payload) if content_type == "application/json" else message.payload
    return sdk.CloudEvent(attributes, data)


CONSUMERS: dict[str, type[Consumer]] = {
    c.kind: c for c in (NatsConsumer, AmqpConsumer, RedisConsumer, MqttConsumer)
}

SHARED_URLS = {
    "nats": "nats://127.0.0.1:4222",
    "amqp": "amqp://guest:guest@127.0.0.1:5672/",
    "redis": "redis://127.0.0.1:6379/0",
    "mqtt": "mqtt://127.0.0.1:1883",
}


def consumer_for(kind: str, url: str | None = None) -> Consumer:
    """The consumer of `kind` on the machine's shared broker (or at `url`); skip, naming
    it, when the broker's library is not installed or the shared broker is not reachable."""
    cls = CONSUMERS[kind]
    pytest.importorskip(cls.library, reason=f"{cls.library} (the {kind} extra) is not installed")
    if url is None:
        require(cls.service, cls.port)
    return cls(url or SHARED_URLS[kind])


@contextmanager
def placed(consumer: Consumer) -> Iterator[Consumer]:
    """`consumer` with its place prepared, and removed at the end."""
    asyncio.run(consumer.prepare())
    try:
        yield consumer
    finally:
        asyncio.run(consumer.cleanup())


def target_config(consumer: Consumer, **keys: str) -> str:
    """A daemon's config: one target `t1` of the consumer's kind, with `keys` beside it."""
    lines = ["database: bridge.db", "targets:", "  t1:", f"    {consumer.target()}"]
    lines += [f"    {key}: {value}" for key, value in keys.items()]
    return "\n".join(lines) + "\n"


def deliver_and_read(
    daemon: Callable[..., DaemonProcess],
    db: Path,
    consumer: Consumer,
    events: list[Event],
    **keys: str,
) -> tuple[DaemonProcess, list[Received]]:
    """The real daemon delivers `events` to the consumer's place (prepared already); once
    every delivery is `delivered`, what the consumer reads."""
    proc = daemon(target_config(consumer, **keys))
    record(db, events)
    wait_until(lambda: set(statuses(db).values()) == {"delivered"}, timeout_s=30)
    got = asyncio.run(consumer.read({e.id for e in events}))
    return proc, got
