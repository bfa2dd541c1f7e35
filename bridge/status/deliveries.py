"""An event's deliveries and their attempts as plain data, as `bridge event show --json` and
`GET /api/v1/events/{id}` show them (pure)."""

from __future__ import annotations

from typing import Any

from bridge.deliver import circuit
from bridge.events import format_time
from bridge.store.base import TargetState
from bridge.store.deliveries import AttemptRow, DeliveryRow


def _time(ms: int | None) -> str | None:
    return format_time(ms) if ms is not None else None


def attempt_json(a: AttemptRow) -> dict[str, Any]:
    """One attempt as plain data: when, the answer's status, how long, excerpt and error."""
    return {
        "time": format_time(a.at_ms),
        "status": a.status_code,
        "duration_ms": a.duration_ms,
        "excerpt": a.response,
        "error": a.error,
    }


def delivery_json(
    d: DeliveryRow, attempts: list[AttemptRow], state: TargetState | None, at_ms: int
) -> dict[str, Any]:
    """One delivery of the event, with every attempt made, oldest first, and its next attempt
    (`circuit.next_json`: never a time past, `held` by an open circuit or a disabled target)."""
    return {
        "target": d.target,
        "status": d.status,
        "attempts": d.attempts,
        "created": format_time(d.created_ms),
        "delivered": _time(d.delivered_ms),
        **circuit.next_json(d, state, at_ms),
        "history": [attempt_json(a) for a in attempts if a.delivery_id == d.id],
    }
