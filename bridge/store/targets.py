"""A target's persisted health, part of the store interface (`base.py` re-exports it):
disabled or not, its circuit breaker, and what `OutboxStore.reset_target` did."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class TargetState:
    """A target's persisted health: disabled (by a 410) or not, and its circuit breaker."""

    name: str
    disabled_ms: int | None = None
    disabled_reason: str | None = None
    circuit: str = "closed"  # closed | half_open | open
    failures: int = 0  # consecutive failed attempts
    open_until_ms: int | None = None
    cooldown_s: float | None = None

    def is_open(self, now_ms: int) -> bool:
        """True while the circuit holds deliveries back (open, its cool-down not over)."""
        return (
            self.circuit == "open"
            and self.open_until_ms is not None
            and now_ms < self.open_until_ms
        )


@dataclass(slots=True, frozen=True)
class TargetReset:
    """What `reset_target` did: the state before, and how many deliveries it made due now."""

    before: TargetState
    retried: int
