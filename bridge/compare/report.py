"""Latency figures: how late polled events arrive against pushed ones, and what polling costs.

Per event the store keeps `time` (when the change happened upstream, if known) and
`recordedtime` (when the bridge detected or received it), and per delivery the time a target
first accepted it. From those:

- detection latency = recordedtime - time
- delivery latency  = first successful delivery - recordedtime (one sample per target)
- push lead         = recordedtime of the polled event - recordedtime of the pushed event,
                      for each change both sources of a `compare` pair saw

The computations are pure functions of plain rows (`build_report`); `load_report` is the thin
part that reads the rows through the store interface.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.compare.merge import MergeFigures, figures
from bridge.config import AdaptiveEvery, ComparePair, Config
from bridge.store.base import DeliveryTiming, EventTiming, PollState, Store

# Without a poll interval to go by, events without a time pair within this window.
DEFAULT_WINDOW_MS = 60_000


@dataclass(slots=True, frozen=True)
class Spread:
    """Percentiles of a set of latencies in milliseconds; None where there is no data."""

    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    max: float | None = None
    count: int = 0

    def to_json(self, keys: Sequence[str] = ("p50", "p90", "p99", "max")) -> dict[str, Any]:
        """The named figures as a JSON object."""
        return {key: getattr(self, key) for key in keys}


def spread(values: Iterable[float]) -> Spread:
    """p50, p90, p99 and max of `values` (linear interpolation between closest ranks)."""
    data = sorted(values)
    if not data:
        return Spread()
    if len(data) == 1:
        only = _number(data[0])
        return Spread(only, only, only, only, 1)
    cuts = statistics.quantiles(data, n=100, method="inclusive")
    return Spread(
        _number(cuts[49]), _number(cuts[89]), _number(cuts[98]), _number(data[-1]), len(data)
    )


def _number(value: float) -> float:
    # Whole milliseconds stay whole; interpolated ones keep a tenth.
    rounded = round(float(value), 1)
    return int(rounded) if rounded.is_integer() else rounded


@dataclass(slots=True, frozen=True)
class SourceReport:
    """The figures of one source and origin."""

    source: str
    origin: str
    events: int
    detection: Spread
    delivery: Spread
    # Polled sources only; None for pushed ones.
    polls: PollState | None = None
    # The detection latencies themselves, for plots.
    samples_ms: tuple[int, ...] = ()

    @property
    def bytes_per_event(self) -> float | None:
        """Bytes fetched per event found (None when nothing was found)."""
        if self.polls is None or not self.polls.events:
            return None
        return self.polls.bytes / self.polls.events

    @property
    def empty_share(self) -> float | None:
        """The share of polls that found no change, 0..1 (None before the first poll)."""
        if self.polls is None:
            return None
        made = self.polls.polls or self.polls.requests
        return min(1.0, self.polls.empty_polls / made) if made else None

    def to_json(self) -> dict[str, Any]:
        """This source's entry of `bridge latency --json`."""
        return {
            "source": self.source,
            "origin": self.origin,
            "events": self.events,
            "detection_ms": self.detection.to_json(),
            "delivery_ms": self.delivery.to_json(),
            "requests": self.polls.requests if self.polls else None,
            "empty_polls": self.polls.empty_polls if self.polls else None,
        }


@dataclass(slots=True, frozen=True)
class PairReport:
    """How a polled and a pushed source that see the same changes compare."""

    poll: str
    push: str
    matched: int
    only_poll: int
    only_push: int
    push_lead: Spread

    def to_json(self) -> dict[str, Any]:
        """This pair's entry of `bridge latency --json`."""
        return {
            "poll": self.poll,
            "push": self.push,
            "matched": self.matched,
            "only_poll": self.only_poll,
            "only_push": self.only_push,
            "push_lead_ms": self.push_lead.to_json(("p50", "p90", "max")),
        }


