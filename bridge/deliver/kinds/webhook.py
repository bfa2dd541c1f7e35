"""The webhook kind: an HTTP POST, signed as Standard Webhooks; delivered on a 2xx.

The HTTP client is aiohttp's: against the same loopback receiver (bench/delivery_client.py,
64 in flight) it sent about 9,900 POSTs/s, httpx's AsyncClient 370 (REFERENCE.md: 4,500 and
190-450). Throughput is bounded by the client, so the 25x decides; aiohttp is a dependency.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import aiohttp

from bridge.deliver.kinds import Answer
from bridge.deliver.request import Request, build_request
from bridge.masking import mask_text

if TYPE_CHECKING:
    from bridge.deliver.targets import Target
    from bridge.events import Event
    from bridge.tracing import TraceContext

log = logging.getLogger("bridge.deliver")

EXCERPT_BYTES = 1024  # how much of a response body an attempt keeps
# How long an idle connection to a target is kept for the next delivery: less than the 5 s
# after which uvicorn and Node.js close an idle keep-alive connection. aiohttp's default is
# 15 s, and its pool hands out the connection idle longest first: with deliveries a second
# apart over five pooled connections, each was reused after 5 s idle, at the moment the
# server closed it, and the attempt failed ("Can not write request body") with nothing sent.
KEEPALIVE_S = 4.0
# A connection that fails a request this soon after its send is taken as stale (closed by the
# server as it was reused): the request is sent once more (see `Webhook.post`).
STALE_S = 1.0
MAX_MESSAGE = 300  # how much of an exception's message an attempt's error keeps
_BAD_RESPONSE = (aiohttp.ClientPayloadError, aiohttp.ClientResponseError)
# How a connection closed under a request fails it (aiohttp retries these itself, once, for
# idempotent methods only). ClientConnectorError, a connection that could not be made, is a
# subclass, and is not resent.
_STALE = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


def describe(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """What went wrong with a request, for an attempt's error: the exception's class and
    message, every URL in it masked and every one of `secrets` (the target's) scrubbed."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or type(exc.os_error).__name__}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    prefix = "bad response: " if isinstance(exc, _BAD_RESPONSE) else ""
    message = mask_text(str(exc), secrets).strip()
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    return f"{prefix}{type(exc).__name__}: {message}" if message else prefix + type(exc).__name__


@functools.lru_cache(maxsize=64)
def _timeout(total_s: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=total_s)  # frozen: one per value is enough


class Webhook:
    """POSTs through one aiohttp session shared by every webhook target."""

    def __init__(self) -> None:
        # The per-target limits are the worker's; the connector must not add its own.
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=KEEPALIVE_S)
        # No cookies: a target's Set-Cookie is not sent back with later deliveries (to it or
        # to another target on its host), and no jar is searched per request.
        self._session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar()
        )

    async def send(self, target: Target, event: Event, at_ms: int, trace: TraceContext) -> Answer:
        """POST `event` to the target's `url`."""
        return await self.post(target, self.build(target, event, at_ms, trace))

    def build(self, target: Target, event: Event, at_ms: int, trace: TraceContext) -> Request:
        """The request of `event` sent at `at_ms` (signed for that second)."""
        config = target.config
        return build_request(
            event,
            format=config.format,
            keys=target.keys,
            extra_headers=target.headers,
            now_s=at_ms // 1000,
            transform=target.transform,
            trace=trace,
        )

    async def post(self, target: Target, request: Request) -> Answer:
        """POST a request `build` made to the target's `url`.

        A request whose connection fails within `STALE_S` of the send (closed by the server,
        or dropped unanswered) is sent once more, within what is left of the timeout: a
        connection kept idle can meet the server's own idle close at any keep-alive shorter
        than ours (gunicorn's is 2 s), and the failed one is not pooled again. A server that
        fails a request later, after working on it, gets the retry schedule; one that drops
        every request at once gets each attempt twice. A receiver that saw the first may see
        it twice, as at least once allows (the same `webhook-id`)."""
        config = target.config
        if target.tls_error is not None:
            return Answer(None, error=target.tls_error)
        started = time.monotonic()
        try:
            try:
                return await self._post(target, request, _timeout(config.timeout_s))
            except aiohttp.ClientConnectorError:
                raise  # no connection was made: the retry schedule decides
            except _STALE:
                left_s = config.timeout_s - (elapsed_s := time.monotonic() - started)
                # aiohttp takes a total of 0 or less for no timeout at all.
                if elapsed_s >= STALE_S or left_s <= 0:
                    raise
            log.debug("a connection to %s failed a request at once: sent again", target.name)
            return await self._post(target, request, aiohttp.ClientTimeout(total=left_s))
        except TimeoutError:
            return Answer(None, error=f"timed out after {config.timeout_s:g}s")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return Answer(None, error=describe(exc, target.secrets))

    async def _post(
        self, target: Target, request: Request, timeout: aiohttp.ClientTimeout
    ) -> Answer:
        """One POST of `request`: its answer, or the exception."""
        config = target.config
        assert config.url is not None
        async with self._session.post(
            config.url,
            data=request.body,
            headers=request.headers,
            allow_redirects=False,  # a 3xx is a failure, never followed
            timeout=timeout,
            ssl=target.ssl if target.ssl is not None else True,
        ) as resp:
            excerpt = await resp.content.read(EXCERPT_BYTES)
            return Answer(
                resp.status,
                excerpt.decode("utf-8", "replace") or None,
                resp.headers.get("retry-after"),
            )

    async def close(self) -> None:
        """Close the session."""
        await self._session.close()


def open_kind() -> Webhook:
    """The webhook kind (called inside the running event loop)."""
    return Webhook()
