"""brokers: N events delivered by the bridge to each broker of the machine, against the
broker's own client publishing the same messages in a loop with the same acknowledgements.

Per broker (NATS JetStream, RabbitMQ, Redis Streams, MQTT on their usual ports of
127.0.0.1), in a place of its own made for the run (a stream, a durable queue bound to a
topic exchange, a key, a topic):

- the baseline: the broker's own Python client (nats-py, aio-pika, redis-py, aiomqtt)
  publishing the N structured CloudEvents, 16 in flight (a target's default concurrency),
  each awaited as the bridge awaits it: the stream's ack, the publisher confirm of a
  mandatory persistent message, the entry id of `XADD`, the PUBACK at QoS 1;
- the bridge: `bridge run` with one target of the kind, the N events put in its outbox
  through the store API; the clock stops when its metrics count N acknowledged attempts.

Each side's place is then checked to hold the N messages (MQTT cannot say: no subscriber).

The figure is the bridge's events per second over the baseline's; beside it the CPU per
event of the daemon and of the baseline's loop (this process). A broker that is not reachable,
or whose extra is not installed, is a row saying so.
"""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from bench.context import Context
from bench.figures.delivery import make_events, outbox, record_all
from bench.procs import BenchError, NotAvailable, Proc, cpu_seconds, http_get, start_daemon
from bench.stats import Row, unavailable

CONCURRENCY = 16
STRUCTURED = "application/cloudevents+json"
URLS = {
    "nats": "nats://127.0.0.1:4222",
    "amqp": "amqp://guest:guest@127.0.0.1:5672/",
    "redis": "redis://127.0.0.1:6379/0",
    "mqtt": "mqtt://127.0.0.1:1883",
}
NAMES = {"nats": "NATS JetStream", "amqp": "RabbitMQ", "redis": "Redis Streams", "mqtt": "MQTT"}
LIBRARIES = {"nats": "nats", "amqp": "aio_pika", "redis": "redis", "mqtt": "aiomqtt"}

Message = tuple[str, bytes]  # (event id, structured CloudEvent JSON)


async def _in_flight(
    messages: list[Message], publish: Callable[[Message], Awaitable[None]]
) -> None:
    """Publish every message, `CONCURRENCY` awaiting their acknowledgement at a time."""
    queue = iter(messages)

    async def worker() -> None:
        for message in queue:
            await publish(message)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


class Place:
    """One broker's place for one run: the target, the baseline's loop, the count held."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.url = URLS[kind]
        self.run = uuid.uuid4().hex[:10]

    async def setup(self) -> None: ...
    async def teardown(self) -> None: ...
    def target(self) -> str:
        raise NotImplementedError

    async def baseline(self, messages: list[Message]) -> None:
        raise NotImplementedError

    async def count(self) -> int | None:
        """How many messages the place holds (None: the broker cannot say)."""
        raise NotImplementedError


class NatsPlace(Place):
    async def setup(self) -> None:
        import nats

        self.nc = await nats.connect(self.url)
        self.js = self.nc.jetstream()
        await self.js.add_stream(name=f"BENCH_{self.run}", subjects=[f"bench.{self.run}.>"])

    async def teardown(self) -> None:
        await self.js.delete_stream(f"BENCH_{self.run}")
        await self.nc.close()

    def target(self) -> str:
        return f'nats: {{url: "{self.url}", subject: "bench.{self.run}.ev"}}'

    async def baseline(self, messages: list[Message]) -> None:
        async def publish(message: Message) -> None:
            headers = {"Nats-Msg-Id": message[0], "content-type": STRUCTURED}
            await self.js.publish(f"bench.{self.run}.ev", message[1], headers=headers)

        await _in_flight(messages, publish)

    async def count(self) -> int:
        return int((await self.js.stream_info(f"BENCH_{self.run}")).state.messages)


class AmqpPlace(Place):
    async def setup(self) -> None:
        import aio_pika

        self.connection = await aio_pika.connect(self.url)
        self.channel = await self.connection.channel(publisher_confirms=True)
        self.exchange = await self.channel.declare_exchange(
            f"bench-{self.run}", aio_pika.ExchangeType.TOPIC, auto_delete=False
        )
        self.queue = await self.channel.declare_queue(f"bench-{self.run}", durable=True)
        await self.queue.bind(self.exchange, "#")

    async def teardown(self) -> None:
        await self.channel.queue_delete(f"bench-{self.run}")
        await self.channel.exchange_delete(f"bench-{self.run}")
        await self.connection.close()

    def target(self) -> str:
        return f'amqp: {{url: "{self.url}", exchange: bench-{self.run}, routing_key: ev}}'

    async def baseline(self, messages: list[Message]) -> None:
        import aio_pika

        async def publish(message: Message) -> None:
            body = aio_pika.Message(
                message[1],
                content_type=STRUCTURED,
                message_id=message[0],
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            await self.exchange.publish(body, "ev", mandatory=True)

        await _in_flight(messages, publish)

    async def count(self) -> int:
        declared = await self.channel.declare_queue(f"bench-{self.run}", passive=True)
        return int(declared.declaration_result.message_count or 0)


class RedisPlace(Place):
    async def setup(self) -> None:
        import redis.asyncio as aioredis

        self.client = aioredis.Redis.from_url(self.url)
        self.key = f"bench:{self.run}"

    async def teardown(self) -> None:
        await self.client.delete(self.key)
        await self.client.aclose()

    def target(self) -> str:
        return f'redis: {{url: "{self.url}", stream: "{self.key}"}}'

    async def baseline(self, messages: list[Message]) -> None:
        async def publish(message: Message) -> None:
            fields: dict[Any, Any] = {"id": message[0], "content-type": STRUCTURED}
            fields["event"] = message[1]
            await self.client.xadd(self.key, fields)

        await _in_flight(messages, publish)

    async def count(self) -> int:
        return int(await self.client.xlen(self.key))


class MqttPlace(Place):
    """No subscriber: a broker drops QoS 1 messages past a slow subscriber's queue, so the
    PUBACKs are the count (the baseline's loop awaits them; the daemon's metric counts them)."""

    def target(self) -> str:
        return f'mqtt: {{url: "{self.url}", topic: "bench/{self.run}/ev"}}'

    async def baseline(self, messages: list[Message]) -> None:
        import aiomqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = Properties(PacketTypes.PUBLISH)
        properties.ContentType = STRUCTURED
        client = aiomqtt.Client("127.0.0.1", 1883, protocol=aiomqtt.ProtocolVersion.V5)
        client.pending_calls_threshold = 1000  # 16 in flight by design
        async with client:

            async def publish(message: Message) -> None:
                topic = f"bench/{self.run}/ev"
                await client.publish(topic, message[1], qos=1, properties=properties)

            await _in_flight(messages, publish)

    async def count(self) -> int | None:
        return None


PLACES: dict[str, type[Place]] = {
    "nats": NatsPlace,
    "amqp": AmqpPlace,
    "redis": RedisPlace,
    "mqtt": MqttPlace,
}


def _reachable(url: str) -> bool:
    host_port = url.split("@")[-1].split("://")[-1].strip("/").split("/")[0]
    host, port = host_port.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def run(ctx: Context) -> list[Row]:
    """Each broker in turn: its client's loop, then the bridge, into places of their own."""
    rows: list[Row] = []
    for kind in PLACES:
        title = f"broker {NAMES[kind]}"
        try:
            rows += _one(ctx, kind, title)
        except NotAvailable as exc:
            rows.append(unavailable(title, str(exc), "none set (report only)"))
    return rows


