"""What happens after an attempt: the pure retry policy and the circuit breaker.

Outcomes of one attempt (status code, or None when no answer came):

    2xx                 delivered
    410 Gone            the target is disabled until `bridge target enable`; the delivery waits
    429, 502, 503, 504  retry on the schedule, never sooner than the answer's Retry-After
    anything else       retry on the schedule (3xx included: redirects are never followed)

The schedule is the target's `retry` delays, each with +-20% jitter; after the last one the
delivery is dead. Nothing here does I/O or reads a clock: times and randomness are arguments.

The circuit breaker of a target: `failures` consecutive failed attempts open it; while open,
nothing new is sent; when the cool-down ends one probe is let through (half-open); a
success closes it, a failed probe opens it again for twice the cool-down (up to a maximum).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from typing import Literal

from bridge.config import CircuitConfig

JITTER = 0.2
# A Retry-After further away than this is taken as this: a day is already a long pause.
MAX_RETRY_AFTER_S = 86400.0
SLOW_DOWN = frozenset({429, 502, 503, 504})
# Seconds in ASCII digits: `str.isdigit` would take `²`, which float() refuses.
_SECONDS_RE = re.compile(r"[0-9]+")

Status = Literal["pending", "delivered", "failed", "dead"]
CircuitState = Literal["closed", "half_open", "open"]
CIRCUIT_GAUGE = {"closed": 0, "half_open": 1, "open": 2}


def is_success(status_code: int | None) -> bool:
    """True for any 2xx answer."""
    return status_code is not None and 200 <= status_code < 300


def jittered(delay_s: float, rand: float) -> float:
    """`delay_s` moved by up to +-20%; `rand` is uniform in [0, 1)."""
    return delay_s * (1 - JITTER + 2 * JITTER * rand)


def retry_delay_s(attempts: int, retry_s: Sequence[float], rand: float) -> float | None:
    """The delay before the next attempt after `attempts` failed ones, or None when dead."""
    if attempts < 1 or attempts > len(retry_s):
        return None
    return jittered(retry_s[attempts - 1], rand)


def parse_retry_after(
    value: str | None, now_ms: int, max_wait_s: float = MAX_RETRY_AFTER_S
) -> float | None:
    """Seconds to wait from a Retry-After value (seconds or an HTTP date), at most
    `max_wait_s`; None if unusable (`soon`, `²`, a date out of range): never an exception."""
    if not value:
        return None
    text = value.strip(" \t")
    cap_s = max_wait_s
    if _SECONDS_RE.fullmatch(text):
        # float() of 400 digits is `inf`, never an error; `²` never gets here (ASCII only).
        return min(float(text), cap_s)
    try:
        when = parsedate_to_datetime(text)
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - now_ms / 1000
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return min(max(seconds, 0.0), cap_s)


# Not frozen, though nothing changes one once made: one is made for every delivery, and a
# frozen dataclass's `__init__` (each field set through `object.__setattr__`) costs three
# to four times as much.
@dataclass(slots=True)
class Decision:
    """The delivery's next state after an attempt."""

    status: Status
    next_ms: int
    disables_target: bool = False
    # What the attempt's error should add about the answer's Retry-After (unreadable, clamped).
    note: str | None = None

    @property
    def is_failure(self) -> bool:
        """True when the attempt failed (it counts against the circuit breaker)."""
        return self.status != "delivered"


def decide(
    status_code: int | None,
    *,
    attempts: int,
    retry_s: Sequence[float],
    now_ms: int,
    retry_after: str | None = None,
    max_wait_s: float = MAX_RETRY_AFTER_S,
    rand: Callable[[], float] = random.random,
) -> Decision:
    """Where a delivery goes after its `attempts`-th attempt got `status_code` (None: no answer).

    A `Retry-After` on a slow-down answer delays the retry, at most `max_wait_s`; one that
    cannot be read is ignored (the schedule's delay stands). Either is said in `note`.
    """
    if is_success(status_code):
        return Decision("delivered", now_ms)
    if status_code == 410:
        # Not the delivery's fault: it waits, due at once, until the target is enabled again.
        return Decision("failed", now_ms, disables_target=True)
    delay_s = retry_delay_s(attempts, retry_s, rand())
    if delay_s is None:
        return Decision("dead", now_ms)
    note = None
    if status_code in SLOW_DOWN and retry_after and retry_after.strip():
        asked_s = parse_retry_after(retry_after, now_ms, math.inf)
        if asked_s is None:
            note = "its Retry-After cannot be read: ignored"
        elif asked_s > max_wait_s:
            note = f"its Retry-After asks for more than limits.max_wait: waiting {max_wait_s:g} s"
            delay_s = max(delay_s, max_wait_s)
        else:
            delay_s = max(delay_s, asked_s)
    return Decision("failed", now_ms + round(delay_s * 1000), note=note)


@dataclass(slots=True, frozen=True)
class Circuit:
    """The circuit breaker state of one target, as persisted in the `targets` table."""

    state: CircuitState = "closed"
    failures: int = 0
    open_until_ms: int | None = None
    cooldown_s: float | None = None

    def admits(self, now_ms: int) -> Literal["all", "probe", "none"]:
        """What may be sent now: anything, one probe, or nothing."""
        if self.state == "closed":
            return "all"
        if self.state == "open" and self.open_until_ms is not None and now_ms < self.open_until_ms:
            return "none"
        return "probe"

    def probing(self) -> Circuit:
        """The state once a probe is on its way."""
        return replace(self, state="half_open")

    def on_success(self) -> Circuit:
        """The state after a successful attempt: closed."""
        return CLOSED

    def on_failure(self, now_ms: int, config: CircuitConfig) -> Circuit:
        """The state after a failed attempt."""
        failures = self.failures + 1
        if self.state == "half_open":
            cooldown_s = min((self.cooldown_s or config.cooldown_s) * 2, config.max_cooldown_s)
            return Circuit("open", failures, now_ms + round(cooldown_s * 1000), cooldown_s)
        if self.state == "open":
            # An attempt sent before the circuit opened: the cool-down already runs.
            return replace(self, failures=failures)
        if failures >= config.failures:
            cooldown_s = min(config.cooldown_s, config.max_cooldown_s)
            return Circuit("open", failures, now_ms + round(cooldown_s * 1000), cooldown_s)
        return replace(self, failures=failures)


# The closed circuit every success leads to: one shared value (it is frozen), not a new one for
# every delivery.
CLOSED = Circuit()
