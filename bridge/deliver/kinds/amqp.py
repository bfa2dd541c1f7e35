"""The amqp kind: a RabbitMQ publish with publisher confirms, delivered on the broker's ack.

Every message is `mandatory`: one the exchange cannot route to any queue comes back and is a
failed attempt, never a success. `message_id` is the event id and the delivery mode
persistent. Structured mode sends the CloudEvent as JSON (`content_type:
application/cloudevents+json`); binary mode `data` as the body, its `content_type`, and each
other attribute as a `cloudEvents_` header (the CloudEvents AMQP binding's prefix).

One connection per server URL, shared by its targets, with one confirming channel. A
connection or channel that fails or is lost (an exchange that does not exist closes the
channel) is opened again by the next attempt, after a backoff (`Backoff`) when connecting
failed, each attempt meanwhile failing at once. A publish whose confirm does not come within
the target's `timeout`, or whose connection is lost before it, is a failed attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractConnection

from bridge.deliver.kinds import Answer, Backoff
from bridge.deliver.kinds.message import amqp_name, build_message, fill
from bridge.masking import mask_text

if TYPE_CHECKING:
    from bridge.deliver.targets import Target
    from bridge.events import Event
    from bridge.tracing import TraceContext

PREFIX = "cloudEvents_"

# aiormq logs a lost connection as an error with its traceback, and each refused one: the
# failed attempts already say it, in one line each.
for _name in ("aiormq", "aio_pika"):
    logging.getLogger(_name).setLevel(logging.CRITICAL)


def _describe(exc: BaseException, secrets: frozenset[str]) -> str:
    text = mask_text(str(exc), secrets).strip()[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Server:
    """One RabbitMQ server's shared connection and confirming channel."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connection: AbstractConnection | None = None
        self.channel: AbstractChannel | None = None
        self.backoff = Backoff()
        self.lock = asyncio.Lock()

    async def opened(self, timeout_s: float, secrets: frozenset[str]) -> AbstractChannel:
        """The channel, opened now if there is none (ConnectionError while backing off)."""
        async with self.lock:
            if self.channel is not None and not self.channel.is_closed:
                return self.channel
            if self.connection is None or self.connection.is_closed:
                if (wait_s := self.backoff.wait_s()) > 0:
                    raise ConnectionError(f"{self.backoff.last_error} (next try in {wait_s:.1f}s)")
                try:
                    self.connection = await aio_pika.connect(self.url, timeout=timeout_s)
                except Exception as exc:  # aiormq's errors, OSError, a timeout alike
                    self.backoff.failed("cannot connect: " + _describe(exc, secrets))
                    raise ConnectionError(self.backoff.last_error) from None
                self.backoff.succeeded()
            try:
                self.channel = await self.connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
            except Exception as exc:
                # The connection is gone although it does not say so (a broker that stopped
                # and started again): the next attempt connects anew, after a backoff.
                self.backoff.failed("cannot open a channel: " + _describe(exc, secrets))
                await self.close()
                self.connection = self.channel = None
                raise ConnectionError(self.backoff.last_error) from None
            return self.channel

    async def close(self) -> None:
        if self.connection is not None and not self.connection.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.connection.close(), timeout=2.0)


class Amqp:
    """Confirmed, mandatory publishes over connections shared per server URL."""

    def __init__(self) -> None:
        self._servers: dict[str, _Server] = {}

    async def send(self, target: Target, event: Event, at_ms: int, trace: TraceContext) -> Answer:
        """Publish `event` to the target's exchange and wait for the broker's confirm."""
        config = target.config.amqp
        assert config is not None
        built = build_message(event, format=target.config.format, transform=target.transform)
        headers: dict[str, Any] = {f"{PREFIX}{k}": v for k, v in built.attributes.items()}
        headers.update(trace.headers())
        message = aio_pika.Message(
            built.body,
            content_type=built.content_type,
            message_id=event.id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=headers,
        )
        routing_key = fill(config.routing_key, event, amqp_name)
        timeout_s = target.config.timeout_s
        server = self._servers.setdefault(config.url, _Server(config.url))
        try:
            channel = await server.opened(timeout_s, target.secrets)
            if config.exchange:
                exchange = await channel.get_exchange(config.exchange, ensure=False)
            else:
                exchange = channel.default_exchange
            await exchange.publish(message, routing_key, mandatory=True, timeout=timeout_s)
        except ConnectionError as exc:
            return Answer(None, error=str(exc))
        except aio_pika.exceptions.PublishError:
            return Answer(None, error=f"unroutable: no queue is bound for {routing_key!r}")
        except aio_pika.exceptions.DeliveryError as exc:
            return Answer(None, error="refused (nack): " + _describe(exc, target.secrets))
        except TimeoutError:
            return Answer(None, error=f"timed out after {timeout_s:g}s waiting for the confirm")
        except aiormq.exceptions.ChannelNotFoundEntity:
            return Answer(None, error=f"refused: no exchange {config.exchange!r}")
        except (aiormq.exceptions.AMQPError, RuntimeError, OSError) as exc:
            return Answer(None, error=_describe(exc, target.secrets))
        return Answer(None, f"confirmed by {config.exchange or '(default exchange)'}", acked=True)

    async def close(self) -> None:
        """Close every connection."""
        for server in self._servers.values():
            await server.close()


def open_kind() -> Amqp:
    """The amqp kind."""
    return Amqp()
