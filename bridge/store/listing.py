"""What the admin pages' list of events asks of the store: a filter, a keyset cursor, a row.

Plain values of the store interface (`AdminStore.page_events`, in `base.py`, which
re-exports them); no backend, no SQL.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.events import Event

# The delivery statuses from worst to best: an event's worst delivery is the one the admin
# pages show (and filter) it by; "none" is an event that went to no target.
WORST_FIRST = ("dead", "failed", "pending", "delivered")


@dataclass(slots=True, frozen=True)
class EventFilter:
    """Which events an admin page lists; every field left None lets all through.

    `type` is a glob (`*` any run of characters, `?` one character, nothing else special);
    `since_ms` is inclusive, `until_ms` exclusive (recorded times); `delivery` is a status
    of WORST_FIRST or "none", matched against the event's worst delivery.
    """

    source: str | None = None
    type: str | None = None
    origin: str | None = None
    subject: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    delivery: str | None = None


@dataclass(slots=True, frozen=True)
class EventCursor:
    """Where a page of events ends: the (recorded_ms, id) of its last, oldest, row."""

    recorded_ms: int
    id: str


@dataclass(slots=True, frozen=True)
class EventListing:
    """One row of the events page: the event and the status of its worst delivery."""

    event: Event
    worst: str | None  # a status of WORST_FIRST, None when the event went to no target


__all__ = ["WORST_FIRST", "EventCursor", "EventFilter", "EventListing"]
