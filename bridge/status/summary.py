"""The summary of a bridge: each source's last poll or receive and each target's health.

`collect` reads the store through its interface; the judgements (`source_status`,
`target_health`) are pure functions of what it read, so they are tested without a database.
The same summary serves `bridge status` in the terminal and, as JSON, scripts and the status
page.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from bridge.config import Config
from bridge.store import SourceActivity, Store, TargetBacklog


@dataclass(slots=True, frozen=True)
class SourceSummary:
    """One source as the status shows it."""

    name: str
    kind: str
    status: str
    events: int
    last_poll_ms: int | None
    last_event_ms: int | None
    last_error: str | None


@dataclass(slots=True, frozen=True)
class TargetSummary:
    """One target as the status shows it."""

    name: str
    health: str
    circuit: str
    backlog: int
    dead: int
    last_error: str | None


@dataclass(slots=True, frozen=True)
class Summary:
    """The whole status: where the data is, every source and every target."""

    database: str
    sources: list[SourceSummary]
    targets: list[TargetSummary]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: times in milliseconds since the epoch, null when unknown."""
        return asdict(self)


def source_status(kind: str, state: SourceActivity) -> str:
    """`ok`, `failing (N in a row)`, `never polled` or `no events yet`."""
    if kind == "poll":
        if state.last_poll_ms is None:
            return "never polled"
        if state.consecutive_failures:
            return f"failing ({state.consecutive_failures} in a row)"
        return "ok"
    return "ok" if state.last_event_ms is not None else "no events yet"


def target_health(state: TargetBacklog) -> str:
    """`disabled`, `circuit open`, `probing`, `retrying`, `dead letters` or `ok`, worst first."""
    if state.disabled_ms is not None:
        return "disabled"
    if state.circuit == "open":
        return "circuit open"
    if state.circuit == "half_open":
        return "probing"
    if state.failed:
        return "retrying"
    if state.dead:
        return "dead letters"
    return "ok"


async def collect(config: Config, store: Store) -> Summary:
    """Read the summary of every configured source and target from `store`."""
    activity = await store.source_activity(list(config.sources))
    backlog = await store.target_backlog(list(config.targets))
    sources = [
        SourceSummary(
            name=s.source,
            kind=config.sources[s.source].kind,
            status=source_status(config.sources[s.source].kind, s),
            events=s.events,
            last_poll_ms=s.last_poll_ms,
            last_event_ms=s.last_event_ms,
            last_error=s.last_error,
        )
        for s in activity
    ]
    targets = [
        TargetSummary(
            name=t.target,
            health=target_health(t),
            circuit=t.circuit,
            backlog=t.backlog,
            dead=t.dead,
            last_error=t.disabled_reason or t.last_error,
        )
        for t in backlog
    ]
    return Summary(database=store.location, sources=sources, targets=targets)
