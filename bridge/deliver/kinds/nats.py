"""The nats kind: a JetStream publish, delivered on the stream's ack.

`Nats-Msg-Id` is the event id, so a redelivery inside the stream's duplicate window is
dropped by JetStream (its ack says `duplicate`: still delivered). Structured mode sends the
CloudEvent as JSON with `content-type: application/cloudevents+json`; binary mode `data` as
the payload and each attribute as a `ce-` header (the CloudEvents NATS binding, NATS 2.2+).

One connection per server URL, shared by its targets. A connection that fails or is lost is
made again by the next attempt, after a backoff (`Backoff`), each attempt meanwhile failing
at once: nats-py's own reconnection is off, since with it a first connection to a server
that is down never returns. A publish whose ack does not come within the target's `timeout`,
or whose connection is lost before the ack, is a failed attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.errors import Error as JetStreamError

from bridge.deliver.kinds import Answer, Backoff
from bridge.deliver.kinds.message import build_message, fill, nats_token
from bridge.deliver.request import ce_header_value
from bridge.masking import mask_text

if TYPE_CHECKING:
    from bridge.deliver.targets import Target
    from bridge.events import Event
    from bridge.tracing import TraceContext


class _Server:
    """One NATS server's shared connection."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client: Client | None = None
        self.backoff = Backoff()
        self.lock = asyncio.Lock()

    async def connected(self, timeout_s: float, secrets: frozenset[str]) -> Client:
        """The connection, made now if there is none (ConnectionError while backing off)."""
        async with self.lock:
            if self.client is not None and self.client.is_connected:
                return self.client
            if self.client is not None:
                await _close(self.client)
                self.client = None
            if (wait_s := self.backoff.wait_s()) > 0:
                raise ConnectionError(f"{self.backoff.last_error} (next try in {wait_s:.1f}s)")
            try:
                self.client = await asyncio.wait_for(
                    nats.connect(
                        self.url,
                        connect_timeout=timeout_s,
                        allow_reconnect=False,
                        error_cb=_quiet,
                    ),
                    timeout=timeout_s * 2,
                )
            except Exception as exc:  # nats-py raises its own errors and OSError alike
                self.backoff.failed("cannot connect: " + _describe(exc, secrets))
                raise ConnectionError(self.backoff.last_error) from None
            self.backoff.succeeded()
            return self.client


async def _quiet(exc: Exception) -> None:
    """nats-py reports a lost connection here; the failed attempts already say it."""


async def _close(client: Client) -> None:
    """Close `client`, quietly: it is being replaced or the daemon stops."""
    with contextlib.suppress(TimeoutError, NatsError, OSError):
        await asyncio.wait_for(client.close(), timeout=2.0)


def _describe(exc: BaseException, secrets: frozenset[str]) -> str:
    text = mask_text(str(exc), secrets).strip()[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Nats:
    """JetStream publishes over connections shared per server URL."""

    def __init__(self) -> None:
        self._servers: dict[str, _Server] = {}

    async def send(self, target: Target, event: Event, at_ms: int, trace: TraceContext) -> Answer:
        """Publish `event` to the target's subject and wait for the stream's ack."""
        config = target.config.nats
        assert config is not None
        message = build_message(event, format=target.config.format, transform=target.transform)
        headers = {"Nats-Msg-Id": event.id, "content-type": message.content_type}
        for name, value in message.attributes.items():
            headers[f"ce-{name}"] = ce_header_value(value)
        headers.update(trace.headers())
        subject = fill(config.subject, event, nats_token)
        timeout_s = target.config.timeout_s
        server = self._servers.setdefault(config.url, _Server(config.url))
        try:
            client = await server.connected(timeout_s, target.secrets)
            ack = await client.jetstream(timeout=timeout_s).publish(
                subject, message.body, timeout=timeout_s, stream=config.stream, headers=headers
            )
        except ConnectionError as exc:
            return Answer(None, error=str(exc))
        except (TimeoutError, nats.errors.TimeoutError):
            return Answer(None, error=f"timed out after {timeout_s:g}s waiting for the ack")
        except JetStreamError as exc:
            # No stream for the subject, or another stream than `stream`: never delivered.
            return Answer(None, error="refused: " + _describe(exc, target.secrets))
        except (NatsError, OSError) as exc:
            return Answer(None, error=_describe(exc, target.secrets))
        detail = f"stream {ack.stream} seq {ack.seq}"
        if ack.duplicate:
            detail += " (duplicate: already stored)"
        return Answer(None, detail, acked=True)

    async def close(self) -> None:
        """Drain and close every connection."""
        for server in self._servers.values():
            if server.client is not None and not server.client.is_closed:
                await _close(server.client)


def open_kind() -> Nats:
    """The nats kind."""
    return Nats()
