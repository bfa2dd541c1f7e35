"""The delivery engine's writes of outcomes: one transaction per flush, one flush at a time.

Attempts that finish while the previous flush is being committed wait for the next one, and
the leases to give back (claims not attempted: a stop, a circuit that opened, a target
removed) go in the same transaction. Under load a flush carries dozens of outcomes for one
commit and one hop to the store; when idle, an outcome is written on the next turn of the
loop, as soon as it is known.

An outcome's caller hears of it once its transaction is committed (the delivery's next state
is in the store) or failed (the lease then expires and the delivery is sent again: at least
once, never lost). Released leases have no caller: a failed release expires on its own.
"""

from __future__ import annotations

import asyncio
import logging

from bridge.store.base import AttemptRecord, OutboxStore

log = logging.getLogger("bridge.deliver")


class Recorder:
    """Writes the outcomes (and releases) waiting at each flush in one store write."""

    def __init__(self, store: OutboxStore) -> None:
        self.store = store
        self._records: list[tuple[AttemptRecord, asyncio.Future[None]]] = []
        self._releases: list[int] = []
        self._writing: asyncio.Task[None] | None = None  # the flush being committed
        self._scheduled = False  # a flush is due on the loop's next turn
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
        while self._writing is not None or self._scheduled:
            task = self._writing
            if task is not None:
                await asyncio.wait([task])
            else:
                await asyncio.sleep(0)

    def _schedule(self) -> None:
        # While a flush is being committed, what comes meanwhile waits for its end.
        if not self._scheduled and self._writing is None:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if not self._records and not self._releases:
            return
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
                self._flush()
