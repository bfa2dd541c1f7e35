"""Each target's health as `bridge targets --json` and `GET /api/v1/targets` show it: pure,
from the config, the targets' stored states and their deliveries counted by status."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bridge.config import Config
from bridge.events import format_time
from bridge.store.base import TargetState


def health_text(state: TargetState, at_ms: int) -> str:
    """`ok`, `disabled since ... (why)`, `failing: circuit open until ...` or `failing (N
    failures in a row)`."""
    if state.disabled_ms is not None:
        return f"disabled since {format_time(state.disabled_ms)} ({state.disabled_reason})"
    if state.is_open(at_ms) and state.open_until_ms is not None:
        return f"failing: circuit open until {format_time(state.open_until_ms)}"
    if state.circuit != "closed" or state.failures:
        return f"failing ({state.failures} failures in a row)"
    return "ok"


def target_names(config: Config, counts: Mapping[str, Mapping[str, int]]) -> list[str]:
    """The config's targets, then removed ones that still have deliveries, sorted."""
    return list(config.targets) + sorted(set(counts) - set(config.targets))


def target_row(
    config: Config,
    name: str,
    state: TargetState,
    by_status: Mapping[str, int],
    at_ms: int,
    shown: Callable[[str], str],
) -> dict[str, Any]:
    """One target: where it sends (`shown`: masked), health, circuit, backlog, dead."""
    target = config.targets.get(name)
    return {
        "name": name,
        "url": shown(target.address) if target else None,
        "health": health_text(state, at_ms) if target else "removed from the config",
        "enabled": state.disabled_ms is None,
        "circuit": state.circuit,
        "open_until": (
            format_time(state.open_until_ms)
            if state.is_open(at_ms) and state.open_until_ms is not None
            else None
        ),
        "failures": state.failures,
        "backlog": by_status.get("pending", 0) + by_status.get("failed", 0),
        "dead": by_status.get("dead", 0),
        "delivered": by_status.get("delivered", 0),
    }


def target_rows(
    config: Config,
    states: Mapping[str, TargetState],
    counts: Mapping[str, Mapping[str, int]],
    at_ms: int,
    shown: Callable[[str], str],
) -> list[dict[str, Any]]:
    """Every target (`target_names`) as `target_row` shows it."""
    return [
        target_row(
            config, name, states.get(name) or TargetState(name), counts.get(name, {}), at_ms, shown
        )
        for name in target_names(config, counts)
    ]
