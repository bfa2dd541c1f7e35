"""`GET /stream`: newly stored events as Server-Sent Events (what `bridge events --follow`
shows), oldest first.

Each message is one CloudEvent as JSON in `data:`, and its `id:` is the events list's
cursor of that event: a client that reconnects with `Last-Event-ID` (as `EventSource` does by
itself) gets every event stored after it, none twice. Without one it starts at `since` (an
ISO 8601 time), else at the moment it connects. A connection is bounded: it ends after
`limit` events or STREAM_MAX_S, and the client reconnects from where it was; while nothing
comes, a comment line every HEARTBEAT_S keeps proxies from closing it.

An event is stamped when it arrives and committed a little later, so one committed after a
newer one may carry an older time: the stream only reads events stamped at least SETTLE_MS
ago, and a cursor then never skips one committed late. New events wake it at once (the hub);
without a notice (another replica stored them) it looks every LOOK_EVERY_S.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query
from starlette.requests import Request
from starlette.responses import StreamingResponse

from bridge import jsontext
from bridge.api.events import RuntimeDep, cursor_of, event_filter
from bridge.api.problems import responses
from bridge.events import Event, now_ms
from bridge.runtime import Runtime
from bridge.store.base import EventCursor, EventFilter
from bridge.web import views

STREAM_LIMIT, STREAM_MAX = 1000, 10_000
STREAM_MAX_S = 300.0
HEARTBEAT_S = 15.0
LOOK_EVERY_S = 1.0
SETTLE_MS = 500
BATCH = 100
# What a client waits before it reconnects (the `retry:` field, milliseconds).
RETRY_MS = 1000

router = APIRouter(tags=["stream"])


def message(event: Event) -> bytes:
    """One event as an SSE message: its cursor as `id`, the CloudEvent as `data`."""
    cursor = views.cursor_text(EventCursor(event.recorded_ms, event.id))
    # Compact JSON has no newline: one `data:` line. The `id` comes after it, so a script that
    # reads line by line and keeps the last id keeps it only once it has the event.
    return f"data: {jsontext.dumps(event.to_cloudevent())}\nid: {cursor}\n\n".encode()


class Follow:
    """One connection's walk through the stored events."""

    def __init__(
        self, runtime: Runtime, where: EventFilter, after: EventCursor | None, limit: int
    ) -> None:
        self.runtime, self.where, self.after, self.limit = runtime, where, after, limit
        self.woken = asyncio.Event()
        self.loop = asyncio.get_running_loop()

    def _notice(self, events: object) -> None:
        # The hub may be told from another thread.
        self.loop.call_soon_threadsafe(self.woken.set)

    async def _batch(self, room: int) -> list[Event]:
        where = EventFilter(
            source=self.where.source,
            type=self.where.type,
            origin=self.where.origin,
            subject=self.where.subject,
            since_ms=self.where.since_ms,
            until_ms=now_ms() - SETTLE_MS,
        )
        rows = await self.runtime.store.page_events(
            where, self.after, min(BATCH, room), oldest_first=True
        )
        return [r.event for r in rows]

    async def messages(self, stopping: asyncio.Event) -> AsyncIterator[bytes]:
        """The stream's bytes, until its bounds or the daemon stopping (a client that leaves
        ends it too: Starlette cancels the walk)."""
        hub = self.runtime.hub
        hub.subscribe(self._notice)
        started = time.monotonic()
        sent, beat = 0, started
        try:
            yield f"retry: {RETRY_MS}\n\n".encode()
            while sent < self.limit and time.monotonic() - started < STREAM_MAX_S:
                if stopping.is_set():
                    return
                batch = await self._batch(self.limit - sent)
                for event in batch:
                    yield message(event)
                    self.after = EventCursor(event.recorded_ms, event.id)
                sent += len(batch)
                if batch:
                    beat = time.monotonic()
                    continue
                if time.monotonic() - beat >= HEARTBEAT_S:
                    yield b": still here\n\n"
                    beat = time.monotonic()
                self.woken.clear()
                try:
                    await asyncio.wait_for(self.woken.wait(), LOOK_EVERY_S)
                    await asyncio.sleep(SETTLE_MS / 1000)
                except TimeoutError:
                    pass
        finally:
            hub.unsubscribe(self._notice)


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Server-Sent Events: `id` a cursor, `data` one CloudEvent.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **responses("bad-cursor"),
    },
)
async def stream(
    request: Request,
    runtime: RuntimeDep,
    since: Annotated[str | None, Query(description="Start at this time (ISO 8601).")] = None,
    source: str | None = None,
    type: Annotated[str | None, Query(description="A type glob.")] = None,
    limit: Annotated[
        int, Query(ge=1, le=STREAM_MAX, description="Events before this connection ends.")
    ] = STREAM_LIMIT,
    last_event_id: Annotated[
        str | None, Header(description="The `id` of the last message received.")
    ] = None,
) -> StreamingResponse:
    """Newly stored events as they are stored, oldest first; resumable by `Last-Event-ID`."""
    where = event_filter(source=source, type=type, since=since)
    after = cursor_of(last_event_id)
    if after is None and where.since_ms is None:
        where = EventFilter(source=where.source, type=where.type, since_ms=now_ms())
    follow = Follow(runtime, where, after, limit)
    stopping: asyncio.Event = request.app.state.stopping
    return StreamingResponse(
        follow.messages(stopping),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )
