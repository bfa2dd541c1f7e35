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

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.events import Event

# The outbox's rows: a claimed delivery, an attempt to record, a stored delivery and attempt.
from bridge.store.deliveries import AttemptRecord, AttemptRow, Claimed, DeliveryRow

# The admin pages' listing of events, part of this interface (kept in its own module).
from bridge.store.listing import WORST_FIRST as WORST_FIRST
from bridge.store.listing import EventCursor as EventCursor
from bridge.store.listing import EventFilter as EventFilter
from bridge.store.listing import EventListing as EventListing

# A target's health (disabled, circuit) and what a reset did (kept in their own module).
from bridge.store.targets import TargetReset as TargetReset
from bridge.store.targets import TargetState as TargetState

# The refresh tokens OAuth2 token endpoints rotated, part of this interface (its own module).
from bridge.store.tokens import StoredRefreshToken as StoredRefreshToken
from bridge.store.tokens import TokenStore as TokenStore

# How long a readiness probe may wait for its commit before the store counts as not writable.
PROBE_TIMEOUT_S = 5.0
# Rows of a snapshot handed to `PollStore.scan_poll_versions`'s `visit` at once.
SCAN_ROWS = 10_000


@dataclass(slots=True, frozen=True)
class NewEvent:
    """An event to record, with the names of the targets it must be delivered to."""

    event: Event
    targets: Sequence[str] = ()
    # A merged event (see compare/merge.py): which path saw it, stored whether new or not.
    sighting: Sighting | None = None


@dataclass(slots=True, frozen=True)
class Sighting:
    """One path's sighting of a merged event."""

    merge: str
    path: str  # push or poll
    source: str  # the member source that saw it


@dataclass(slots=True, frozen=True)
class SightingRecord:
    """A stored sighting, for the merge figures."""

    event_id: str
    path: str
    recorded_ms: int


class EventStore(ABC):
    """Events and their outbox rows."""

    @abstractmethod
    async def record_events(self, batch: Sequence[NewEvent]) -> list[bool]:
        """Store events and one pending delivery per target, durably, in one transaction.

        Returns, for each event, True when it is new and False when an event with the same
        id was stored before (nothing is written for it then). Concurrent callers are
        grouped into shared commits.
        """

    # How many `gather_events` calls the receiver may have in flight at once.
    gathered_calls = 1

    def gather_events(self, take: Callable[[], Sequence[NewEvent]]) -> asyncio.Future[list[bool]]:
        """Start `record_events(take())` now, with `take` called once the store is ready to
        write (here: in the next turn of the loop; SQLite: at the start of the writer
        thread's commit), so that the events arriving until then join the call. `take` is
        called at most once: the store may fail before it calls it."""
        return asyncio.ensure_future(self._record_taken(take))

    async def _record_taken(self, take: Callable[[], Sequence[NewEvent]]) -> list[bool]:
        return await self.record_events(take())

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

    @abstractmethod
    async def event_sources(self) -> list[str]:
        """The names of the sources that have events stored, sorted (a merge's included)."""


@dataclass(slots=True, frozen=True)
class PollOutcome:
    """What one poll of a source did, for its stats: counts are this poll's own."""

    at_ms: int
    duration_ms: int
    status: int | None = None
    error: str | None = None  # None when the poll succeeded
    requests: int = 0
    not_modified: bool = False
    bytes: int = 0
    items: int | None = None  # None when the poll did not see the items (an error, a 304)
    events: int = 0
    skipped: int = 0
    duplicate_keys: int = 0
    interval_s: float | None = None  # the delay until the next poll
    saved_requests: float = 0.0  # polls not made, compared with polling at the minimum interval


@dataclass(slots=True, frozen=True)
class PollState:
    """A polled source's stored state and stats."""

    source: str
    etag: str | None = None
    last_modified: str | None = None
    baselined: bool = False
    # How many snapshots were committed: part of event ids, so a change that recurs later
    # gets a new id while one re-detected after a crash gets the same.
    generation: int = 0
    last_poll_ms: int | None = None
    last_ok_ms: int | None = None
    last_duration_ms: int | None = None
    last_status: int | None = None
    last_error: str | None = None
    last_error_ms: int | None = None
    consecutive_failures: int = 0
    polls: int = 0
    failures: int = 0
    requests: int = 0
    not_modified: int = 0
    bytes: int = 0
    items: int = 0
    events: int = 0
    empty_polls: int = 0  # successful polls after the baseline that found no change
    skipped: int = 0
    duplicate_keys: int = 0
    interval_s: float | None = None
    saved_requests: float = 0.0
    # Where an incremental or feed poll resumes (JSON text, the poller's own shape).
    cursor: str | None = None
    gaps: int = 0  # feed polls that did not reach the last event seen within max_pages
    pending_deletes: int = 0  # keys the last walks lacked, not deleted yet (PendingDelete)


