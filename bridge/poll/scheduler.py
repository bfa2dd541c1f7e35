"""When each source is polled: APScheduler interval jobs and the pure interval policy.

Every polled source is one interval job of an `AsyncIOScheduler`, with `coalesce` (runs
missed while the loop was busy become one) and the source's `jitter`; a run that comes while
the source's previous poll is still in flight is skipped, so there are never two polls of one
source at once. The interval runs from a fixed start, so it does not drift with
the time a poll takes. After each poll, `next_delay_s` decides the delay until the next:

- a fixed `every`: always `every`;
- an adaptive `every: {min, max}`: `min` right after a change, then `FACTOR` times longer
  after each poll that saw nothing, up to `max`;
- a 429 or 503: the `Retry-After` it asked for, else exponential backoff with jitter up to
  10 times the interval; the first success returns to the normal interval;
- never sooner than the upstream's rate-limit headers allow (`PollResult.wait_s`, see
  limits.py): the next poll then comes that long after this one ended.

The job is rescheduled only when that delay changes. A hint (`poll_now`) runs the job at
once, or right after the poll in flight, unless the upstream asked for a wait that has not
ended (`held`: a `Retry-After` or a rate-limit reset): then nothing is sent before it.

A source with `poll.budget` asks its budget (bridge/budgets.py) before each poll; when the
budget has no room, the poll is not sent but moved to the time the budget promises, and the
requests the poll made are counted against the budget when it ends.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from bridge.budgets import Budget, Budgets
from bridge.config import AdaptiveEvery, PollConfig

log = logging.getLogger("bridge.poll")

FACTOR = 2.0  # how much slower an adaptive source gets after each poll without a change
BACKOFF_CAP = 10.0  # backoff never waits more than this many intervals
MAX_RETRY_AFTER_S = 86400.0  # a Retry-After beyond a day is taken as a day


@dataclass(frozen=True, slots=True)
class PollResult:
    """What the scheduler needs to know about a finished poll."""

    changed: bool = False  # the snapshot changed
    polled: bool = True  # False when another replica polls the source (it holds the lease)
    throttled: bool = False  # the upstream answered 429 or 503
    retry_after_s: float | None = None  # as the upstream asked: waited at most `max_wait_s`
    max_wait_s: float = MAX_RETRY_AFTER_S  # the config's `limits.max_wait`
    wait_s: float = 0.0  # the upstream's rate-limit headers allow no poll sooner than this
    wait_why: str | None = None  # the header that asked for `wait_s`
    requests: int | None = None  # requests the poll made (None: unknown)


def base_interval_s(every: float | AdaptiveEvery, current_s: float | None, changed: bool) -> float:
    """The normal delay after a poll: fixed, or adaptive (`min` after a change, else slower)."""
    if not isinstance(every, AdaptiveEvery):
        return every
    if changed or current_s is None:
        return every.min_s
    return min(every.max_s, max(every.min_s, current_s * FACTOR))


def backoff_s(
    interval_s: float,
    throttles: int,
    retry_after_s: float | None,
    rand: Callable[[], float] = random.random,
) -> float:
    """The delay after the `throttles`-th 429 or 503 in a row (1 for the first)."""
    if retry_after_s is not None:
        return min(max(retry_after_s, 0.0), MAX_RETRY_AFTER_S)
    ceiling = min(interval_s * BACKOFF_CAP, interval_s * 2.0 ** max(throttles, 1))
    # Equal jitter: at least half the ceiling, so backoff never collapses to zero.
    return ceiling / 2 + ceiling / 2 * rand()


@dataclass
class _Slot:
    """One source's schedule: its config, current delay and run state."""

    poll: PollConfig
    delay_s: float
    base_s: float
    throttles: int = 0
    running: bool = False
    hinted: bool = False
    stretched: bool = False  # the upstream's limits hold the next poll beyond its interval
    held_until_s: float | None = None  # epoch seconds: the upstream asked for no poll before
    held_why: str | None = None  # the header that asked for it