@dataclass(slots=True, frozen=True)
class LatencyReport:
    """The whole report: one entry per source and origin, one per compare pair."""

    sources: list[SourceReport] = field(default_factory=list)
    pairs: list[PairReport] = field(default_factory=list)
    merges: list[MergeFigures] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Exactly the shape `bridge latency --json` prints."""
        return {
            "sources": [s.to_json() for s in self.sources],
            "pairs": [p.to_json() for p in self.pairs],
            "merges": [m.to_dict() for m in self.merges],
        }


# -- pairing -------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Pairing:
    """The result of matching a polled source's events with a pushed source's."""

    leads_ms: list[int]
    only_poll: int
    only_push: int

    @property
    def matched(self) -> int:
        """How many changes both sources saw."""
        return len(self.leads_ms)


def pair_events(
    polled: Sequence[EventTiming], pushed: Sequence[EventTiming], window_ms: int
) -> Pairing:
    """Match events of the same change: same subject and time, or, when either time is
    missing, same subject with recorded times at most `window_ms` apart (nearest first).

    Returns the push lead of every match (poll recorded - push recorded) and how many events
    of each side found no partner. Events without a subject never match.
    """
    leads: list[int] = []
    by_key: dict[tuple[str, int], list[EventTiming]] = defaultdict(list)
    for ev in pushed:
        if ev.subject is not None and ev.time_ms is not None:
            by_key[(ev.subject, ev.time_ms)].append(ev)
    used_push: set[int] = set()
    left_poll: list[EventTiming] = []
    for ev in polled:
        has_key = ev.subject is not None and ev.time_ms is not None
        candidates = by_key.get((ev.subject or "", ev.time_ms or 0)) if has_key else None
        if candidates:
            partner = candidates.pop(0)
            used_push.add(id(partner))
            leads.append(ev.recorded_ms - partner.recorded_ms)
        else:
            left_poll.append(ev)
    left_push = [ev for ev in pushed if id(ev) not in used_push]
    window_leads = _pair_within_window(left_poll, left_push, window_ms)
    leads.extend(window_leads)
    return Pairing(
        leads_ms=leads,
        only_poll=len(left_poll) - len(window_leads),
        only_push=len(left_push) - len(window_leads),
    )


def _pair_within_window(
    polled: Sequence[EventTiming], pushed: Sequence[EventTiming], window_ms: int
) -> list[int]:
    pushed_by_subject: dict[str, list[EventTiming]] = defaultdict(list)
    for ev in pushed:
        if ev.subject is not None:
            pushed_by_subject[ev.subject].append(ev)
    candidates: list[tuple[int, int, int, EventTiming, EventTiming]] = []
    for i, p in enumerate(polled):
        for j, q in enumerate(pushed_by_subject.get(p.subject or "", ()) if p.subject else ()):
            gap_ms = abs(p.recorded_ms - q.recorded_ms)
            if (p.time_ms is None or q.time_ms is None) and gap_ms <= window_ms:
                candidates.append((gap_ms, i, j, p, q))
    candidates.sort(key=lambda c: (c[0], c[1], c[2]))
    taken_poll: set[int] = set()
    taken_push: set[int] = set()
    leads = []
    for _gap, _i, _j, p, q in candidates:
        if id(p) in taken_poll or id(q) in taken_push:
            continue
        taken_poll.add(id(p))
        taken_push.add(id(q))
        leads.append(p.recorded_ms - q.recorded_ms)
    return leads


def pair_window_ms(config: Config, pair: ComparePair) -> int:
    """How far apart, at most, the two sightings of a change without a time may be: two poll
    intervals plus five seconds, since a poll may come up to one interval late."""
    source = config.sources.get(pair.poll)
    if source is None or source.poll is None:
        return DEFAULT_WINDOW_MS
    every = source.poll.every
    every_s = every.max_s if isinstance(every, AdaptiveEvery) else every
    return int((2 * every_s + 5) * 1000)


# -- the report ----------------------------------------------------------------------------


def build_report(
    config: Config,
    events: Sequence[EventTiming],
    deliveries: Sequence[DeliveryTiming],
    counters: Sequence[PollState],
) -> LatencyReport:
    """The latency report from plain rows: sources in config order (then any others found),
    pairs in config order."""
    by_source: dict[tuple[str, str], list[EventTiming]] = defaultdict(list)
    for ev in events:
        by_source[(ev.source, ev.origin)].append(ev)
    delivered: dict[tuple[str, str], list[int]] = defaultdict(list)
    for d in deliveries:
        delivered[(d.source, d.origin)].append(d.delivered_ms - d.recorded_ms)
    polls = {c.source: c for c in counters}

    keys = list(by_source)
    for name, source in config.sources.items():
        origin = "poll" if source.kind == "poll" else "push"
        if not any(k[0] == name for k in keys):
            keys.append((name, origin))
    order = {name: i for i, name in enumerate(config.sources)}
    keys.sort(key=lambda k: (order.get(k[0], len(order)), k[0], k[1]))

    sources = []
    for name, origin in keys:
        rows = by_source.get((name, origin), [])
        samples = tuple(ev.recorded_ms - ev.time_ms for ev in rows if ev.time_ms is not None)
        is_polled = origin == "poll"
        sources.append(
            SourceReport(
                source=name,
                origin=origin,
                events=len(rows),
                detection=spread(samples),
                delivery=spread(delivered.get((name, origin), ())),
                polls=(polls.get(name) or PollState(name)) if is_polled else None,
                samples_ms=samples,
            )
        )

    pairs = []
    for pair in config.compare:
        pairing = pair_events(
            [ev for (s, _o), rows in by_source.items() if s == pair.poll for ev in rows],
            [ev for (s, _o), rows in by_source.items() if s == pair.push for ev in rows],
            pair_window_ms(config, pair),
        )
        pairs.append(
            PairReport(
                poll=pair.poll,
                push=pair.push,
                matched=pairing.matched,
                only_poll=pairing.only_poll,
                only_push=pairing.only_push,
                push_lead=spread(pairing.leads_ms),
            )
        )
    return LatencyReport(sources=sources, pairs=pairs)


async def load_report(
    store: Store, config: Config, since_ms: int | None = None, limit: int | None = None
) -> LatencyReport:
    """Read the rows recorded since `since_ms` (all when None; only the newest `limit` events
    and deliveries when a limit is given) and build the report."""
    events = await store.event_timings(since_ms=since_ms, limit=limit)
    deliveries = await store.delivery_timings(since_ms=since_ms, limit=limit)
    counters = await store.list_poll_states()
    report = build_report(config, events, deliveries, counters)
    for merge in config.merge:
        rows = await store.list_sightings(merge.name, since_ms=since_ms)
        report.merges.append(figures(merge.name, rows))
    return report