def _one(ctx: Context, kind: str, title: str) -> list[Row]:
    if importlib.util.find_spec(LIBRARIES[kind]) is None:
        raise NotAvailable(f"{LIBRARIES[kind]} (the {kind} extra) is not installed")
    if not _reachable(URLS[kind]):
        raise NotAvailable(f"{NAMES[kind]} is not reachable at {URLS[kind].split('@')[-1]}")
    count = ctx.settings.delivery_events
    work = ctx.workdir(f"broker-{kind}")
    events = make_events(count)
    messages = [(e.id, e.to_json().encode()) for e in events]

    async def baseline() -> tuple[float, float]:
        place = PLACES[kind](kind)
        await place.setup()
        try:
            cpu, started = time.process_time(), time.perf_counter()
            await place.baseline(messages)  # each publish awaited its acknowledgement
            took, cpu_s = time.perf_counter() - started, time.process_time() - cpu
            await _check_count(place, count)
            return took, cpu_s
        finally:
            await place.teardown()

    bare_s, bare_cpu_s = asyncio.run(baseline())

    async def bridge() -> tuple[float, float]:
        place = PLACES[kind](kind)
        await place.setup()
        try:
            config = f"targets:\n  sink:\n    {place.target()}\n"
            with start_daemon(work, config, log_level="warning") as daemon:
                store = outbox(str(work / "bridge.db"))
                cpu, started = cpu_seconds(daemon.pid), time.perf_counter()
                await record_all(store, events)
                await _wait_acked(daemon, count, 60 + count / 50)
                took, cpu_s = time.perf_counter() - started, cpu_seconds(daemon.pid) - cpu
                await _check_count(place, count)
                return took, cpu_s
        finally:
            await place.teardown()

    bridge_s, bridge_cpu_s = asyncio.run(bridge())
    (work / "bridge.db").unlink(missing_ok=True)
    baseline_name = f"its own client, {CONCURRENCY} in flight, same acks"
    return [
        Row(title, f"events/s ({count:,} events)", "ev/s", count / bridge_s, count / bare_s,
            baseline_name, extra={"bridge_s": bridge_s, "bare_s": bare_s}),
        Row(title, "CPU µs per event", "µs", bridge_cpu_s / count * 1e6,
            bare_cpu_s / count * 1e6, "its own client's loop"),
    ]  # fmt: skip


async def _wait_acked(daemon: Proc, count: int, timeout_s: float) -> None:
    """Wait until the daemon counted `count` acknowledged attempts (its /metrics, polled
    every 50 ms: a small cost on the daemon's side)."""
    deadline = time.monotonic() + timeout_s
    while (have := _acked(daemon)) < count:
        if time.monotonic() > deadline:
            raise BenchError(f"the bridge had {have} of {count} acks after {timeout_s:g} s")
        daemon.check_alive()
        await asyncio.sleep(0.05)


def _acked(daemon: Proc) -> int:
    status, body = http_get(daemon.url + "/metrics")
    if status != 200:
        raise BenchError(f"/metrics answered {status}")
    for line in body.decode().splitlines():
        if line.startswith("bridge_delivery_attempts_total{") and 'result="acked"' in line:
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


async def _check_count(place: Place, count: int) -> None:
    """The broker holds the `count` messages acknowledged (where it can say)."""
    have = await place.count()
    if have is not None and have != count:
        raise BenchError(f"the broker holds {have} messages, {count} were acknowledged")
