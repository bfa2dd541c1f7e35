"""What the delivery engine says of an attempt in its log: one line, pure."""

from __future__ import annotations

from bridge.events import Event


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
