"""The delivery engine's writes of outcomes: one transaction per flush, one flush at a time.

Attempts that finish while the previous flush is being committed wait for the next one, and
the leases to give back (claims not attempted: a stop, a circuit that opened, a target
removed) go in the same transaction. Flushes are at least `FLUSH_S` apart: under load a
flush carries dozens of outcomes for one commit (a commit costs more than the rows it
writes); when idle, an outcome is written on the next turn of the loop, as soon as it is
known. An outcome added `soon` (an `ordering: subject` target's: the next delivery of its
subject cannot be claimed before it is committed) brings the flush forward to `SOON_S`
after the last one.

An outcome's caller hears of it once its transaction is committed (the delivery's next state
is in the store) or failed (the lease then expires and the delivery is sent again: at least
once, never lost): `add` calls it back then, so a send need not wait for its outcome's
commit (`record` awaits it). Released leases have no caller: a failed release expires on its
own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from bridge.store.base import OutboxStore
from bridge.store.deliveries import AttemptRecord

log = logging.getLogger("bridge.deliver")

# The least time between two flushes. An outcome waits at most this long for its write (the
# next delivery does not wait for it: its slot is free once the answer is in) ...
FLUSH_S = 0.02
# ... or this long when one of the outcomes waiting holds back its subject's next delivery.
SOON_S = 0.005

# Called once an outcome is written (None) or could not be (the error).
Done = Callable[[BaseException | None], None]


class Recorder:
    """Writes the outcomes (and releases) waiting at each flush in one store write."""

    def __init__(self, store: OutboxStore) -> None:
        self.store = store
        self._records: list[tuple[AttemptRecord, Done]] = []
        self._releases: list[int] = []
        self._writing: asyncio.Task[None] | None = None  # the flush being committed
        self._timer: asyncio.Handle | None = None  # the next flush, when one is due
        self._timer_at = 0.0  # (loop time)
        self._soon = False  # an outcome waiting was added `soon`
        self._flushed_at = float("-inf")  # loop time of the last flush
        self.flushes = 0  # store writes made (for tests and the curious)

    def add(self, record: AttemptRecord, done: Done, *, soon: bool = False) -> None:
        """Write `record` with the next flush (`soon`: no later than `SOON_S` after the last
        one); `done` hears how it went."""
        self._records.append((record, done))
        if soon:
            self._soon = True
        self._schedule()

    async def record(self, record: AttemptRecord) -> None:
        """Return once `record` is committed; raise StoreError if it could not be written."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def done(error: BaseException | None) -> None:
            if not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)

        self.add(record, done)
        await future

    def release(self, delivery_ids: list[int]) -> None:
        """Give the leases of `delivery_ids` back with the next flush."""
        if delivery_ids:
            self._releases.extend(delivery_ids)
            self._schedule()

    async def drain(self) -> None:
        """Wait until everything handed over so far is written (or has failed)."""
        while self._writing is not None or self._records or self._releases:
            if self._writing is None:
                self._flush()  # now, not at the end of the pause between flushes
            if (task := self._writing) is not None:
                await asyncio.wait([task])

    def _schedule(self) -> None:
        # While a flush is being committed, what comes meanwhile waits for its end; and
        # flushes are at least FLUSH_S apart, so that under load each carries many outcomes.
        if self._writing is not None:
            return
        loop = asyncio.get_running_loop()
        at = self._flushed_at + (SOON_S if self._soon else FLUSH_S)
        if self._timer is not None:
            if self._timer_at <= at:
                return  # due by then already
            self._timer.cancel()  # an outcome added `soon` brings it forward
        now = loop.time()
        if at > now:
            self._timer, self._timer_at = loop.call_at(at, self._flush), at
        else:
            self._timer, self._timer_at = loop.call_soon(self._flush), now

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()  # when called by `drain`, before its time
            self._timer = None
        if self._writing is not None or (not self._records and not self._releases):
            return  # one flush at a time: its end schedules the next
        self._soon = False
        self._flushed_at = asyncio.get_running_loop().time()
        records, self._records = self._records, []
        releases, self._releases = self._releases, []
        self._writing = asyncio.create_task(self._write(records, releases))

    async def _write(self, batch: list[tuple[AttemptRecord, Done]], releases: list[int]) -> None:
        error: BaseException | None = None
        try:
            self.flushes += 1
            await self.store.record_attempts([record for record, _ in batch], releases)
        except Exception as exc:
            # Every caller hears of it; none may wait for a flush that failed.
            if releases and not batch:
                log.warning("could not release %d leases (they expire): %s", len(releases), exc)
            error = exc
        try:
            for _, done in batch:
                try:
                    done(error)
                except Exception:
                    log.exception("an attempt's outcome could not be taken in")
        finally:
            self._writing = None
            if self._records or self._releases:
                self._schedule()
