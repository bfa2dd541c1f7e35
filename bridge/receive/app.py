"""The inbound webhook endpoint: verify, normalize and durably store pushed events.

One route serves every webhook source. It looks the request's path up in the sources of the
config in force, so a reload (SIGHUP) adds and removes sources without touching the router.
For each request, in order:

    path known? (404)  client within allow_from? (403)  POST? (405)
    content-length and body within max_body? (413)
    at most 16 signatures in the header? (400)
    signature and timestamp valid? (401, reason only in the log)
    JSON, or a form (bodies.py)? (400)
    upstream id found, and id, type and subject within 1 KiB? (422)
    event + deliveries committed? (503 + Retry-After)
    -> 202 {"id"} for a new event, 200 {"id", "duplicate": true} for a known one

Every 4xx is one `info` line: the source, the status and the reason (never the body or a
secret). The handler is plain ASGI on purpose: it is the hot path. Its only thread hop is the store
write, shared with the concurrent requests' (see batch.py); the 2xx is sent only once the
commit holding the event is durable. A check that may cost more than a millisecond (a large
body, Ed25519 keys) runs in the receiver's own two verifying threads instead, so no request,
signed or not, holds the event loop (and `/healthz`, and the watchdog) while it is checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from prometheus_client import Counter
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from bridge import metrics, tracing
from bridge.client_address import Network, client_address, is_in
from bridge.compare.merge import count_sighting, merged_event
from bridge.config import Config
from bridge.errors import MalformedSignature, StoreError, VerificationError
from bridge.events import (
    MAX_ATTRIBUTE_BYTES,
    Event,
    attribute_text,
    event_id,
    long_attribute,
    now_ms,
)
from bridge.receive.batch import Batcher
from bridge.receive.bodies import BodyError, parse_body
from bridge.receive.schemes import INLINE_BODY_BYTES
from bridge.receive.sources import WebhookSource, build_sources
from bridge.repeats import RepeatLog
from bridge.routing import passing
from bridge.runtime import Runtime

log = logging.getLogger("bridge.receive")

RETRY_AFTER_S = 5
# Threads that check costly signatures: they bound the CPU unsigned requests can take.
VERIFY_THREADS = 2
# An answer: status, headers and body; and one still waiting for the store, with what makes
# the answer of the store's result (`Receiver.begin`).
Reply = tuple[int, list[tuple[bytes, bytes]], bytes]
Deferred = tuple["asyncio.Future[bool]", Callable[["asyncio.Future[bool]"], Reply]]

_JSON = [(b"content-type", b"application/json")]


class _Refusal(Exception):
    """A request refused with `status`; `reason` labels the metric, `message` the body and
    `detail` (default: the message) the log line."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str = "",
        headers: Sequence[tuple[bytes, bytes]] = (),
        detail: str = "",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.headers = list(headers)
        self.detail = detail or message or reason


class _Disconnected(Exception):
    """The client went away before the body was read."""


