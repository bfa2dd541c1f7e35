"""What the delivery engine says in its log of an attempt (one line and its JSON fields) and
of a circuit's change (one line)."""

from __future__ import annotations

import logging
from typing import Any

from bridge.deliver.policy import Circuit
from bridge.events import Event, format_time
from bridge.logs import plural
from bridge.store.deliveries import Claim


def attempt_line(
    event: Event,
    attempt: int,
    target: str,
    answer: tuple[int | None, str | None],
    span_ms: tuple[int, int],
    outcome: str,
) -> str:
    """One attempt in words: event id, source, target, the answer's status (or none), how
    long it took, which attempt it was, and the error of a failed one or, for a delivered
    one, how long after the event was recorded."""
    status_code, error = answer
    at_ms, done_ms = span_ms
    status = f"status {status_code}" if status_code is not None else "no answer"
    line = (
        f"delivery of {event.id} from {event.source} to {target} {outcome}:"
        f" {status} in {done_ms - at_ms} ms, attempt {attempt}"
    )
    if outcome == "delivered":
        return f"{line}, {max(done_ms - event.recorded_ms, 0)} ms after it was recorded"
    return f"{line}: {error}" if error else line


def attempt_fields(
    claim: Claim, target: str, answer: tuple[int | None, str | None], duration_ms: int
) -> dict[str, Any]:
    """The fields of an attempt's line (`--log-format json`), only those that apply."""
    status_code, error = answer
    fields: dict[str, Any] = {
        "event_id": claim.event.id,
        "source": claim.event.source,
        "target": target,
        "delivery_id": claim.delivery_id,
        "attempt": claim.attempts + 1,
        "duration_ms": duration_ms,
    }
    if status_code is not None:
        fields["status"] = status_code
    if error:
        fields["reason"] = error
    return fields


def log_attempt(
    log: logging.Logger,
    level: int,
    claim: Claim,
    target: str,
    answer: tuple[int | None, str | None],
    span_ms: tuple[int, int],
    outcome: str,
) -> None:
    """Log an attempt (`delivered`, `failed` or `dead`) at `level`, with its fields; nothing
    is built when the level is off."""
    if not log.isEnabledFor(level):
        return
    fields = attempt_fields(claim, target, answer, span_ms[1] - span_ms[0])
    if outcome == "dead":
        status_code, error = answer
        log.log(
            level,
            "delivery of %s from %s to %s is dead after %s (last: %s)",
            claim.event.id,
            claim.event.source,
            target,
            plural(claim.attempts + 1, "attempt"),
            error or status_code,
            extra=fields,
        )
        return
    line = attempt_line(claim.event, claim.attempts + 1, target, answer, span_ms, outcome)
    log.log(level, "%s", line, extra=fields)


def circuit_line(target: str, before: Circuit, after: Circuit, by: str | None = None) -> str | None:
    """A circuit's change in words (None when its state did not change), `by` naming what
    closed it when not an attempt (`reset`): `target me: circuit opened until ... after 5
    failures`, `target me: circuit half-open: one probe`, `target me: circuit closed`."""
    if before.state == after.state:
        return None
    if after.state == "open":
        until = format_time(after.open_until_ms) if after.open_until_ms is not None else "?"
        if before.state == "half_open":
            return f"target {target}: circuit opened until {until} after the probe failed"
        failures = plural(after.failures, "failure")
        return f"target {target}: circuit opened until {until} after {failures}"
    if after.state == "half_open":
        return f"target {target}: circuit half-open: one probe"
    return f"target {target}: circuit closed" + (f" by {by}" if by else "")
