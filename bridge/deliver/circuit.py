"""What an operator is told about a target's circuit breaker: pure words and JSON.

A circuit opened by failures holds every delivery of its target, a redelivered one too,
until its cool-down ends. Nothing about that may be silent: `bridge redeliver` and the admin
Redeliver button name each open circuit with until when and how to end it now (`held`,
`held_text`); `bridge target reset` and the admin "Retry now" button close it through the
one store operation `reset_target` and say what they changed (`reset_text`); `bridge target
enable`, which closes it too, says so (`enable_text`). A running daemon takes a state
changed in the store within a second (`Deliverer._refresh`) and logs the circuit closing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bridge.events import format_time
from bridge.logs import plural
from bridge.store.base import TargetReset, TargetState
from bridge.store.deliveries import DeliveryRow


def reset_hint(name: str) -> str:
    """How to close a target's circuit now."""
    return f"'bridge target reset {name}' (or the page's \"Retry now\") sends it now"


def held(states: Mapping[str, TargetState], names: Iterable[str], now_ms: int) -> list[TargetState]:
    """The states of those of `names` whose circuit is open now (their deliveries wait)."""
    return [s for n in names if (s := states.get(n)) is not None and s.is_open(now_ms)]


def held_text(state: TargetState) -> str:
    """`target me: circuit open until ...; 'bridge target reset me' (...) sends it now`."""
    assert state.open_until_ms is not None
    until = format_time(state.open_until_ms)
    return f"target {state.name}: circuit open until {until}; {reset_hint(state.name)}"


def held_json(state: TargetState) -> dict[str, Any]:
    """One open circuit as `bridge redeliver --json` and the admin button's JSON show it."""
    until = format_time(state.open_until_ms) if state.open_until_ms is not None else None
    return {"target": state.name, "state": state.circuit, "until": until}


def _was(state: TargetState) -> str:
    """The circuit before it was closed, in words."""
    if state.circuit == "open" and state.open_until_ms is not None:
        return f"open until {format_time(state.open_until_ms)}"
    return "half-open" if state.circuit == "half_open" else state.circuit


def closed_circuit(state: TargetState) -> bool:
    """True when closing this state's circuit changes something (it was not closed)."""
    return state.circuit != "closed"


def enable_text(name: str, before: TargetState) -> str:
    """What `bridge target enable` (and the admin Enable button) did."""
    text = (
        f"target {name} enabled"
        if before.disabled_ms is not None
        else (f"target {name} was enabled already")
    )
    return text + _closed(before)


def enable_detail(before: TargetState) -> str:
    """What enabling a target changed, for the log line of the command or button."""
    was = "it was disabled" if before.disabled_ms is not None else "it was enabled already"
    return was + _closed(before)


def _closed(before: TargetState) -> str:
    if not closed_circuit(before):
        return ""
    return f"; its circuit was {_was(before)} and is now closed: its backlog is sent now"


def reset_text(name: str, reset: TargetReset) -> str:
    """What `bridge target reset` (and the admin "Retry now" button) did."""
    return f"target {name}: {reset_detail(name, reset)}"


def reset_detail(name: str, reset: TargetReset) -> str:
    """`reset_text` without the target's name in front, for the log line."""
    before = reset.before
    if closed_circuit(before):
        text = f"its circuit was {_was(before)} and is now closed"
    else:
        text = "its circuit was closed already"
    if before.disabled_ms is not None:
        return (
            f"{text}; the target is disabled: nothing is sent until 'bridge target enable {name}'"
        )
    text += ": its backlog is sent now"
    if reset.retried:
        text += f" ({plural(reset.retried, 'delivery')} waiting for a later retry included)"
    return text


def reset_json(name: str, reset: TargetReset) -> dict[str, Any]:
    """`bridge target reset --json`: the circuit before, and what changed."""
    before = reset.before
    until = format_time(before.open_until_ms) if before.open_until_ms is not None else None
    return {
        "target": name,
        "circuit": "closed",
        "changed": closed_circuit(before),
        "was": {"state": before.circuit, "until": until, "failures": before.failures},
        "retried": reset.retried,
        "enabled": before.disabled_ms is None,
    }


def next_attempt(row: DeliveryRow, state: TargetState | None, at_ms: int) -> dict[str, Any]:
    """When a waiting delivery's next attempt is, never a time already past: `ms` None means
    now (it is due, and waits only for a free slot); `why` says what holds it back longer
    than its retry schedule (an open circuit, a disabled target)."""
    if state is not None and state.disabled_ms is not None:
        return {"ms": None, "text": f"when target {row.target} is enabled again", "why": None}
    next_ms, why = row.next_ms, None
    until_ms = state.open_until_ms if state is not None and state.is_open(at_ms) else None
    if until_ms is not None and until_ms > next_ms:
        next_ms, why = until_ms, "circuit open: Retry now on the Targets page"
    if next_ms <= at_ms:
        return {"ms": None, "text": "now", "why": None}
    return {"ms": next_ms, "text": "", "why": why}


WAITING = ("pending", "failed")


def next_json(row: DeliveryRow, state: TargetState | None, at_ms: int) -> dict[str, Any]:
    """A delivery's next attempt as `bridge deliveries --json` and `bridge event show --json`
    give it: `next`, its time (now when it is due, never a time past; null when it waits for
    nothing or for its target to be enabled), and `held`, what holds it longer than its retry
    schedule (null, or the open circuit or disabled target)."""
    if row.status not in WAITING:
        return {"next": None, "held": None}
    due = next_attempt(row, state, at_ms)
    if state is not None and state.disabled_ms is not None:
        return {"next": None, "held": due["text"]}
    held_by = f"circuit open; {reset_hint(row.target)}" if due["why"] else None
    return {"next": format_time(due["ms"] if due["ms"] is not None else at_ms), "held": held_by}


def next_text(row: DeliveryRow, state: TargetState | None, at_ms: int) -> str:
    """The same in a table's cell: a time, `now`, `... (circuit open)` or `when target X is
    enabled again`; empty when the delivery waits for nothing."""
    if row.status not in WAITING:
        return ""
    due = next_attempt(row, state, at_ms)
    if due["ms"] is None:
        return str(due["text"])
    return format_time(due["ms"]) + (" (circuit open)" if due["why"] else "")
