"""Events: the list with the admin pages' filters and keyset cursors, one event with its
deliveries and attempts, and redelivery (one event, or a range of them).

    GET  /events                    newest first; `next` is the cursor of the older page
    GET  /events/{id}               as `bridge event show --json`
    POST /events/{id}/redeliver     every target it had, or `{"targets": [...]}`
    POST /redeliver                 by range: since, until, source, type, target, status

The same store calls as the admin pages (`page_events`) and `bridge redeliver` (`redeliver`);
the cursor is the admin pages' own (`web/views.py`).
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Query, Request

from bridge.api import models
from bridge.api.problems import ApiProblem, responses
from bridge.deliver import circuit
from bridge.events import format_time, now_ms
from bridge.runtime import Runtime
from bridge.status.deliveries import delivery_json
from bridge.store.base import EventCursor, EventFilter, EventListing
from bridge.web import views
from bridge.web.auth import Visitor

log = logging.getLogger("bridge.api")


def runtime_of(request: Request) -> Runtime:
    """The running bridge the API serves."""
    runtime: Runtime = request.app.state.runtime
    return runtime


async def caller_of(request: Request) -> Visitor:
    """Who called (the guard in front of the app left it here)."""
    visitor: Visitor = request.state.visitor
    return visitor


RuntimeDep = Annotated[Runtime, Depends(runtime_of)]
Caller = Annotated[Visitor, Depends(caller_of)]

router = APIRouter(tags=["events"])


def event_filter(
    source: str | None = None,
    type: str | None = None,
    origin: str | None = None,
    subject: str | None = None,
    since: str | None = None,
    until: str | None = None,
    delivery: str | None = None,
) -> EventFilter:
    """The admin pages' filter from the API's values; invalid-request for a bad one."""
    fields = {
        "source": source,
        "type": type,
        "origin": origin,
        "subject": subject,
        "since": since,
        "until": until,
        "delivery": delivery,
    }
    try:
        return views.query_of({k: v for k, v in fields.items() if v is not None}).where
    except views.BadQuery as exc:
        raise ApiProblem("invalid-request", str(exc)) from exc


def cursor_of(text: str | None) -> EventCursor | None:
    """The cursor of a `next`; bad-cursor when it is not one."""
    if not text:
        return None
    try:
        return views.cursor_of(text)
    except views.BadQuery as exc:
        raise ApiProblem("bad-cursor", str(exc)) from exc


def event_item(row: EventListing) -> models.EventItem:
    """One row of the list."""
    e = row.event
    return models.EventItem(
        id=e.id,
        source=e.source,
        type=e.type,
        subject=e.subject,
        origin=e.origin,
        time=format_time(e.time_ms) if e.time_ms is not None else None,
        recorded=format_time(e.recorded_ms),
        recorded_ms=e.recorded_ms,
        latency_ms=e.recorded_ms - e.time_ms if e.time_ms is not None else None,
        delivery=row.worst,
    )


def next_of(rows: list[EventListing], limit: int) -> str | None:
    """The cursor after the page's last row, when a row beyond `limit` was read."""
    if len(rows) <= limit:
        return None
    last = rows[limit - 1].event
    return views.cursor_text(EventCursor(last.recorded_ms, last.id))


@router.get("/events", response_model=models.EventPage, responses=responses("bad-cursor"))
async def list_events(
    runtime: RuntimeDep,
    source: str | None = None,
    type: Annotated[str | None, Query(description="A glob: `*` any run, `?` one.")] = None,
    origin: Literal["poll", "push"] | None = None,
    subject: str | None = None,
    since: Annotated[str | None, Query(description="Recorded at or after (ISO 8601).")] = None,
    until: Annotated[str | None, Query(description="Recorded before (ISO 8601).")] = None,
    delivery: Annotated[models.Worst | None, Query(description="The worst delivery.")] = None,
    limit: Annotated[int, Query(ge=1, le=models.EVENTS_MAX)] = models.EVENTS_LIMIT,
    after: Annotated[str | None, Query(description="The `next` of the previous page.")] = None,
) -> models.EventPage:
    """Stored events, newest first, filtered as on the admin pages' Events page."""
    where = event_filter(source, type, origin, subject, since, until, delivery)
    rows = await runtime.store.page_events(where, cursor_of(after), limit + 1)
    return models.EventPage(events=[event_item(r) for r in rows[:limit]], next=next_of(rows, limit))