@dataclass(slots=True, frozen=True)
class PendingDelete:
    """A key of a snapshot that the last walks lacked, not yet deleted: how many walks in a
    row lacked it, and when the first of them was made."""

    walks: int
    since_ms: int


@dataclass(slots=True, frozen=True)
class PollCommit:
    """Everything one successful poll changes, committed in one transaction."""

    source: str
    outcome: PollOutcome
    events: Sequence[NewEvent] = ()
    # (key, version token, item as JSON text); may be made as it is read (poll/streamed.py),
    # so a backend reads it once, in order, and never holds it whole.
    upserts: Collection[tuple[str, str, str]] = ()
    deletes: Sequence[str] = ()  # keys
    etag: str | None = None
    last_modified: str | None = None
    cursor: str | None = None  # the new resume point (None: unchanged)
    gap: bool = False  # a feed poll that did not reach the last event seen
    first: bool = False  # the source's first poll: it makes the baseline
    # Every pending delete of the source after this poll, replacing the stored ones (None:
    # unchanged).
    pending: Mapping[str, PendingDelete] | None = None

    @property
    def advances(self) -> bool:
        """Whether the commit moves what the source has seen: items, events, the cursor, a
        gap, its pending deletes, or the baseline itself, even of no items (lost, a later
        poll would take real changes for a silent baseline). Then it is durable before the
        poll counts as done. A poll that changed none of that (its outcome, counts and
        validators only) acknowledges nothing and need not wait for the disk: lost to a
        power cut, the next poll asks again and finds the same."""
        return bool(
            self.events
            or self.upserts
            or self.deletes
            or self.cursor
            or self.gap
            or self.first
            or self.pending is not None
        )


class PollStore(ABC):
    """The state of polled sources: snapshots, conditional-request validators and stats."""

    @abstractmethod
    async def load_poll_state(self, source: str) -> PollState:
        """The stored state and stats of a polled source (empty for one never polled)."""

    @abstractmethod
    async def load_poll_versions(
        self, source: str, keys: Sequence[str] | None = None
    ) -> dict[str, str]:
        """The snapshot of a polled source as key -> version token, without the items.

        With `keys`, only those keys (the ones not stored are left out).
        """

    @abstractmethod
    async def scan_poll_versions(
        self, source: str, visit: Callable[[list[tuple[str, str]]], None]
    ) -> None:
        """Call `visit` with the snapshot's (key, version token) rows, a chunk at a time.

        Every stored key of the source once, in the order `load_poll_versions` gives them;
        at most one chunk (`SCAN_ROWS` rows) is held at once, so a snapshot of a million
        keys is compared without being loaded. `visit` runs on the store's own thread.
        """

    @abstractmethod
    async def load_poll_items(self, source: str, keys: Sequence[str]) -> dict[str, Any]:
        """The stored items (decoded JSON) of these keys; keys not stored are left out."""

    @abstractmethod
    async def load_poll_pending(self, source: str) -> dict[str, PendingDelete]:
        """The keys of a source's snapshot that the last walks lacked and that are not deleted
        yet (see `PollCommit.pending`), by key."""

    @abstractmethod
    async def commit_poll(self, commit: PollCommit) -> list[bool]:
        """Store a poll's events, deliveries, snapshot changes, validators and stats at once.

        One transaction: either all of it is durable or none of it is. Marks the source
        baselined and counts one more generation; with `pending`, replaces the source's
        pending deletes. Returns is_new per event, as
        `record_events` does.
        """

    @abstractmethod
    async def record_poll(self, source: str, outcome: PollOutcome) -> None:
        """Store the stats of a poll that changed no snapshot (a failure or a 304)."""

    @abstractmethod
    async def list_poll_states(self) -> list[PollState]:
        """The state and stats of every source ever polled, by name."""

    @abstractmethod
    async def acquire_poll_lease(
        self, source: str, now_ms: int, until_ms: int, handover_ms: int | None = None
    ) -> bool:
        """Take or renew this replica's lease on polling `source` until `until_ms`, atomically.

        True when this replica holds the lease now; False while another replica's lease on
        the source has not expired (that replica polls it). `handover_ms` is the earliest
        time another replica may take the lease if this one releases it (the next poll's
        due time; None: at once).
        """

    @abstractmethod
    async def release_poll_lease(self, source: str) -> None:
        """Give up this replica's lease on `source`: another replica may take it from its
        handover time on (see `acquire_poll_lease`), not before."""


