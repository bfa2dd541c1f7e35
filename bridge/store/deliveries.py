"""The outbox's rows as the store interface passes them: a due delivery claimed with its
event (`Claim`, `Claimed`), a finished attempt to record (`AttemptRecord`), and a delivery
and an attempt as stored (`DeliveryRow`, `AttemptRow`)."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.events import Event
from bridge.store.targets import TargetState


# Not frozen, though nothing changes one once made: one is made for every delivery, and a
# frozen dataclass's `__init__` (each field set through `object.__setattr__`) costs three
# to four times as much.
@dataclass(slots=True)
class Claim:
    """A due delivery leased to one worker, with its event."""

    delivery_id: int
    target: str
    event: Event
    attempts: int  # attempts made before this one, before any redelivery included
    # The attempts made before the last redelivery: its retry schedule starts again there.
    retry_from: int = 0


@dataclass(slots=True, frozen=True)
class Claimed:
    """What `claim_due` leased, and when the next unleased delivery of those targets is due."""

    claims: list[Claim]
    next_due_ms: int | None


# Not frozen, though nothing changes one once made: one is made for every delivery, and a
# frozen dataclass's `__init__` (each field set through `object.__setattr__`) costs three
# to four times as much.
@dataclass(slots=True)
class AttemptRecord:
    """One finished attempt and the next state of its delivery (and maybe of its target)."""

    delivery_id: int
    event_id: str
    target: str
    at_ms: int
    duration_ms: int
    status_code: int | None
    response: str | None
    error: str | None
    status: str  # the delivery's status after the attempt
    next_ms: int
    target_state: TargetState | None = None
    transformed: bool = False  # the target's `transform` shaped what was sent


@dataclass(slots=True, frozen=True)
class DeliveryRow:
    """One delivery of one event to one target, as stored."""

    id: int
    event_id: str
    target: str
    status: str  # pending | delivered | failed | dead
    attempts: int
    next_ms: int
    lease_ms: int | None
    created_ms: int
    delivered_ms: int | None
    last_code: int | None
    last_error: str | None
    transformed: bool = False  # the last attempt sent `data` as the target's transform shaped it


@dataclass(slots=True, frozen=True)
class AttemptRow:
    """One recorded attempt of a delivery."""

    delivery_id: int
    event_id: str
    target: str
    at_ms: int
    duration_ms: int | None
    status_code: int | None
    response: str | None
    error: str | None