def check_targets(runtime: Runtime, names: list[str]) -> None:
    """unknown-target for a name the config has not got."""
    unknown = [n for n in names if n not in runtime.config.targets]
    if unknown:
        known = ", ".join(sorted(runtime.config.targets)) or "none"
        raise ApiProblem(
            "unknown-target", f"no target named {unknown[0]!r} in the config (targets: {known})"
        )


async def held(runtime: Runtime, names: list[str]) -> list[dict[str, object]]:
    """The open circuits that hold deliveries to these targets back."""
    states = await runtime.store.target_states()
    return [circuit.held_json(h) for h in circuit.held(states, names, now_ms())]


@router.post(
    "/events/{event_id:path}/redeliver",
    response_model=models.Redelivered,
    responses=responses("not-found", "unknown-target"),
)
async def redeliver_event(
    runtime: RuntimeDep,
    caller: Caller,
    event_id: str,
    body: Annotated[models.RedeliverBody | None, Body()] = None,
) -> models.Redelivered:
    """Deliver one event again, with the same webhook-id: to every target it had, or to
    `targets` (one it never went to included)."""
    targets = body.targets if body is not None else None
    check_targets(runtime, targets or [])
    store = runtime.store
    if await store.get_event(event_id) is None:
        raise ApiProblem("not-found", "no event with this id")
    at_ms = now_ms()
    queued = 0
    for target in targets if targets else [None]:
        queued += (await store.redeliver([event_id], target, at_ms)).get(event_id, 0)
    where = f"to {', '.join(targets)}" if targets else "to every target"
    log.info("api: %s redelivered %s %s: queued %d", caller.who, event_id, where, queued)
    names = targets or [d.target for d in await store.list_deliveries(event_id=event_id)]
    return models.Redelivered(queued=queued, circuit=await held(runtime, names) if queued else [])


@router.get(
    "/events/{event_id:path}", response_model=models.EventDetail, responses=responses("not-found")
)
async def get_event(runtime: RuntimeDep, event_id: str) -> models.EventDetail:
    """One event: the CloudEvent, each delivery and every attempt, oldest first."""
    store = runtime.store
    event = await store.get_event(event_id)
    if event is None:
        raise ApiProblem("not-found", "no event with this id")
    rows = await store.list_deliveries(event_id=event_id, limit=None)
    attempts = await store.list_attempts(event_id)
    states, at_ms = await store.target_states(), now_ms()
    deliveries = [
        delivery_json(d, attempts, states.get(d.target), at_ms)
        for d in sorted(rows, key=lambda d: d.target)
    ]
    return models.EventDetail.model_validate(
        {"event": event.to_cloudevent(), "deliveries": deliveries}
    )


async def _matching(
    runtime: Runtime, rows: list[EventListing], target: str | None, status: str | None
) -> list[str]:
    """The ids of `rows` whose delivery to `target` has `status` (all when either is None)."""
    if target is None or status is None:
        return [r.event.id for r in rows]
    ids = []
    for row in rows:
        found = await runtime.store.list_deliveries(event_id=row.event.id, target=target, limit=1)
        if (found[0].status if found else "none") == status:
            ids.append(row.event.id)
    return ids


@router.post(
    "/redeliver",
    response_model=models.RangeRedelivered,
    responses=responses("bad-cursor", "unknown-target"),
)
async def redeliver_range(
    runtime: RuntimeDep, caller: Caller, body: models.RangeBody
) -> models.RangeRedelivered:
    """Deliver again the events recorded in a time range (newest first, `limit` of them per
    request; `next` says where the rest starts), or with `dry_run` only say which."""
    if body.target is not None:
        check_targets(runtime, [body.target])
    # The status filters the worst delivery when no target is named (the admin pages' filter).
    where = event_filter(
        body.source, body.type, None, None, body.since, body.until,
        body.status if body.target is None else None,
    )  # fmt: skip
    rows = await runtime.store.page_events(where, cursor_of(body.after), body.limit + 1)
    page = rows[: body.limit]
    ids = await _matching(runtime, page, body.target, body.status)
    queued, circuits = 0, []
    if ids and not body.dry_run:
        counts = await runtime.store.redeliver(list(reversed(ids)), body.target, now_ms())
        queued = sum(counts.values())
        where_text = f"to {body.target}" if body.target else "to every target"
        log.info(
            "api: %s redelivered %d events %s: queued %d", caller.who, len(ids), where_text, queued
        )
        names = [body.target] if body.target else list(runtime.config.targets)
        circuits = await held(runtime, names) if queued else []
    return models.RangeRedelivered(
        dry_run=body.dry_run,
        events=len(ids),
        queued=queued,
        ids=ids,
        circuit=circuits,
        next=next_of(rows, body.limit),
    )