class OutboxStore(ABC):
    """Deliveries: claiming due ones, recording attempts, targets' state, redelivery."""

    @abstractmethod
    async def claim_due(
        self,
        limits: Mapping[str, int],
        now_ms: int,
        lease_ms: int,
        ordered: Collection[str] = (),
    ) -> Claimed:
        """Lease up to `limits[target]` due, unleased deliveries per target until `lease_ms`.

        For the targets in `ordered` (`ordering: subject`), a delivery whose event has a
        subject is claimed only when no earlier delivery of that target and subject is still
        waiting (pending or failed, leased or not): one at a time per subject, in the order
        the deliveries were recorded; a dead or delivered one no longer holds the next back.
        """

    @abstractmethod
    async def release(self, delivery_ids: Sequence[int]) -> None:
        """Drop the leases of claimed deliveries that were not attempted."""

    @abstractmethod
    async def record_attempts(
        self, records: Sequence[AttemptRecord], released: Sequence[int] = ()
    ) -> None:
        """Store attempts with their deliveries' next states (and targets' states), and drop
        the leases of the claimed deliveries `released` (not attempted), in one transaction:
        all of it is written, or none."""

    @abstractmethod
    async def target_states(self) -> dict[str, TargetState]:
        """The persisted state of every target that has one, by name."""

    @abstractmethod
    async def save_target_state(self, state: TargetState) -> None:
        """Durably store one target's state."""

    @abstractmethod
    async def enable_target(self, name: str) -> TargetState:
        """Enable a target and close its circuit; returns its state before."""

    @abstractmethod
    async def reset_target(self, name: str, now_ms: int) -> TargetReset:
        """Close a target's circuit and make its waiting deliveries due at `now_ms` (a
        disabled one stays disabled): `bridge target reset`, "Retry now"."""

    @abstractmethod
    async def list_deliveries(
        self,
        *,
        status: str | None = None,
        target: str | None = None,
        event_id: str | None = None,
        limit: int | None = 100,
    ) -> list[DeliveryRow]:
        """Deliveries, newest first, optionally filtered by status, target and event."""

    @abstractmethod
    async def list_attempts(self, event_id: str, target: str | None = None) -> list[AttemptRow]:
        """The attempts made to deliver one event (to one target, or all), oldest first."""

    @abstractmethod
    async def redeliver(
        self, event_ids: Sequence[str], target: str | None, now_ms: int
    ) -> dict[str, int]:
        """Queue these events again (to `target`, or to every target they had); count per id."""

    @abstractmethod
    async def redeliver_dead(self, target: str | None, now_ms: int) -> int:
        """Queue every dead delivery (of `target`, or all) again; returns how many."""

    @abstractmethod
    async def delivery_counts(
        self, statuses: Sequence[str] | None = None
    ) -> dict[str, dict[str, int]]:
        """How many deliveries each target has in each status (of `statuses`, or all)."""


@dataclass(slots=True, frozen=True)
class EventTiming:
    """When an event happened upstream (`time_ms`, if known) and when the bridge recorded it."""

    source: str
    origin: str
    subject: str | None
    time_ms: int | None
    recorded_ms: int


@dataclass(slots=True, frozen=True)
class DeliveryTiming:
    """When an event was recorded and when one target first accepted it."""

    source: str
    origin: str
    target: str
    recorded_ms: int
    delivered_ms: int


class ReportStore(ABC):
    """Read-only timings for the latency report and the status page's chart."""

    @abstractmethod
    async def event_timings(
        self, *, since_ms: int | None = None, limit: int | None = None
    ) -> list[EventTiming]:
        """The times of the events recorded at or after `since_ms` (all when None), of only the
        newest `limit` events when a limit is given, oldest first."""

    @abstractmethod
    async def list_sightings(
        self, merge: str, *, since_ms: int | None = None
    ) -> list[SightingRecord]:
        """The sightings of a merge's events recorded at or after `since_ms` (all when None)."""

    @abstractmethod
    async def delivery_timings(
        self, *, since_ms: int | None = None, limit: int | None = None
    ) -> list[DeliveryTiming]:
        """The successful deliveries of events recorded at or after `since_ms`, of only the
        newest `limit` deliveries when a limit is given, oldest first."""