class Scheduler:
    """Runs `poll(name, interval_s)` for every source on its schedule."""

    def __init__(
        self, poll: Callable[[str, float], Awaitable[PollResult]], budgets: Budgets | None = None
    ) -> None:
        self._poll = poll
        self._budgets = budgets if budgets is not None else Budgets()
        self._scheduler = AsyncIOScheduler(
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
        )
        self._slots: dict[str, _Slot] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # One lock per source name, kept when a reload replaces the source's slot, so that
        # a poll of the old config still in flight keeps the new one waiting.
        self._locks: dict[str, asyncio.Lock] = {}
        self._stopping = False

    def start(self) -> None:
        """Start the scheduler (inside the running event loop)."""
        self._scheduler.start()

    def delay_s(self, name: str) -> float | None:
        """The current delay between polls of a source."""
        slot = self._slots.get(name)
        return slot.delay_s if slot else None

    def add(self, name: str, poll: PollConfig, spread_s: float = 1.0) -> None:
        """Schedule a source: its first poll within `spread_s`, then every (minimum) interval."""
        base = poll.min_every_s
        self._slots[name] = _Slot(poll, base, base)
        # Spread the first polls, and so every later one (each keeps its phase), so that many
        # sources do not all fire at the same instants.
        first = datetime.now().astimezone() + timedelta(
            seconds=random.uniform(0, min(base, spread_s))
        )
        self._scheduler.add_job(
            self._run,
            trigger=self._trigger(poll, base, first),
            args=(name,),
            id=name,
            name=f"poll {name}",
            next_run_time=first,
        )

    def remove(self, name: str) -> None:
        """Stop polling a source (a poll in flight finishes)."""
        slot = self._slots.pop(name, None)
        if slot is not None:
            self._scheduler.remove_job(name)
            if (budget := self._budgets.get(slot.poll.budget)) is not None:
                budget.forget(name)

    def held(self, name: str) -> tuple[float, str] | None:
        """Until when (epoch seconds) and by which header the upstream holds the source's
        next poll back; None when a poll may be sent now."""
        slot = self._slots.get(name)
        if slot is None or slot.held_until_s is None or slot.held_until_s <= time.time():
            return None
        return slot.held_until_s, slot.held_why or "Retry-After"

    def holds(self) -> dict[str, tuple[float, str]]:
        """Every source whose next poll the upstream holds back now: (until, why)."""
        return {name: held for name in self._slots if (held := self.held(name)) is not None}

    def poll_now(self, name: str) -> None:
        """Poll a source at once, or right after its poll in flight; not while `held`."""
        slot = self._slots.get(name)
        if slot is None or self.held(name) is not None:
            return
        if slot.running:
            slot.hinted = True
        else:
            self._spawn(name)

    @staticmethod
    def _trigger(
        poll: PollConfig,
        delay_s: float,
        after: datetime | None = None,
        first_s: float | None = None,
    ) -> IntervalTrigger:
        """Every `delay_s`, the first run `first_s` (else `delay_s`) after `after` (else now)."""
        first = delay_s if first_s is None else first_s
        start = (after or datetime.now().astimezone()) + timedelta(seconds=first)
        return IntervalTrigger(seconds=delay_s, jitter=poll.jitter_s or None, start_date=start)

    def _spawn(self, name: str) -> asyncio.Task[None] | None:
        if self._stopping:
            return None
        # Each poll runs in a task of ours so that stop() can wait for it (APScheduler's
        # executor cancels the jobs it runs when it shuts down) and so that a hint can
        # start one outside the schedule.
        task = asyncio.create_task(self._tick(name), name=f"poll {name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run(self, name: str) -> None:
        # Returns at once: the poll's own task and `_Slot.running` keep one poll per source,
        # without APScheduler warning each time a slow poll makes it skip a run.
        self._spawn(name)

    async def _tick(self, name: str) -> None:
        slot = self._slots.get(name)
        lock = self._locks.setdefault(name, asyncio.Lock())
        if slot is None or lock.locked():
            return  # a poll of this source is in flight already
        budget = self._budgets.get(slot.poll.budget)
        if budget is not None and not self._may_poll(name, slot, budget):
            return
        async with lock:
            slot.running = True
            result: PollResult | None = None
            try:
                result = await self._poll(name, slot.delay_s)
            except Exception:
                log.exception("poll of %s failed", name)
                result = PollResult()
            finally:
                slot.running = False
                if budget is not None:
                    made = result.requests if result is not None else None
                    budget.settle(name, self._budgets.clock(), made)
        if self._slots.get(name) is not slot:
            return  # removed or replaced while polling
        self._after(name, slot, result)

    def _may_poll(self, name: str, slot: _Slot, budget: Budget) -> bool:
        """Ask the source's budget; when it has no room, move the poll to the promised time."""
        now = self._budgets.clock()
        wait_s = budget.reserve(name, now)
        if wait_s <= 0:
            if budget.note_pass(now):
                log.info("budget %s: no longer delays polls", slot.poll.budget)
            return True
        if budget.note_delay():
            log.info(
                "budget %s: %d requests per %g s used up; delaying and spreading the polls "
                "of its sources (%s: next poll in %.3g s)",
                slot.poll.budget,
                budget.limit,
                budget.per_s,
                name,
                wait_s,
            )
        trigger = self._trigger(slot.poll, slot.delay_s, first_s=wait_s)
        self._scheduler.reschedule_job(name, trigger=trigger)
        return False

    def _after(self, name: str, slot: _Slot, result: PollResult) -> None:
        if not result.polled:
            return  # another replica polls it: keep asking at this pace, to take over in time
        retry_after_s = result.retry_after_s
        if retry_after_s is not None:
            retry_after_s = min(retry_after_s, result.max_wait_s)
        held_s = max(result.wait_s, retry_after_s or 0.0)
        slot.held_until_s = time.time() + held_s if held_s > 0 else None
        slot.held_why = result.wait_why if result.wait_s >= held_s else "Retry-After"
        if result.throttled:
            slot.throttles += 1
            delay = backoff_s(slot.base_s, slot.throttles, retry_after_s)
        else:
            slot.throttles = 0
            slot.base_s = base_interval_s(slot.poll.every, slot.base_s, result.changed)
            delay = slot.base_s
        stretched = result.wait_s > delay
        if stretched and not slot.stretched:
            log.info(
                "%s: the upstream allows no poll for %.3g s (%s): polling later than every %.3g s",
                name,
                result.wait_s,
                result.wait_why,
                delay,
            )
        elif slot.stretched and not stretched:
            log.debug("%s: the upstream's limits no longer hold its polls back", name)
        slot.stretched = stretched
        delay = max(delay, result.wait_s)
        # Held back by the upstream: count the wait from now, when this poll ended.
        if delay != slot.delay_s or stretched:
            self._scheduler.reschedule_job(name, trigger=self._trigger(slot.poll, delay))
        if slot.hinted:
            slot.hinted = False
            if self.held(name) is None:
                self._spawn(name)
        if delay != slot.delay_s:
            log.debug("%s: next poll in %.3g s", name, delay)
        slot.delay_s = delay

    async def stop(self, grace_s: float) -> None:
        """Start no more polls; let those in flight finish within `grace_s`, then cancel them."""
        self._stopping = True
        if self._scheduler.running:
            self._scheduler.pause()
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("cancelled %d polls still running after %g s", len(pending), grace_s)
                await asyncio.wait(pending, timeout=1.0)
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
