"""Request budgets shared by polled sources: one sliding window per budget (pure, clock given).

A budget (`budgets: {gh: {requests: 5000, per: 1h}}`) allows at most `requests` requests in
any window of `per` seconds to the sources that name it (`poll.budget: gh`). Before each poll
the scheduler asks `Budget.reserve(source, now)`:

- it returns 0 when the budget has room for what the source's previous poll cost (at least
  one request): the poll may start, and that many requests are reserved;
- else it returns how long to wait, and the source joins the budget's queue: waiting sources
  are served in the order they came, each promised a time one request's share of the
  window (`per / requests`) after the one before it, so polls are stretched and spread
  evenly, and none starves.

After the poll, `settle(source, now, requests)` replaces the reservation with the requests
the poll actually made (its pages), stamped with the poll's end: a request is counted for a
whole window from a moment no earlier than when it was sent, so the upstream never sees
more than `requests` in any `per`, as long as a poll costs no more pages than its previous
one did (a poll that costs more is counted in full, and the next polls wait for it).

`Budgets` holds the budgets of the running config; a reload keeps the window of every budget
still configured (changed limits apply to the requests already counted).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol


class BudgetLimits(Protocol):
    """What the scheduler needs of a budget's config (`BudgetConfig`)."""

    @property
    def requests(self) -> int: ...

    @property
    def per_s(self) -> float: ...


@dataclass(frozen=True, slots=True)
class BudgetUse:
    """One budget's use at a moment, for `bridge status`, `/metrics` and the status page."""

    name: str
    used: int  # requests counted in the last `per_s` (in-flight reservations included)
    limit: int
    per_s: float
    waiting: int  # polls held back right now
    delaying: bool  # the budget has held polls back within the last window


@dataclass(slots=True)
class Budget:
    """A sliding window of `limit` requests per `per_s` seconds, and its queue of waiters."""

    limit: int
    per_s: float
    # (time, requests) of finished polls, oldest first; times from the caller's clock.
    spent: deque[tuple[float, int]] = field(default_factory=deque)
    inflight: dict[str, int] = field(default_factory=dict)  # source -> requests reserved
    waiters: dict[str, float] = field(default_factory=dict)  # source -> promised time
    costs: dict[str, int] = field(default_factory=dict)  # source -> requests of its last poll
    delaying: bool = False
    last_delay_at: float = float("-inf")

    def _prune(self, now: float) -> None:
        while self.spent and self.spent[0][0] <= now - self.per_s:
            self.spent.popleft()

    def used(self, now: float) -> int:
        """Requests counted in the window ending at `now`, reservations of polls in flight too."""
        self._prune(now)
        return sum(n for _, n in self.spent) + sum(self.inflight.values())

    def need(self, source: str) -> int:
        """What a poll of `source` reserves: its previous poll's requests, at least 1."""
        return min(self.limit, max(1, self.costs.get(source, 1)))

    def earliest(self, now: float, need: int) -> float:
        """The earliest time from `now` at which `need` more requests fit in the window."""
        total = self.used(now)
        if total + need <= self.limit:
            return now
        for at, n in self.spent:
            total -= n
            if total + need <= self.limit:
                return at + self.per_s
        # Only the polls in flight are left: they are counted a whole window from now at least.
        return now + self.per_s

    def reserve(self, source: str, now: float) -> float:
        """0 and a reservation if `source` may poll now; else the seconds to wait (queued).

        Waiting sources go first, in order: only the first may pass, when the window has
        room; each one after it is promised a time at least one request's share of the
        window (`per / limit`) after the one before it.
        """
        spacing = self.per_s / self.limit
        stale = now - max(1.0, 4 * spacing)
        for name, promised in list(self.waiters.items()):
            if promised < stale and name != source:
                del self.waiters[name]  # it did not come back for its turn: it queues again
        order = list(self.waiters)
        position = order.index(source) if source in self.waiters else len(order)
        need = self.need(source)
        if position == 0:
            at = self.earliest(now, need)
            if at <= now:
                self.waiters.pop(source, None)
                self.inflight[source] = need
                return 0.0
        else:
            ahead = sum(self.need(name) for name in order[:position])
            at = self.earliest(now, min(self.limit, ahead + need))
            at = max(at, self.waiters[order[position - 1]] + spacing * need)
        self.waiters[source] = at
        self.last_delay_at = now
        return max(at - now, 1e-3)

    def settle(self, source: str, now: float, requests: int | None) -> None:
        """A poll of `source` finished at `now` having made `requests` (None: as reserved)."""
        reserved = self.inflight.pop(source, 0)
        made = reserved if requests is None else requests
        if made > 0:
            self.spent.append((now, made))
        if requests is not None and requests > 0:
            self.costs[source] = requests

    def forget(self, source: str) -> None:
        """`source` no longer uses this budget: leave the queue (a poll in flight still settles)."""
        self.waiters.pop(source, None)
        self.costs.pop(source, None)

    def note_delay(self) -> bool:
        """True when this is the first delay since the budget last let every poll pass."""
        first = not self.delaying
        self.delaying = True
        return first

    def note_pass(self, now: float) -> bool:
        """True when the budget stops delaying: a whole window passed without a delay."""
        if self.delaying and not self.waiters and now - self.last_delay_at >= self.per_s:
            self.delaying = False
            return True
        return False

    def use(self, name: str, now: float) -> BudgetUse:
        """This budget's use at `now`."""
        return BudgetUse(
            name, self.used(now), self.limit, self.per_s, len(self.waiters), self.delaying
        )


class Budgets:
    """The budgets of the running config, by name, on one clock (monotonic by default)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._budgets: dict[str, Budget] = {}

    def apply(self, configs: Mapping[str, BudgetLimits]) -> None:
        """Take the budgets of a (new) config: keep the window of each one still there."""
        kept = {}
        for name, config in configs.items():
            budget = self._budgets.get(name) or Budget(config.requests, config.per_s)
            budget.limit, budget.per_s = config.requests, config.per_s
            kept[name] = budget
        self._budgets = kept

    def get(self, name: str | None) -> Budget | None:
        """The budget `name`, or None (no budget, or not configured)."""
        return self._budgets.get(name) if name is not None else None

    def names(self) -> Iterable[str]:
        """The configured budgets' names."""
        return self._budgets.keys()

    def uses(self) -> list[BudgetUse]:
        """Every budget's use now, by name."""
        now = self.clock()
        return [budget.use(name, now) for name, budget in sorted(self._budgets.items())]
