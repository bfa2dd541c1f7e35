"""The redis kind: an `XADD` to a stream, delivered on the entry id Redis returns.

Each entry has three fields: `id` (the event id, for a consumer that drops duplicates),
`content-type` (`application/cloudevents+json`) and `event` (the CloudEvent as JSON).
Structured only: Redis streams have no headers of their own.

One client per server URL, shared by its targets; redis-py's pool makes a new connection
when one is lost. After a connection failure the next ones wait a backoff (`Backoff`), each
attempt meanwhile failing at once. A connection lost mid-`XADD` is a failed attempt: the
entry may exist, so a retry can add it twice (at least once; the `id` field tells).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bridge.deliver.kinds import Answer, Backoff
from bridge.deliver.kinds.message import build_message, fill, redis_key
from bridge.masking import mask_text

if TYPE_CHECKING:
    from bridge.deliver.targets import Target
    from bridge.events import Event
    from bridge.tracing import TraceContext


class _Server:
    """One Redis server's shared client."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            # One attempt is one XADD: retries are the target's `retry` schedule.
            retry_on_timeout=False,
            retry=Retry(NoBackoff(), 0),
        )
        self.backoff = Backoff()


def _describe(exc: BaseException, secrets: frozenset[str]) -> str:
    text = mask_text(str(exc), secrets).strip()[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Redis:
    """XADDs over clients shared per server URL."""

    def __init__(self) -> None:
        self._servers: dict[str, _Server] = {}

    async def send(self, target: Target, event: Event, at_ms: int, trace: TraceContext) -> Answer:
        """Add `event` to the target's stream."""
        config = target.config.redis
        assert config is not None
        message = build_message(event, format="structured", transform=target.transform)
        stream = fill(config.stream, event, redis_key)
        timeout_s = target.config.timeout_s
        server = self._servers.get(config.url)
        if server is None:
            server = self._servers[config.url] = _Server(config.url, timeout_s)
        if (wait_s := server.backoff.wait_s()) > 0:
            return Answer(None, error=f"{server.backoff.last_error} (next try in {wait_s:.1f}s)")
        fields: dict[Any, Any] = {
            "id": event.id,
            "content-type": message.content_type,
            "event": message.body,
        }
        try:
            entry = await server.client.xadd(
                stream, fields, maxlen=config.maxlen, approximate=config.maxlen is not None
            )
        except (RedisTimeoutError, TimeoutError):
            return Answer(None, error=f"timed out after {timeout_s:g}s waiting for the entry id")
        except (RedisConnectionError, OSError) as exc:
            server.backoff.failed("cannot connect: " + _describe(exc, target.secrets))
            return Answer(None, error=server.backoff.last_error)
        except RedisError as exc:
            return Answer(None, error="refused: " + _describe(exc, target.secrets))
        server.backoff.succeeded()
        entry_id = entry.decode() if isinstance(entry, bytes) else str(entry)
        return Answer(None, f"stream {stream} entry {entry_id}", acked=True)

    async def close(self) -> None:
        """Close every client."""
        for server in self._servers.values():
            with contextlib.suppress(RedisError, OSError):
                await server.client.aclose()


def open_kind() -> Redis:
    """The redis kind."""
    return Redis()
