"""The summary of a bridge: each source's last poll or receive and each target's health.

`collect` reads the store through the interfaces the engines use (poll states, event counts,
target states, delivery counts); the judgements (`source_status`, `target_health`) are pure
functions of what it read, so they are tested without a database. A budget's use lives in
the running daemon, not in the store: the caller passes what the daemon reported, if any.
The same summary serves `bridge status` in the terminal and, as JSON, scripts and the status
page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bridge.budgets import BudgetUse
from bridge.compare.merge import figures
from bridge.config import Config, MergeConfig, PollConfig
from bridge.events import BRIDGE_SOURCE, format_time, now_ms
from bridge.poll.modes import Watermark
from bridge.store import Store
from bridge.store.base import PollState, SightingRecord, TargetState

# The delivery statuses a target's summary counts; delivered rows pile up and are not read.
WAITING = ("pending", "failed", "dead")
LIVE_S = 10.0  # a replica silent for longer than this is taken as gone (see daemon/heartbeat.py)


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
    mode: str | None = None  # a polled source's mode: snapshot, incremental or feed
    gaps: int = 0  # feed polls that did not reach the last event seen
    # What an incremental source's cursor got wrong (missed changes, values too far ahead).
    faults: list[str] = field(default_factory=list)
    # A member of a merge: the merge, and the changes it saw there (recorded under the
    # merge's name, not its own: its own events are those for targets that name it).
    merge: str | None = None
    sightings: int = 0
    members: list[str] = field(default_factory=list)  # a merge: its webhook and polled source


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
class ReplicaSummary:
    """One live replica (a bridge sharing the database) and what it holds."""

    id: str
    started_ms: int
    heartbeat_ms: int
    polls: list[str]  # the sources whose poll lease it holds
    claims: int  # deliveries it has leased and is sending


@dataclass(slots=True, frozen=True)
class BudgetSummary:
    """One request budget: its limit, its sources and, when the daemon told, its use."""

    name: str
    limit: int
    per_s: float
    sources: list[str]
    used: int | None = None  # requests in the current window; None when unknown
    waiting: int | None = None  # polls held back by it right now
    delaying: bool | None = None  # it held polls back within the last window


@dataclass(slots=True, frozen=True)
class Summary:
    """The whole status: where the data is, every source and target, the live replicas."""

    database: str
    sources: list[SourceSummary]
    targets: list[TargetSummary]
    replicas: list[ReplicaSummary] = field(default_factory=list)
    budgets: list[BudgetSummary] = field(default_factory=list)
    # Per merge: the changes each path saw (compare/merge.py `MergeFigures.to_dict`).
    merges: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: times in milliseconds since the epoch, null when unknown."""
        return asdict(self)


# The keys of the summary that are times (epoch milliseconds): each also given as ISO 8601.
TIME_KEYS = ("last_poll_ms", "last_event_ms", "started_ms", "heartbeat_ms")


def with_iso_times(value: Any) -> Any:
    """`value` with an ISO 8601 twin (`last_poll`) beside every time in milliseconds."""
    if isinstance(value, list):
        return [with_iso_times(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: with_iso_times(v) for k, v in value.items()}
    for key in TIME_KEYS:
        if key in out:
            ms = out[key]
            out[key.removesuffix("_ms")] = format_time(ms) if isinstance(ms, int) else None
    return out


def budget_summaries(config: Config, uses: Sequence[BudgetUse] | None) -> list[BudgetSummary]:
    """Every configured budget, with its use where `uses` (the daemon's report) has it."""
    by_name = {use.name: use for use in uses or ()}
    out = []
    for name, budget in config.budgets.items():
        sources = [
            sname
            for sname, source in config.sources.items()
            if source.poll is not None and source.poll.budget == name
        ]
        use = by_name.get(name)
        out.append(
            BudgetSummary(
                name,
                budget.requests,
                budget.per_s,
                sources,
                used=use.used if use else None,
                waiting=use.waiting if use else None,
                delaying=use.delaying if use else None,
            )
        )
    return out


def per_text(seconds: float) -> str:
    """A window as the config writes it: `5s`, `1h`, `250ms`."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"


def budget_use_text(budget: BudgetSummary) -> str:
    """`7 / 10 per 5s`, with `-` for a use no daemon reported."""
    used = "-" if budget.used is None else str(budget.used)
    return f"{used} / {budget.limit} per {per_text(budget.per_s)}"


def backlog_of(counts: Mapping[str, int]) -> int:
    """Deliveries still to be made: pending, or failed and waiting for their retry."""
    return counts.get("pending", 0) + counts.get("failed", 0)


def source_status(
    kind: str, poll: PollState | None, events: int, faults: Sequence[str] = ()
) -> str:
    """`ok`, `ok, N gaps`, `cursor fault`, `failing (N in a row)`, `never polled` or
    `no events yet`.

    `events` counts what the source took: for a merge's member, its sightings too."""
    if kind == "poll":
        if poll is None or poll.last_poll_ms is None:
            return "never polled"
        if poll.consecutive_failures:
            return f"failing ({poll.consecutive_failures} in a row)"
        if faults:
            return "cursor fault"
        if poll.gaps:
            return f"ok, {poll.gaps} gap{'s' if poll.gaps > 1 else ''}"
        return "ok"
    return "ok" if events else "no events yet"


def target_health(state: TargetState, counts: Mapping[str, int]) -> str:
    """Worst first: `disabled`, `circuit open`, `probing`, `failing (N in a row)`,
    `retrying`, `dead letters` or `ok`."""
    if state.disabled_ms is not None:
        return "disabled"
    if state.circuit == "open":
        return "circuit open"
    if state.circuit == "half_open":
        return "probing"
    if state.failures:
        return f"failing ({state.failures} in a row)"
    if counts.get("failed"):
        return "retrying"
    if counts.get("dead"):
        return "dead letters"
    return "ok"


@dataclass(slots=True)
class _Seen:
    """A merge member's sightings: how many, and the newest one's time."""

    merge: str
    count: int = 0
    last_ms: int | None = None


def _path_of(config: Config, source: str) -> str:
    """The path of a merge member's sightings: `poll` for the polled source, else `push`."""
    return "poll" if config.sources[source].kind == "poll" else "push"


def _sightings(
    config: Config, merge: MergeConfig, rows: Sequence[SightingRecord]
) -> dict[str, _Seen]:
    """Each member source of `merge` and its sightings."""
    out = {name: _Seen(merge.name) for name in merge.sources}
    by_path = {_path_of(config, name): out[name] for name in merge.sources}
    for row in rows:
        seen = by_path.get(row.path)
        if seen is not None:
            seen.count += 1
            seen.last_ms = max(row.recorded_ms, seen.last_ms or row.recorded_ms)
    return out


def _latest(*times: int | None) -> int | None:
    return max((t for t in times if t is not None), default=None)


async def _source(
    config: Config,
    store: Store,
    name: str,
    poll: PollState | None,
    seen: _Seen | None,
    kinds: Mapping[str, str],
) -> SourceSummary:
    configured = config.sources.get(name)
    # A source known only from the database (read without its config) is of the kind the
    # running daemon says, else polled if it has a poll state.
    kind = configured.kind if configured else kinds.get(name, "poll" if poll else "webhook")
    events = await store.count_events(source=name)
    latest = await store.list_events(source=name, limit=1) if events else []
    faults = cursor_faults(configured.poll if configured else None, poll)
    failing = poll is not None and poll.consecutive_failures
    sightings = seen.count if seen else 0
    return SourceSummary(
        name=name,
        kind=kind,
        status=source_status(kind, poll, events + sightings, faults),
        events=events,
        last_poll_ms=poll.last_poll_ms if poll else None,
        last_event_ms=_latest(
            latest[0].recorded_ms if latest else None, seen.last_ms if seen else None
        ),
        last_error=poll.last_error if poll and failing else "; ".join(faults) or None,
        mode=configured.poll.mode if configured and configured.poll else None,
        gaps=poll.gaps if poll else 0,
        faults=faults,
        merge=seen.merge if seen else None,
        sightings=sightings,
    )


async def _merged(store: Store, name: str, members: list[str]) -> SourceSummary:
    """A merge as a source of its own: the events recorded under its name."""
    events = await store.count_events(source=name)
    latest = await store.list_events(source=name, limit=1) if events else []
    return SourceSummary(
        name=name,
        kind="merge",
        status=source_status("merge", None, events),
        events=events,
        last_poll_ms=None,
        last_event_ms=latest[0].recorded_ms if latest else None,
        last_error=None,
        members=members,
    )


def cursor_faults(config: PollConfig | None, poll: PollState | None) -> list[str]:
    """An incremental source's cursor faults, from its stored watermark."""
    if config is None or config.mode != "incremental" or poll is None:
        return []
    return Watermark.load(poll.cursor).faults(config.cursor)


async def _last_error(store: Store, target: str) -> str | None:
    """The error of the newest delivery still failing or dead, if any."""
    rows = [
        row
        for status in ("failed", "dead")
        for row in await store.list_deliveries(status=status, target=target, limit=1)
    ]
    rows.sort(key=lambda row: row.id, reverse=True)
    return next((row.last_error for row in rows if row.last_error), None)


async def collect(
    config: Config,
    store: Store,
    budgets: Sequence[BudgetUse] | None = None,
    *,
    from_store: bool = False,
    kinds: Mapping[str, str] | None = None,
    targets_known: Sequence[str] = (),
) -> Summary:
    """Read the summary of every configured source and target from `store`.

    `budgets` is the budgets' use as the running daemon reports it (None: unknown). With
    `from_store` (no config could be read) the sources are those with a poll state or
    events in the store, and those of `kinds` (what the running daemon reported: name ->
    kind), and the targets those with a state or deliveries in the store, and those of
    `targets_known`.
    """
    kinds = kinds or {}
    polls = {state.source: state for state in await store.list_poll_states()}
    states = await store.target_states()
    counts = await store.delivery_counts(WAITING)
    if from_store:
        stored = set(await store.event_sources()) - {BRIDGE_SOURCE}  # not a source to judge
        source_names = sorted(set(polls) | stored | set(kinds))
    else:
        source_names = list(config.sources)
    if from_store:
        target_names = sorted(set(states) | set(counts) | set(targets_known))
    else:
        target_names = list(config.targets)
    sightings = {m.name: await store.list_sightings(m.name) for m in config.merge}
    seen: dict[str, _Seen] = {}
    for m in config.merge:
        seen |= _sightings(config, m, sightings[m.name])
    sources = [
        await _source(config, store, name, polls.get(name), seen.get(name), kinds)
        for name in source_names
    ]
    if not from_store:
        sources += [await _merged(store, m.name, list(m.sources)) for m in config.merge]
    targets = []
    for name in target_names:
        state = states.get(name) or TargetState(name)
        by_status = counts.get(name, {})
        targets.append(
            TargetSummary(
                name=name,
                health=target_health(state, by_status),
                circuit=state.circuit,
                backlog=backlog_of(by_status),
                dead=by_status.get("dead", 0),
                last_error=state.disabled_reason or await _last_error(store, name),
            )
        )
    replicas = [
        ReplicaSummary(r.id, r.started_ms, r.heartbeat_ms, list(r.poll_leases), r.claims)
        for r in await store.list_replicas(now_ms(), round(LIVE_S * 1000))
    ]
    merges = [
        {
            **figures(m.name, sightings[m.name]).to_dict(),
            "members": [
                {"source": name, "path": _path_of(config, name),
                 "sightings": seen[name].count, "last_ms": seen[name].last_ms}
                for name in m.sources
            ],
        }
        for m in config.merge
    ]  # fmt: skip
    return Summary(
        store.location, sources, targets, replicas, budget_summaries(config, budgets), merges
    )
