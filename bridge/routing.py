"""Which targets an event goes to: glob patterns on its type, and an optional source list."""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase

from bridge.config import TargetConfig


def matches(target: TargetConfig, source: str, type: str) -> bool:
    """True when `target` wants events of this source and type."""
    if target.sources is not None and source not in target.sources:
        return False
    return any(fnmatchcase(type, pattern) for pattern in target.events)


def targets_for(targets: Mapping[str, TargetConfig], source: str, type: str) -> list[str]:
    """The names of the targets that want an event of this source and type, sorted."""
    return sorted(name for name, t in targets.items() if matches(t, source, type))