class Receiver:
    """The component that accepts webhooks for every `sources.NAME.webhook` of the config."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.sources = build_sources(runtime.config)
        self.trusted_proxies: list[Network] = list(runtime.config.server.trusted_proxies)
        self.batcher = Batcher(runtime.store)
        self._repeats = RepeatLog(log)  # a locked store's 503s said once a source, then counted
        self._accepted_level = _accepted_level(runtime.config)
        self._verifying = ThreadPoolExecutor(VERIFY_THREADS, thread_name_prefix="bridge-verify")

    def routes(self) -> list[BaseRoute]:
        """One route that serves every webhook path of the config in force."""
        from bridge.receive.route import WebhookRoute  # it calls this module's Receiver

        return [WebhookRoute(self)]

    async def start(self) -> None:
        """Warn about sources that accept unsigned requests."""
        self._warn_unsigned()
        if self.sources:
            log.info("receiving webhooks on %s", ", ".join(sorted(self.sources)))

    async def stop(self, grace_s: float) -> None:
        """Let the store calls of requests in flight finish, within `grace_s`."""
        await self.batcher.drain(grace_s)
        self._verifying.shutdown(wait=False, cancel_futures=True)
        self._repeats.flush()

    async def reload(self, config: Config) -> None:
        """Serve the webhook sources of `config` from the next request on."""
        self.sources = build_sources(config)
        self.trusted_proxies = list(config.server.trusted_proxies)
        self._accepted_level = _accepted_level(config)
        self._warn_unsigned()

    def _warn_unsigned(self) -> None:
        for path, source in self.sources.items():
            if source.hook.verify == "none":
                log.warning(
                    "source %s accepts unsigned webhooks on %s (verify: none): anyone who can "
                    "reach that path can add events",
                    source.name,
                    path,
                )

    # -- the request -----------------------------------------------------------------------

    async def handle(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        extra: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        """Answer one webhook request (ASGI), with the `extra` headers on every answer."""
        arrived_ms = now_ms()
        source = self.sources.get(scope["path"])
        if source is None:  # removed by a reload since the route matched
            await _respond(send, *_gone(extra))
            return
        try:
            headers = self._admit(source, scope["method"], scope["headers"], scope.get("client"))
            body = await _read_body(receive, source.hook.max_body)
            status, answer = await self._accept(source, headers, body, arrived_ms)
        except _Refusal as refusal:
            await _respond(send, *self._refused(source, refusal, extra))
            return
        except _Disconnected:
            return
        await _respond(send, status, [*_JSON, *extra], answer)

    async def reply(
        self,
        method: str,
        path: str,
        raw_headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        client: tuple[str, int] | None,
        extra: Sequence[tuple[bytes, bytes]] = (),
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The answer to one webhook request whose whole body the server has read (its
        content-length within the source's `max_body`): status, headers and body, with the
        `extra` headers. The same checks, in the same order, as `handle`."""
        arrived_ms = now_ms()
        source = self.sources.get(path)
        if source is None:
            return _gone(extra)
        try:
            headers = self._admit(source, method, raw_headers, client, len(body))
            status, answer = await self._accept(source, headers, body, arrived_ms)
        except _Refusal as refusal:
            return self._refused(source, refusal, extra)
        return status, [*_JSON, *extra], answer

    def _refused(
        self, source: WebhookSource, refusal: _Refusal, extra: Sequence[tuple[bytes, bytes]]
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Count and log a refusal; its answer."""
        metrics.INBOUND_REJECTED.labels(source.name, refusal.reason).inc()
        if refusal.status < 500:
            log.info(
                "source %s: refused a webhook: %s (%d %s)",
                source.name,
                refusal.detail,
                refusal.status,
                refusal.reason,
                extra={"source": source.name, "status": refusal.status, "reason": refusal.reason},
            )
        if refusal.message:
            payload = json.dumps({"error": refusal.message}).encode()
            return refusal.status, [*_JSON, *refusal.headers, *extra], payload
        return refusal.status, [*refusal.headers, *extra], b""

    def _admit(
        self,
        source: WebhookSource,
        method: str,
        raw_headers: Sequence[tuple[bytes, bytes]],
        client: tuple[str, int] | None,
        body_bytes: int = 0,
    ) -> dict[str, str]:
        """The checks before the body is read (client, method, declared length), and of the
        length of a body read already (`body_bytes`); the headers."""
        if source.allow_from:
            self._check_client(source, client, raw_headers)
        if method != "POST":
            raise _Refusal(405, "method", "use POST", [(b"allow", b"POST")])
        # Read backwards, so the first of repeated headers wins; latin-1 maps every byte.
        headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(raw_headers)
        }
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > source.hook.max_body:
            raise _too_large(source.hook.max_body)  # refused before reading a byte of it
        if body_bytes > source.hook.max_body:
            raise _too_large(source.hook.max_body)
        return headers

    async def _accept(
        self, source: WebhookSource, headers: dict[str, str], body: bytes, arrived_ms: int
    ) -> tuple[int, bytes]:
        if source.costly_keys or len(body) > INLINE_BODY_BYTES:
            loop = asyncio.get_running_loop()
            now_s = time.time()
            await loop.run_in_executor(self._verifying, _verify, source, headers, body, now_s)
        else:
            _verify(source, headers, body, time.time())
        event = _event(source, headers, body, arrived_ms)
        if not isinstance(event, Event):
            return event
        if self.runtime.tracer.is_exporting:
            inbound = tracing.from_headers(headers) if "traceparent" in headers else None
            answer = await self._store_traced(source, event, headers, inbound, arrived_ms)
        else:
            answer = await self._store(source, event, headers)
        self._stored(source)
        return answer

    def begin(
        self,
        method: str,
        path: str,
        raw_headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        client: tuple[str, int] | None,
        extra: Sequence[tuple[bytes, bytes]] = (),
    ) -> Reply | Deferred | None:
        """`reply` without a coroutine, for the server's direct path: the answer when it is
        known at once (a refusal); else the store's future and what makes the answer of it.
        None when the request must go `reply`'s way: its signature check is costly (the
        verifying threads), its source merges (two store calls) or spans are exported.

        A coroutine and its task cost the event loop more than a webhook's HMAC (about 9 µs
        a request here): the same checks, in the same order, run here as plain calls."""
        arrived_ms = now_ms()
        source = self.sources.get(path)
        if source is None:
            return _gone(extra)
        if (
            source.merge is not None
            or source.costly_keys
            or len(body) > INLINE_BODY_BYTES
            or self.runtime.tracer.is_exporting
        ):
            return None
        try:
            headers = self._admit(source, method, raw_headers, client, len(body))
            _verify(source, headers, body, time.time())
            event = _event(source, headers, body, arrived_ms)
        except _Refusal as refusal:
            return self._refused(source, refusal, extra)
        if not isinstance(event, Event):
            return event[0], [*_JSON, *extra], event[1]
        stored = self._submit(source, event)

        def finish(done: asyncio.Future[bool]) -> Reply:
            try:
                status, answer = self._answer_stored(source, event, done)
            except _Refusal as refusal:
                return self._refused(source, refusal, extra)
            self._stored(source)
            return status, [*_JSON, *extra], answer

        return stored, finish

    def _stored(self, source: WebhookSource) -> None:
        """A webhook of `source` was stored: after failures, say once that they are again."""
        if self._repeats.has_failures:  # rare: no work per request otherwise
            self._repeats.passed(
                (source.name, "store"), "source %s: webhooks are stored again", source.name
            )

    async def _store_traced(
        self,
        source: WebhookSource,
        event: Event,
        headers: dict[str, str],
        inbound: tracing.TraceContext | None,
        arrived_ms: int,
    ) -> tuple[int, bytes]:
        """`_store` inside a receive span and a store span; an event that came without a
        trace context keeps the receive span's, so its deliveries join that trace."""
        tracer = self.runtime.tracer
        attributes = {"bridge.source": source.name, "cloudevents.event_id": event.id}
        receive = tracer.begin("receive", inbound, "server", attributes, start_ms=arrived_ms)
        if inbound is None:
            event = replace(event, traceparent=receive.context.traceparent)
        store = tracer.begin("store", receive.context)
        try:
            status, body = await self._store(source, event, headers)
        except _Refusal as refusal:
            store.end(refusal.message)
            receive.end(refusal.message, {"http.response.status_code": refusal.status})
            raise
        store.end(None, {"bridge.duplicate": status == 200})
        receive.end(None, {"http.response.status_code": status})
        return status, body

    async def _store(
        self, source: WebhookSource, event: Event, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        """Record the event and its deliveries (filters applied); a store fault is a 503."""
        if source.merge is not None:
            try:
                return await self._record_merged(source, event, headers, event.data)
            except StoreError as exc:
                raise self._unstorable(source, exc) from None
        stored = self._submit(source, event)
        with contextlib.suppress(Exception):
            await stored  # its failure is the answer's (below)
        return self._answer_stored(source, event, stored)

    def _submit(self, source: WebhookSource, event: Event) -> asyncio.Future[bool]:
        """Hand the event and its deliveries to the batcher: True once stored and new."""
        targets = passing(source.targets, source.targets_for(event.type), event)
        return self.batcher.submit(event, targets)

    def _answer_stored(
        self, source: WebhookSource, event: Event, stored: asyncio.Future[bool]
    ) -> tuple[int, bytes]:
        """202 for a new event, 200 for a duplicate, a 503 refusal when it was not stored."""
        try:
            is_new = stored.result()
        except StoreError as exc:
            raise self._unstorable(source, exc) from None
        if not is_new:
            source.duplicate.inc()
            return 200, _answer(event.id, duplicate=True)
        source.new.inc()
        _count_event(event, source.events)
        _log_accepted(self._accepted_level, event, event.recorded_ms)
        self.runtime.hub.recorded([event])
        return 202, _answer(event.id)

    def _unstorable(self, source: WebhookSource, exc: StoreError) -> _Refusal:
        """The 503 of a webhook the store could not take (said once a source, then counted)."""
        self._repeats.warning(
            (source.name, "store"),
            "source %s: cannot store a webhook (answered 503): %s",
            source.name,
            exc,
            extra={"source": source.name, "status": 503, "reason": "store_unavailable"},
        )
        return _Refusal(
            503,
            "store_unavailable",
            "the event cannot be stored right now; try again later",
            [(b"retry-after", str(RETRY_AFTER_S).encode())],
            detail=str(exc),
        )

    def _check_client(
        self,
        source: WebhookSource,
        peer: tuple[str, int] | None,
        raw_headers: Sequence[tuple[bytes, bytes]],
    ) -> None:
        """A 403 refusal unless the request's client is inside the source's `allow_from`."""
        address = client_address(peer[0] if peer else None, raw_headers, self.trusted_proxies)
        if not is_in(address, source.allow_from):
            shown = "an unknown address" if address is None else str(address)
            raise _Refusal(
                403,
                "forbidden",
                "this address may not send to this source",
                detail=f"{shown} is outside allow_from",
            )

    async def _record_merged(
        self, source: WebhookSource, event: Event, headers: dict[str, str], data: Any
    ) -> tuple[int, bytes]:
        """Record the merged event of a member's webhook (and its own event, for the targets
        that name the source itself); answer by whether the merged event was new."""
        assert source.merge is not None
        version = source.version({"headers": headers, "body": data}) if source.version else None
        found = merged_event(source.merge, event, "push", version)
        if found is None:
            raise _Refusal(422, "missing_version", f"no version at {source.hook.version}")
        merged, sighting = found
        if merged.traceparent is None and event.traceparent is not None:
            merged = replace(merged, traceparent=event.traceparent, tracestate=event.tracestate)
        wanted = passing(source.targets, source.merged_targets(merged.type), merged)
        is_new = await self.batcher.record(merged, wanted, sighting=sighting)
        own = passing(source.targets, source.targets_for(event.type), event)
        if own:
            await self.batcher.record(event, own)
        count_sighting(sighting, first=is_new)
        if not is_new:
            source.duplicate.inc()
            return 200, _answer(merged.id, duplicate=True)
        source.new.inc()
        _count_event(merged, metrics.EVENTS.labels(merged.source, "push"))
        _log_accepted(self._accepted_level, merged, event.recorded_ms)
        self.runtime.hub.recorded([merged])
        return 202, _answer(merged.id)


def _verify(source: WebhookSource, headers: Mapping[str, str], body: bytes, now_s: float) -> None:
    """The signature check: a 400 or 401 refusal when it fails."""
    try:
        source.verify(headers, body, now_s)
    except MalformedSignature as exc:
        raise _Refusal(400, "signature_header", str(exc)) from None
    except VerificationError as exc:
        raise _Refusal(401, "signature", detail=str(exc)) from None


def _event(
    source: WebhookSource, headers: dict[str, str], body: bytes, arrived_ms: int
) -> Event | tuple[int, bytes]:
    """The event of a verified request (400 or 422 refusals), or the answer to one that
    carries none (Slack's URL check)."""
    try:
        data = parse_body(body, headers.get("content-type"), source.hook.verify)
    except BodyError as exc:
        raise _Refusal(400, exc.reason, str(exc)) from None
    if source.hook.verify == "slack" and _is_slack_challenge(data):
        # Slack checks a new Events API URL by asking it to echo this value; it is no event.
        return 200, json.dumps({"challenge": data["challenge"]}).encode()
    inbound = tracing.from_headers(headers) if "traceparent" in headers else None
    found = source.extractor.extract(headers, data)
    if found.id is None:
        raise _Refusal(422, "missing_id", f"no event id at {source.extractor.fields.id}")
    too_long = long_attribute(id=found.id, type=found.type, subject=found.subject)
    if too_long is not None:
        message = f"the event's {too_long} is longer than {MAX_ATTRIBUTE_BYTES} bytes"
        raise _Refusal(422, "too_long", message)
    return Event(
        id=event_id(source.name, found.id),
        source=source.name,
        type=attribute_text(found.type) if found.type else source.name,
        origin="push",
        data=data,
        recorded_ms=arrived_ms,
        subject=attribute_text(found.subject) if found.subject is not None else None,
        time_ms=found.time_ms,
        upstream_id=attribute_text(found.id),
        traceparent=inbound.traceparent if inbound else None,
        tracestate=inbound.state if inbound else None,
    )


def _answer(event_id: str, *, duplicate: bool = False) -> bytes:
    """The JSON body of a 2xx, built as bytes, as `json.dumps` writes it (the docs show it):
    an event id (`evt_` and base32) needs no escaping, and the answer is on every webhook."""
    if duplicate:
        return b'{"id": "' + event_id.encode() + b'", "duplicate": true}'
    return b'{"id": "' + event_id.encode() + b'"}'


def _accepted_level(config: Config) -> int:
    """The level of an accepted event's line: info with `server.log_accepted`, else debug."""
    return logging.INFO if config.server.log_accepted else logging.DEBUG


def _log_accepted(level: int, event: Event, arrived_ms: int) -> None:
    if not log.isEnabledFor(level):
        return  # the common case: nothing built, not even the duration
    duration_ms = now_ms() - arrived_ms
    log.log(
        level,
        "source %s: accepted event %s (%s) in %d ms",
        event.source,
        event.id,
        event.type,
        duration_ms,
        extra={
            "source": event.source,
            "event_id": event.id,
            "type": event.type,
            "duration_ms": duration_ms,
        },
    )


def _is_slack_challenge(data: Any) -> bool:
    return (
        isinstance(data, dict)
        and data.get("type") == "url_verification"
        and isinstance(data.get("challenge"), str)
    )


def _count_event(event: Event, events: Counter) -> None:
    events.inc()
    if event.time_ms is not None:
        latency_s = max(0.0, (event.recorded_ms - event.time_ms) / 1000)
        metrics.DETECTION_LATENCY.labels(event.source, "push").observe(latency_s)


async def _read_body(receive: Receive, max_body: int) -> bytes:
    """The whole body, or a 413 refusal as soon as it is known to exceed `max_body`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_body:
            raise _too_large(max_body)
        if not message.get("more_body", False):
            if not chunks:
                return chunk
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)


def _too_large(max_body: int) -> _Refusal:
    return _Refusal(413, "too_large", f"the body is larger than {max_body} bytes")


def _gone(extra: Sequence[tuple[bytes, bytes]]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The 404 of a path a reload removed since the request was routed."""
    log.info("refused a webhook (404): no source has this path any more")
    return 404, [*_JSON, *extra], b'{"error":"no webhook source has this path"}'


async def _respond(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    headers.append((b"content-length", b"%d" % len(body)))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
