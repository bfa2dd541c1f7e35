"""Which targets an event goes to: glob patterns on its type, a source list, a content filter.

`targets_for` decides by source and type alone (callers may remember its answer per type);
`passing` then keeps the targets whose `filter`, a JMESPath expression over the whole
CloudEvent, is truthy for this event. The bridge's own events (source `bridge`) go only to
targets that ask for them: by `sources` naming `bridge`, or by an `events` pattern that
starts with `bridge.`; `events: ["*"]` alone means every configured source's events. A
filter that fails on an event (a function given the
wrong type) counts as false and is counted in `bridge_filter_errors_total{target}`: the
event is still stored, just not queued for that target. Expressions are compiled once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any

import jmespath
from jmespath.parser import ParsedResult

from bridge import metrics
from bridge.config import TargetConfig
from bridge.events import BRIDGE_SOURCE, Event

log = logging.getLogger("bridge.routing")


def matches(target: TargetConfig, source: str, type: str) -> bool:
    """True when `target` wants events of this source and type."""
    if target.sources is not None and source not in target.sources:
        return False
    if source == BRIDGE_SOURCE and target.sources is None:
        # Operational events only where asked for: a catch-all `*` is not asking.
        patterns = [p for p in target.events if p.startswith(BRIDGE_SOURCE + ".")]
        return any(fnmatchcase(type, pattern) for pattern in patterns)
    return any(fnmatchcase(type, pattern) for pattern in target.events)


def targets_for(targets: Mapping[str, TargetConfig], source: str, type: str) -> list[str]:
    """The names of the targets that want an event of this source and type, sorted."""
    return sorted(name for name, t in targets.items() if matches(t, source, type))


@lru_cache(maxsize=4096)
def compiled(expression: str) -> ParsedResult:
    """A JMESPath expression compiled once (the config checked it already)."""
    return jmespath.compile(expression)


def is_truthy(value: Any) -> bool:
    """JMESPath's truth: false, null and empty strings, lists and objects are false; 0 is true."""
    if value is None or value is False:
        return False
    if isinstance(value, str | list | dict):
        return len(value) > 0
    return True


def passing(targets: Mapping[str, TargetConfig], names: Sequence[str], event: Event) -> list[str]:
    """The names among `names` whose target's filter (if any) is truthy for `event`."""
    kept: list[str] = []
    cloudevent: dict[str, Any] | None = None
    for name in names:
        target = targets.get(name)
        if target is None or target.filter is None:
            kept.append(name)
            continue
        if cloudevent is None:
            cloudevent = event.to_cloudevent()
        try:
            wanted = is_truthy(compiled(target.filter).search(cloudevent))
        except Exception as exc:
            # An expression that cannot be evaluated on this event is false, never a crash.
            metrics.FILTER_ERRORS.labels(name).inc()
            log.debug("target %s: filter failed on %s: %s", name, event.id, exc)
            wanted = False
        if wanted:
            kept.append(name)
    return kept


def route(targets: Mapping[str, TargetConfig], event: Event) -> list[str]:
    """The names of the targets `event` goes to: source, type and filter, sorted."""
    return passing(targets, targets_for(targets, event.source, event.type), event)
