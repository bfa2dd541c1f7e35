"""What the admin pages show, shaped from store rows: pure functions, no I/O.

The events page's filters come from the query string (`filter_of`), its cursor is the
(recorded_ms, id) of the last row shown, written as URL-safe base64 of JSON (`cursor_text`,
`cursor_of`); links keep the filters and add the cursor. Times in the forms are UTC.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from bridge import jsontext
from bridge.deliver.circuit import next_attempt
from bridge.events import Event
from bridge.store.base import WORST_FIRST, EventCursor, EventFilter, EventListing, TargetState
from bridge.store.deliveries import AttemptRow, DeliveryRow

PAGE_SIZE = 50
# A response excerpt is shown up to this many characters (the store keeps what it kept).
EXCERPT_CHARS = 2000
FILTER_FIELDS = ("source", "type", "origin", "subject", "since", "until", "delivery")
_ORIGINS = ("poll", "push")
_DELIVERIES = (*WORST_FIRST, "none")


class BadQuery(ValueError):
    """A filter or cursor in the query string that cannot be read."""


@dataclass(slots=True, frozen=True)
class EventsQuery:
    """The events page's request: its filter, as typed and as read, and its cursor."""

    form: dict[str, str]
    where: EventFilter
    after: EventCursor | None


def event_href(event_id: str) -> str:
    """The event page's path (the id percent-encoded, slashes included)."""
    return "/admin/events/" + quote(event_id, safe="")


_MIN_MS, _MAX_MS = -(2**63), 2**63 - 1


def cursor_text(cursor: EventCursor) -> str:
    """The cursor as it goes into a link."""
    raw = jsontext.dumps([cursor.recorded_ms, cursor.id]).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def cursor_of(text: str) -> EventCursor:
    """The cursor of a link; BadQuery when it is not one."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = jsontext.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise BadQuery("the page's cursor cannot be read: start from the newest") from exc
    ok = isinstance(value, list) and len(value) == 2
    if not ok or not isinstance(value[0], int) or not isinstance(value[1], str):
        raise BadQuery("the page's cursor cannot be read: start from the newest")
    if isinstance(value[0], bool) or not _MIN_MS <= value[0] <= _MAX_MS:
        # Both databases keep times as 64-bit integers: a larger one is no cursor of ours.
        raise BadQuery("the page's cursor is out of range: start from the newest")
    return EventCursor(value[0], value[1])


def _utc_ms(text: str, field: str) -> int:
    """Milliseconds from a `datetime-local` value (or any ISO 8601 time), read as UTC."""
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadQuery(f"{field}: {text!r} is not a time like 2026-01-31T08:30") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


def query_of(params: Mapping[str, str]) -> EventsQuery:
    """The events page's filter and cursor from its query string; BadQuery for a bad one."""
    form = {name: params.get(name, "").strip() for name in FILTER_FIELDS}
    if form["origin"] and form["origin"] not in _ORIGINS:
        raise BadQuery(f"origin: {form['origin']!r} is neither poll nor push")
    if form["delivery"] and form["delivery"] not in _DELIVERIES:
        raise BadQuery(f"worst delivery: {form['delivery']!r} is not a delivery status")
    where = EventFilter(
        source=form["source"] or None,
        type=form["type"] or None,
        origin=form["origin"] or None,
        subject=form["subject"] or None,
        since_ms=_utc_ms(form["since"], "recorded from") if form["since"] else None,
        until_ms=_utc_ms(form["until"], "until") if form["until"] else None,
        delivery=form["delivery"] or None,
    )
    after = params.get("after")
    return EventsQuery(form, where, cursor_of(after) if after else None)


def events_href(form: Mapping[str, str], after: EventCursor | None = None) -> str:
    """The events page with these filters (and from this cursor)."""
    params = [(name, form[name]) for name in FILTER_FIELDS if form.get(name)]
    if after is not None:
        params.append(("after", cursor_text(after)))
    return "/admin/events" + (f"?{urlencode(params)}" if params else "")


def event_rows(listings: Sequence[EventListing]) -> list[dict[str, Any]]:
    """The events page's rows."""
    return [
        {
            "href": event_href(row.event.id),
            "recorded_ms": row.event.recorded_ms,
            "type": row.event.type,
            "subject": row.event.subject or "",
            "source": row.event.source,
            "origin": row.event.origin,
            "latency_ms": (
                row.event.recorded_ms - row.event.time_ms if row.event.time_ms is not None else None
            ),
            "worst": row.worst,
        }
        for row in listings
    ]


def events_page(query: EventsQuery, listings: Sequence[EventListing]) -> dict[str, Any]:
    """The events page's context from one page read with `PAGE_SIZE + 1` rows (the extra
    row only says that there is an older page)."""
    shown = list(listings[:PAGE_SIZE])
    older = None
    if len(listings) > PAGE_SIZE:
        last = shown[-1].event
        older = events_href(query.form, EventCursor(last.recorded_ms, last.id))
    return {
        "form": query.form,
        "rows": event_rows(shown),
        "older_href": older,
        "first_href": events_href(query.form) if query.after is not None else None,
    }


def _excerpt(text: str | None) -> str | None:
    if text is None or len(text) <= EXCERPT_CHARS:
        return text
    return text[:EXCERPT_CHARS] + f"… ({len(text) - EXCERPT_CHARS} more characters)"


def event_page(
    event: Event,
    deliveries: Sequence[DeliveryRow],
    attempts: Sequence[AttemptRow],
    targets: Sequence[str],
    states: Mapping[str, TargetState] | None = None,
    at_ms: int = 0,
) -> dict[str, Any]:
    """The event page's context: its CloudEvent, each delivery with its attempts (oldest
    first) and, while it waits, its next attempt (`next_attempt`, from the targets' `states`
    at `at_ms`), and the configured targets it never went to. It redraws itself every 2 s
    while a delivery waits for its attempt."""
    states = states or {}
    by_target: dict[str, list[dict[str, Any]]] = {}
    for a in attempts:
        by_target.setdefault(a.target, []).append(
            {
                "at_ms": a.at_ms,
                "status_code": a.status_code,
                "duration_ms": a.duration_ms,
                "response": _excerpt(a.response),
                "error": a.error,
            }
        )
    rows = [
        {
            "target": d.target,
            "status": d.status,
            "attempts": d.attempts,
            "next": next_attempt(d, states.get(d.target), at_ms),
            "delivered_ms": d.delivered_ms,
            "attempt_rows": by_target.get(d.target, []),
        }
        for d in sorted(deliveries, key=lambda d: d.target)
    ]
    went_to = {d.target for d in deliveries}
    waiting = any(d.status == "pending" for d in deliveries)
    return {
        "event": event,
        "latency_ms": event.recorded_ms - event.time_ms if event.time_ms is not None else None,
        "cloudevent": jsontext.dumps(event.to_cloudevent(), indent=2),
        "deliveries": rows,
        "other_targets": [name for name in targets if name not in went_to],
        "refresh_s": 2 if waiting else 0,
    }


def attempt_rows(attempts: Sequence[AttemptRow]) -> list[dict[str, Any]]:
    """A target's last attempts, each with a link to its event."""
    return [
        {
            "at_ms": a.at_ms,
            "event_id": a.event_id,
            "href": event_href(a.event_id),
            "status_code": a.status_code,
            "duration_ms": a.duration_ms,
            "error": a.error,
        }
        for a in attempts
    ]
