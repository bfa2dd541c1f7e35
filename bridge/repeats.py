"""Repeated failures of one kind, counted rather than printed (pure, on a given clock).

While the database is locked every write fails, and each part that writes (a delivery's
claim, a poll's stats, a heartbeat, an inbound webhook) would say so once a try: dozens of
identical lines a minute that hide what else happens. A `Repeats` prints the first failure of
a kind, then counts its repeats instead of printing them, and puts the count into the next
line printed for that kind:

- the next failure after `every_s` (a state that lasts is said again, with what was
  counted: `... (and 61 more like it in 44 s)`);
- or the line that says the kind passed (`RepeatLog.passed`: `heartbeat recorded again after
  45.2 s of failures (43 more like it not shown)`).

Nothing is lost: every failure is either printed or counted into a line that is. A kind is
what the caller names (a logger's message and, say, the source it is about): failures of
other kinds print as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

# How long a failure that keeps repeating stays quiet before it is said again with its count.
EVERY_S = 60.0


@dataclass(slots=True)
class _Run:
    """One kind's failures since it last passed."""

    first_s: float  # the first failure of the run
    printed_s: float  # the last line printed for it
    unprinted: int = 0  # failures since that line, counted and not printed


@dataclass(frozen=True, slots=True)
class Counted:
    """Failures counted and not printed: how many, over how long."""

    count: int
    span_s: float

    def suffix(self) -> str:
        """` (and 61 more like it in 44 s)`, or nothing when none was counted."""
        if not self.count:
            return ""
        return f" (and {self.count} more like it in {self.span_s:.0f} s)"


class Repeats:
    """Which failures of each kind to print; the others counted into the next printed line."""

    def __init__(self, every_s: float = EVERY_S) -> None:
        self.every_s = every_s
        self._runs: dict[Hashable, _Run] = {}

    def failed(self, kind: Hashable, now_s: float) -> Counted | None:
        """A failure of `kind` at `now_s`: None to count it and print nothing, else print it
        with the failures `Counted` since the last line printed for the kind."""
        run = self._runs.get(kind)
        if run is None:
            self._runs[kind] = _Run(now_s, now_s)
            return Counted(0, 0.0)
        if now_s - run.printed_s < self.every_s:
            run.unprinted += 1
            return None
        counted = Counted(run.unprinted, now_s - run.printed_s)
        run.printed_s, run.unprinted = now_s, 0
        return counted

    def passed(self, kind: Hashable, now_s: float) -> tuple[float, int] | None:
        """`kind` works again: forget it; when failures were counted and not yet printed,
        how long it failed (from the first failure) and how many were not printed."""
        run = self._runs.pop(kind, None)
        if run is None or not run.unprinted:
            return None
        return now_s - run.first_s, run.unprinted

    def unprinted(self, now_s: float) -> list[tuple[Hashable, Counted]]:
        """The kinds with failures counted and not yet printed, and those counts; forgets
        every kind (at a stop, so that no count is lost)."""
        out = [
            (kind, Counted(run.unprinted, now_s - run.printed_s))
            for kind, run in self._runs.items()
            if run.unprinted
        ]
        self._runs.clear()
        return out

    def forget(self, match: Callable[[Hashable], bool]) -> None:
        """Forget the kinds `match` names (their end said by the caller, with its own count)."""
        for kind in [k for k in self._runs if match(k)]:
            del self._runs[kind]

    @property
    def has_failures(self) -> bool:
        """Whether any kind failed since it last passed."""
        return bool(self._runs)

    def is_failing(self, kind: Hashable) -> bool:
        """Whether `kind` has failed since it last passed."""
        return kind in self._runs


class RepeatLog:
    """A logger whose failures of one kind are printed once and then counted (`Repeats`)."""

    def __init__(
        self,
        logger: logging.Logger,
        every_s: float = EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.repeats = Repeats(every_s)
        self.clock = clock
        # The last line printed of each kind failing now, said again with the count at a stop.
        self._last: dict[Hashable, tuple[str, tuple[Any, ...], dict[str, Any]]] = {}

    @property
    def has_failures(self) -> bool:
        """Whether any kind failed since it last passed (a hot path asks before `passed`)."""
        return self.repeats.has_failures

    def warning(self, kind: Hashable, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log `msg % args` at warning, unless a failure of `kind` was printed lately: then
        count it into the next line printed for the kind."""
        counted = self.repeats.failed(kind, self.clock())
        if counted is not None:
            self._last[kind] = (msg, args, kwargs)
            self.logger.warning(msg + "%s", *args, counted.suffix(), **kwargs)

    def passed(self, kind: Hashable, msg: str, *args: Any) -> None:
        """`kind` works again: when some of its failures were counted and not printed, say
        `msg % args` at info with how long it failed and how many lines were not shown."""
        if not self.repeats.is_failing(kind):
            return  # the common case, on every success: no clock read, nothing to say
        ended = self.repeats.passed(kind, self.clock())
        self._last.pop(kind, None)
        if ended is not None:
            span_s, count = ended
            self.logger.info(
                msg + " after %.1f s of failures (%d more like it not shown)", *args, span_s, count
            )

    def flush(self) -> None:
        """At a stop: say again the last line of each kind whose failures were counted and
        not printed since, with their count (`... (and 14 more like it in 7 s)`)."""
        for kind, counted in self.repeats.unprinted(self.clock()):
            msg, args, kwargs = self._last[kind]
            self.logger.warning(msg + "%s", *args, counted.suffix(), **kwargs)
        self._last.clear()