@dataclass(slots=True, frozen=True)
class ReplicaRow:
    """A running bridge sharing the database, and what it holds now."""

    id: str
    started_ms: int
    heartbeat_ms: int
    poll_leases: tuple[str, ...] = ()  # the sources it polls
    claims: int = 0  # deliveries it has leased and is sending


class ReplicaStore(ABC):
    """The replicas sharing one database: heartbeats, and what each holds."""

    @abstractmethod
    async def heartbeat(self, started_ms: int, now_ms: int) -> None:
        """Record that this replica (`replica_id`) is alive at `now_ms`."""

    @abstractmethod
    async def remove_replica(self) -> None:
        """Remove this replica's heartbeat and give up its poll leases (a clean stop)."""

    @abstractmethod
    async def list_replicas(self, now_ms: int, live_ms: int) -> list[ReplicaRow]:
        """Replicas whose last heartbeat is at most `live_ms` old, with what each holds."""


class RetentionStore(ABC):
    """Deleting old events whose deliveries are all finished."""

    @abstractmethod
    async def prune(self, before_ms: int, limit: int) -> int:
        """Delete, in one transaction, up to `limit` events recorded before `before_ms` whose
        deliveries are all delivered and unleased, with their deliveries and attempts.

        An event with a pending, failed or dead delivery, or one whose lease is held, is
        kept; poll snapshots are never touched. Returns how many events were deleted.
        """


class AdminStore(ABC):
    """What the admin pages read and change beyond the engines' interfaces."""

    @abstractmethod
    async def page_events(
        self,
        where: EventFilter,
        after: EventCursor | None,
        limit: int,
        *,
        oldest_first: bool = False,
    ) -> list[EventListing]:
        """Up to `limit` events matching `where`, newest first by (recorded_ms, id), strictly
        older than `after` when given: keyset paging on an index, as fast on the
        hundredth page as on the first (never an OFFSET). With `oldest_first`, oldest first
        and strictly newer than `after` (the API's stream of new events)."""

    @abstractmethod
    async def list_target_attempts(self, target: str, limit: int) -> list[AttemptRow]:
        """The newest `limit` attempts of one target, newest first."""

    @abstractmethod
    async def disable_target(self, name: str, reason: str, now_ms: int) -> bool:
        """Disable a target (its deliveries wait, as after a 410) until `enable_target`;
        True when it was enabled."""

    @abstractmethod
    async def revoke_session(self, session_id: str, expires_ms: int, now_ms: int) -> None:
        """Record that the admin session `session_id` logged out: its cookie, valid until
        `expires_ms`, is refused from now on, after a restart and by every process on this
        database. Revocations whose session has expired by `now_ms` are deleted on the way."""

    @abstractmethod
    async def is_session_revoked(self, session_id: str) -> bool:
        """True when the admin session `session_id` logged out (`revoke_session`)."""


class Store(
    EventStore,
    PollStore,
    OutboxStore,
    ReportStore,
    ReplicaStore,
    RetentionStore,
    AdminStore,
    TokenStore,
):
    """The whole store: open it, use it, close it.

    `replica_id` names this process among the bridges sharing the database: its claims of
    deliveries and its poll leases are recorded under it.
    """

    replica_id: str

    @abstractmethod
    def open(self) -> None:
        """Create or migrate the database and start the writer; raise StoreError if impossible."""

    @abstractmethod
    def close(self) -> None:
        """Finish pending writes and close every connection."""

    @abstractmethod
    async def write_problem(self) -> str | None:
        """Why a write cannot be committed right now, in one line, or None when one can (for
        `/readyz`). Probes with a write that needs new space, as an event does: on a full
        disk a write that only rewrites a page can still succeed while every event fails."""

    async def check_writable(self) -> bool:
        """True when a write can be committed right now."""
        return await self.write_problem() is None

    def take_ownership(self) -> None:
        """Make this process the only bridge daemon on this database, until `close`; raise
        StoreError when another process already is. A database server is shared by
        replicas on purpose: nothing to take there."""
        return None

    def lost_reason(self) -> str | None:
        """Why this store can no longer keep what it is given, for good (its database file
        was deleted or replaced under the running process), or None. Cheap: the daemon asks
        once a second. A database server has no such file: None."""
        return None

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the data lives, safe to show (no password)."""
