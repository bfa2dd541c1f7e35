"""The store interface: everything the engines may ask of the database.

Engines (poll, receive, deliver) and the CLI know only this interface; the SQLite backend
(and later a PostgreSQL one) implements it. No SQL lives outside `bridge/store/`.

Invariants every backend keeps:
- An event and its deliveries (one per matching target) are committed in one transaction.
- A poll's events and its new snapshot are committed in one transaction.
- A write that acknowledges something to the outside world is durable before the call returns.
- A write that cannot be committed raises `StoreUnavailable`; nothing is half-written.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from bridge.events import Event


@dataclass(slots=True, frozen=True)
class NewEvent:
    """An event to record, with the names of the targets it must be delivered to."""

    event: Event
    targets: Sequence[str] = ()


class EventStore(ABC):
    """Events and their outbox rows."""

    @abstractmethod
    async def record_events(self, batch: Sequence[NewEvent]) -> list[bool]:
        """Store events and one pending delivery per target, durably, in one transaction.

        Returns, for each event, True when it is new and False when an event with the same
        id was stored before (nothing is written for it then). Concurrent callers are
        grouped into shared commits.
        """

    async def record_event(self, event: Event, targets: Sequence[str] = ()) -> bool:
        """Store one event and its deliveries; True when new, False for a duplicate."""
        (is_new,) = await self.record_events([NewEvent(event, targets)])
        return is_new

    @abstractmethod
    async def get_event(self, event_id: str) -> Event | None:
        """The event with this id, or None."""

    @abstractmethod
    async def list_events(
        self,
        *,
        source: str | None = None,
        type: str | None = None,
        since_ms: int | None = None,
        limit: int | None = 100,
    ) -> list[Event]:
        """Events, newest first, optionally filtered by source, type and recorded time."""

    @abstractmethod
    async def count_events(self, *, source: str | None = None) -> int:
        """How many events are stored (for one source, or all)."""


class PollStore:
    """The state of polled sources: snapshots, conditional-request validators and stats.

    Filled in by the polling engine's issue; see bridge/poll/.
    """


class OutboxStore:
    """Deliveries: claiming due ones, recording attempts, targets' state, redelivery.

    Filled in by the delivery engine's issue; see bridge/deliver/.
    """


class Store(EventStore, PollStore, OutboxStore):
    """The whole store: open it, use it, close it."""

    @abstractmethod
    def open(self) -> None:
        """Create or migrate the database and start the writer; raise StoreError if impossible."""

    @abstractmethod
    def close(self) -> None:
        """Finish pending writes and close every connection."""

    @abstractmethod
    async def check_writable(self) -> bool:
        """True when a write can be committed right now (for `/readyz`)."""

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the data lives, safe to show (no password)."""
