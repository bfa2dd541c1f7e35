"""The mqtt kind: an MQTT 5 publish at QoS 1, delivered on the broker's PUBACK.

Structured mode sends the CloudEvent as JSON with the content type
`application/cloudevents+json`; binary mode `data` as the payload, its content type, and
each other attribute as an MQTT 5 user property named for it (the CloudEvents MQTT binding).

One connection per server URL, shared by its targets. A publish that fails, or whose PUBACK
does not come within the target's `timeout`, is a failed attempt and drops the connection:
the next attempt connects again, after a backoff (`Backoff`) when connecting failed, each
attempt meanwhile failing at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge.deliver.kinds import Answer, Backoff
from bridge.deliver.kinds.message import build_message, fill, mqtt_level
from bridge.masking import mask_text

if TYPE_CHECKING:
    from bridge.deliver.targets import Target
    from bridge.events import Event
    from bridge.tracing import TraceContext


def _describe(exc: BaseException, secrets: frozenset[str]) -> str:
    text = mask_text(str(exc), secrets).strip()[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _client(url: str, timeout_s: float) -> aiomqtt.Client:
    parts = urlsplit(url)
    secure = parts.scheme == "mqtts"
    client = aiomqtt.Client(
        parts.hostname or "127.0.0.1",
        parts.port or (8883 if secure else 1883),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        protocol=aiomqtt.ProtocolVersion.V5,
        timeout=timeout_s,
        tls_params=aiomqtt.TLSParameters() if secure else None,
    )
    # A target's `concurrency` publishes are in flight at once by design: aiomqtt would log
    # a warning for each one past 10.
    client.pending_calls_threshold = 1000
    return client


class _Server:
    """One MQTT broker's shared connection."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client: aiomqtt.Client | None = None
        self.backoff = Backoff()
        self.lock = asyncio.Lock()

    async def connected(self, timeout_s: float, secrets: frozenset[str]) -> aiomqtt.Client:
        """The connection, made now if there is none (ConnectionError while backing off)."""
        async with self.lock:
            if self.client is not None:
                return self.client
            if (wait_s := self.backoff.wait_s()) > 0:
                raise ConnectionError(f"{self.backoff.last_error} (next try in {wait_s:.1f}s)")
            client = _client(self.url, timeout_s)
            try:
                await client.__aenter__()
            except Exception as exc:  # aiomqtt's errors, OSError alike
                self.backoff.failed("cannot connect: " + _describe(exc, secrets))
                raise ConnectionError(self.backoff.last_error) from None
            self.backoff.succeeded()
            self.client = client
            return client

    async def drop(self, client: aiomqtt.Client) -> None:
        """Forget `client` (a publish on it failed); the next attempt connects again."""
        if self.client is client:
            self.client = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.__aexit__(None, None, None), timeout=2.0)


class Mqtt:
    """QoS 1 publishes over connections shared per server URL."""

    def __init__(self) -> None:
        self._servers: dict[str, _Server] = {}

    async def send(self, target: Target, event: Event, at_ms: int, trace: TraceContext) -> Answer:
        """Publish `event` to the target's topic and wait for the PUBACK."""
        config = target.config.mqtt
        assert config is not None
        message = build_message(event, format=target.config.format, transform=target.transform)
        properties = Properties(PacketTypes.PUBLISH)
        properties.ContentType = message.content_type
        user = [*message.attributes.items(), *trace.headers().items()]
        if user:
            properties.UserProperty = user
        topic = fill(config.topic, event, mqtt_level)
        timeout_s = target.config.timeout_s
        server = self._servers.setdefault(config.url, _Server(config.url))
        try:
            client = await server.connected(timeout_s, target.secrets)
        except ConnectionError as exc:
            return Answer(None, error=str(exc))
        try:
            await client.publish(
                topic, message.body, qos=config.qos, properties=properties, timeout=timeout_s
            )
        except (aiomqtt.MqttError, OSError, ValueError) as exc:
            await server.drop(client)
            text = _describe(exc, target.secrets)
            if "timed out" in text:
                return Answer(None, error=f"timed out after {timeout_s:g}s waiting for the PUBACK")
            return Answer(None, error=text)
        return Answer(None, f"puback for {topic}", acked=True)

    async def close(self) -> None:
        """Disconnect from every broker."""
        for server in self._servers.values():
            if server.client is not None:
                await server.drop(server.client)


def open_kind() -> Mqtt:
    """The mqtt kind."""
    return Mqtt()
