"""The shapes of the API's answers and bodies: the handlers return them, and the OpenAPI
spec is generated from them (so the spec cannot drift from what is served).

Times are ISO 8601 in UTC (`2026-01-31T08:30:00.000Z`), each also in epoch milliseconds
where a script compares them (`recorded_ms`). A list is bounded (`limit`), and says where
the rest starts in `next` (null on the last page).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Page sizes: the default and the most one request may ask for.
EVENTS_LIMIT, EVENTS_MAX = 50, 500
REDELIVER_LIMIT, REDELIVER_MAX = 100, 1000
ATTEMPTS_LIMIT, ATTEMPTS_MAX = 5, 100

DeliveryStatus = Literal["pending", "delivered", "failed", "dead"]
Worst = Literal["dead", "failed", "pending", "delivered", "none"]


class Strict(BaseModel):
    """A body the API reads: unknown fields are refused (a misspelt one must not pass), and
    no value is coerced (`0` is no `false`, `"5"` no `5`)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class EventItem(BaseModel):
    """One event in a list: what it is, and the status of its worst delivery."""

    id: str
    source: str
    type: str
    subject: str | None
    origin: str = Field(description="poll or push")
    time: str | None = Field(description="When it happened upstream, if known.")
    recorded: str = Field(description="When the bridge stored it.")
    recorded_ms: int
    latency_ms: int | None = Field(description="recorded - time, when time is known.")
    delivery: str | None = Field(
        description="Its worst delivery's status (dead, failed, pending, delivered); null when"
        " it went to no target."
    )


class EventPage(BaseModel):
    """A page of events, newest first."""

    events: list[EventItem]
    next: str | None = Field(description="The cursor of the next (older) page: pass as `after`.")


class Attempt(BaseModel):
    """One attempt to deliver (as `bridge event show --json` shows it)."""

    time: str
    status: int | None = Field(description="The target's HTTP status, if it answered.")
    duration_ms: int | None
    excerpt: str | None = Field(description="The start of the target's answer.")
    error: str | None


class Delivery(BaseModel):
    """One delivery of the event to one target, with every attempt, oldest first."""

    target: str
    status: DeliveryStatus
    attempts: int
    created: str
    delivered: str | None
    next: str | None = Field(
        description="When the next attempt is due (never a time past: now when due); null when"
        " it waits for nothing, or for its target to be enabled."
    )
    held: str | None = Field(
        description="What holds it back longer than its retry schedule: an open circuit or a"
        " disabled target."
    )
    history: list[Attempt]


class EventDetail(BaseModel):
    """One event: the CloudEvent, its deliveries and every attempt."""

    event: dict[str, Any] = Field(description="The CloudEvent (structured mode JSON).")
    deliveries: list[Delivery]


class Held(BaseModel):
    """A target whose open circuit holds redelivered deliveries back."""

    model_config = ConfigDict(extra="allow")

    target: str


class RedeliverBody(Strict):
    """Which targets to deliver one event to again."""

    targets: list[str] | None = Field(
        default=None,
        max_length=100,
        description="These targets (one it never went to included); all it had when absent.",
    )


class Redelivered(BaseModel):
    """What a redelivery queued."""

    queued: int = Field(description="Deliveries queued again.")
    circuit: list[dict[str, Any]] = Field(
        description="Each target whose open circuit holds them back, and until when."
    )


class RangeBody(Strict):
    """Events recorded in a time range to deliver again."""

    since: str = Field(
        min_length=1, description="Recorded at or after this time (ISO 8601; UTC if no zone)."
    )
    until: str | None = Field(default=None, description="Recorded before this time.")
    source: str | None = None
    type: str | None = Field(default=None, description="A type glob (`*`, `?`).")
    target: str | None = Field(default=None, description="Only to this target; all when absent.")
    status: Worst | None = Field(
        default=None,
        description="Only events whose delivery has this status: the delivery to `target` when"
        " given, else the event's worst delivery.",
    )
    dry_run: bool = Field(default=False, description="Only say which would be queued.")
    limit: int = Field(default=REDELIVER_LIMIT, ge=1, le=REDELIVER_MAX)
    after: str | None = Field(default=None, description="The `next` of the previous answer.")


class RangeRedelivered(BaseModel):
    """What a redelivery by range queued (or would queue), for one page of the range."""

    dry_run: bool
    events: int = Field(description="Events of this page that match.")
    queued: int = Field(description="Deliveries queued again (0 on a dry run).")
    ids: list[str] = Field(description="The matching events' ids, newest first.")
    circuit: list[dict[str, Any]]
    next: str | None = Field(description="Where the rest of the range starts: pass as `after`.")


class TargetAttempt(BaseModel):
    """One of a target's last attempts."""

    event_id: str
    time: str
    status: int | None
    duration_ms: int | None
    error: str | None


class TargetItem(BaseModel):
    """A target's health (as `bridge targets --json` shows it)."""

    name: str
    url: str | None = Field(description="Where it sends, masked; null for a removed target.")
    health: str
    enabled: bool
    circuit: str = Field(description="closed, half_open or open")
    open_until: str | None = Field(description="Until when an open circuit holds deliveries.")
    failures: int = Field(description="Failed attempts in a row.")
    backlog: int
    dead: int
    delivered: int


class TargetDetail(TargetItem):
    """A target with its last attempts and why it is disabled."""

    disabled_reason: str | None
    last_attempts: list[TargetAttempt]


class TargetList(BaseModel):
    """Every target of the config, and removed ones with deliveries left."""

    targets: list[TargetItem]


class TargetChange(BaseModel):
    """What enable, disable or reset did."""

    model_config = ConfigDict(extra="allow")

    target: str
    changed: bool


class SourceItem(BaseModel):
    """A source as `bridge status --json` shows it (field for field)."""

    name: str
    kind: str = Field(description="poll, webhook or merge")
    status: str
    events: int
    last_poll_ms: int | None
    last_poll: str | None
    last_event_ms: int | None
    last_event: str | None
    last_error: str | None
    mode: str | None
    gaps: int
    faults: list[str]
    merge: str | None
    sightings: int
    members: list[str]


class SourceList(BaseModel):
    """Every source."""

    sources: list[SourceItem]


class PollInfo(BaseModel):
    """A polled source's stored state."""

    polls: int
    failures: int
    consecutive_failures: int
    last_ok: str | None
    last_error: str | None
    last_status: int | None
    requests: int
    not_modified: int
    interval_s: float | None
    pending_deletes: int
    watermark: Any = Field(
        description="Where an incremental or feed poll resumes (null for other modes)."
    )
    token_kept: bool = Field(description="A delta source keeps a token (never shown).")
    budget: dict[str, Any] | None = Field(
        description="Its request budget: name, used, limit, per_s, waiting, delaying."
    )
    held_until: str | None = Field(description="Until when the upstream holds polls back.")


class SourceDetail(SourceItem):
    """A source, and for a polled one its stored state."""

    poll: PollInfo | None


class PollResult(BaseModel):
    """What `POST .../poll` did (as `POST /api/poll/SOURCE` answers)."""

    model_config = ConfigDict(extra="allow")

    polled: bool
