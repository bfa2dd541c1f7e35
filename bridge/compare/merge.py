"""Merging a provider's webhooks and its polled API into one source: the pure parts.

A `merge` names a webhook source and a polled source that see the same upstream changes.
Each sighting of a change, by either path, maps to one *merged event* whose id derives from
the merge's name and the change's upstream identity:

- `match: id`: the upstream event id (a webhook's id and a feed item's id, e.g. Stripe's
  `evt_...` in both the webhook body and `/v1/events`);
- `match: version`: the item's key and its version, normalized so that both paths write the
  same text for the same value (`"2026-12-01T10:00:00Z"` and `1764583200` of the same
  instant are one version).

Whichever path records the change first creates the event (its `origin` says which); the
other path's sighting is then a duplicate of it: never a second event, never a second
delivery. Both sightings are stored, which makes the safety-net figures exact
(`figures`): changes both paths saw, those only polling saw (push missed or had not
delivered them yet), those only push saw (an item that changed twice between two polls),
and how far push led polling on each change seen by both.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from bridge import metrics
from bridge.config import Config, MergeConfig
from bridge.events import Event, event_id, format_time, parse_time
from bridge.store.base import Sighting, SightingRecord

Path = Literal["push", "poll"]


def normalize_version(value: Any) -> str | None:
    """A version as text both paths agree on; None when there is none.

    Times (RFC 3339 text, Unix seconds or milliseconds) become RFC 3339 UTC with
    milliseconds; other text stays as it is; objects and lists are no version.
    """
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return None
    at_ms = parse_time(value)
    if at_ms is not None:
        return format_time(at_ms)
    text = str(value)
    return text or None


def merged_id(merge: MergeConfig, *identity: str) -> str:
    """The id of the merged event of one upstream change."""
    return event_id(merge.name, *identity)


def identity_of(merge: MergeConfig, event: Event, version: Any) -> tuple[str, ...] | None:
    """The upstream identity of a sighting under the merge's `match`; None if it has none."""
    if merge.match == "id":
        return (event.upstream_id,) if event.upstream_id else None
    if event.change == "deleted":
        # A polled delete carries no new version: it is its own change, matched by nothing.
        return ("deleted", event.id)
    normalized = normalize_version(version)
    if event.subject is None or normalized is None:
        return None
    return (event.subject, normalized)


def merged_event(
    merge: MergeConfig, event: Event, path: Path, version: Any = None
) -> tuple[Event, Sighting] | None:
    """The merged event of a member's event, and the sighting to store with it."""
    identity = identity_of(merge, event, version)
    if identity is None:
        return None
    merged = replace(event, id=merged_id(merge, *identity), source=merge.name, origin=path)
    return merged, Sighting(merge.name, path, event.source)


def count_sighting(sighting: Sighting, *, first: bool) -> None:
    """Count a stored sighting in the merge metrics."""
    metrics.MERGE_SIGHTINGS.labels(sighting.merge, sighting.path, str(first).lower()).inc()
    if first and sighting.path == "poll":
        metrics.MERGE_POLLED_FIRST.labels(sighting.merge).inc()


def unmatched(merge: MergeConfig, event: Event) -> tuple[Event, Sighting]:
    """The merged event of a polled change that has no identity to match (no version): its
    own change, under the member event's id, so that it is still delivered once."""
    merged = replace(event, id=merged_id(merge, "unmatched", event.id), source=merge.name)
    return merged, Sighting(merge.name, "poll", event.source)


def member_targets(config: Config, source: str) -> set[str]:
    """The targets that name a merged member source itself: they get its own events."""
    return {name for name, t in config.targets.items() if t.sources and source in t.sources}


# -- the figures -------------------------------------------------------------------------------


@dataclass(slots=True)
class MergeFigures:
    """What a merge's two paths saw, change by change."""

    merge: str
    both: int = 0
    only_poll: int = 0  # push missed them, or had not delivered them yet
    only_push: int = 0  # polling could not see them (changed again before the next poll)
    first_push: int = 0
    first_poll: int = 0
    # Per change seen by both: poll's recorded time minus push's (negative: poll was first).
    push_lead_ms: list[int] = field(default_factory=list)

    @property
    def changes(self) -> int:
        """Distinct upstream changes either path saw: one event each."""
        return self.both + self.only_poll + self.only_push

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON, the leads summarized."""
        leads = sorted(self.push_lead_ms)
        return {
            "merge": self.merge,
            "changes": self.changes,
            "both": self.both,
            "only_poll": self.only_poll,
            "only_push": self.only_push,
            "first_push": self.first_push,
            "first_poll": self.first_poll,
            "push_lead_ms": {
                "p50": _rank(leads, 0.50),
                "p95": _rank(leads, 0.95),
                "min": leads[0] if leads else None,
                "max": leads[-1] if leads else None,
            },
        }


def _rank(values: list[int], q: float) -> int | None:
    """The nearest-rank percentile of sorted `values`."""
    if not values:
        return None
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def figures(merge: str, rows: Iterable[SightingRecord]) -> MergeFigures:
    """The figures of a merge from its sightings (any order)."""
    by_event: dict[str, dict[str, int]] = {}
    for row in rows:
        seen = by_event.setdefault(row.event_id, {})
        seen[row.path] = min(row.recorded_ms, seen.get(row.path, row.recorded_ms))
    out = MergeFigures(merge)
    for seen in by_event.values():
        push, poll = seen.get("push"), seen.get("poll")
        if push is not None and poll is not None:
            out.both += 1
            out.push_lead_ms.append(poll - push)
            if push <= poll:
                out.first_push += 1
            else:
                out.first_poll += 1
        elif push is not None:
            out.only_push += 1
            out.first_push += 1
        else:
            out.only_poll += 1
            out.first_poll += 1
    return out
