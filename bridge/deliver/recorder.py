"""The delivery engine's writes of outcomes: one transaction per flush, one flush at a time.

Attempts that finish while the previous flush is being committed wait for the next one, and
the leases to give back (claims not attempted: a stop, a circuit that opened, a target
removed) go in the same transaction. Flushes are at least `FLUSH_S` apart: under load a
flush carries dozens of outcomes for one commit and one hop to the store; when idle, an
outcome is written on the next turn of the loop, as soon as it is known.

An outcome's caller hears of it once its transaction is committed (the delivery's next state
is in the store) or failed (the lease then expires and the delivery is sent again: at least
once, never lost). Released leases have no caller: a failed release expires on its own.
"""

from __future__ import annotations

import asyncio
import logging

from bridge.store.base import OutboxStore
from bridge.store.deliveries import AttemptRecord

log = logging.getLogger("bridge.deliver")

# The least time between two flushes. An outcome waits at most this long for its write (the
# next delivery does not wait for it: its slot is free once the answer is in).
FLUSH_S = 0.005


class Recorder:
    """Writes the outcomes (and releases) waiting at each flush in one store write."""

    def __init__(self, store: OutboxStore) -> None:
        self.store = store
        self._records: list[tuple[AttemptRecord, asyncio.Future[None]]] = []
        self._releases: list[int] = []
        self._writing: asyncio.Task[None] | None = None  # the flush being committed
        self._scheduled = False  # a flush is due (on the loop's next turn, or soon)
        self._flushed_at = float("-inf")  # loop time of the last flush
        self.flushes = 0  # store writes made (for tests and the curious)

    async def record(self, record: AttemptRecord) -> None:
        """Return once `record` is committed; raise StoreError if it could not be written."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._records.append((record, future))
        self._schedule()
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
        if not self._scheduled and self._writing is None:
            self._scheduled = True
            loop = asyncio.get_running_loop()
            wait_s = self._flushed_at + FLUSH_S - loop.time()
            if wait_s > 0:
                loop.call_later(wait_s, self._flush)
            else:
                loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if self._writing is not None or (not self._records and not self._releases):
            return  # one flush at a time: its end schedules the next
        self._flushed_at = asyncio.get_running_loop().time()
        records, self._records = self._records, []
        releases, self._releases = self._releases, []
        self._writing = asyncio.create_task(self._write(records, releases))

    async def _write(
        self, batch: list[tuple[AttemptRecord, asyncio.Future[None]]], releases: list[int]
    ) -> None:
        try:
            self.flushes += 1
            await self.store.record_attempts([record for record, _ in batch], releases)
        except Exception as exc:
            # Every waiter hears of it; none may hang on a flush that failed.
            if releases and not batch:
                log.warning("could not release %d leases (they expire): %s", len(releases), exc)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            for _, future in batch:
                if not future.done():
                    future.set_result(None)
        finally:
            self._writing = None
            if self._records or self._releases:
                self._schedule()
