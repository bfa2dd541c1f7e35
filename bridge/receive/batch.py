"""Gathering the events of concurrent requests into one store call.

Each store call is one trip to the writer thread and back (a queue, a savepoint, a future
resolved across threads). The writer commits one transaction at a time anyway, so the
receiver keeps at most one call in flight: the events that arrive while it commits wait
together and go as the next `record_events` batch. Under load that makes the trip once for
many requests (measured: about half the CPU per stored event); when idle, a request's event
goes at once. The answer is still per event (new or duplicate), and no request is answered
before the commit that holds its event is durable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from bridge.errors import StoreError
from bridge.events import Event
from bridge.store import NewEvent, Store
from bridge.store.base import Sighting

log = logging.getLogger("bridge.receive")

_Waiting = list[tuple[NewEvent, asyncio.Future[bool]]]


class Batcher:
    """Records events for many concurrent callers, with one store call in flight at a time."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: _Waiting = []
        self._is_scheduled = False
        self._writing: asyncio.Task[None] | None = None

    async def record(
        self, event: Event, targets: Sequence[str], *, sighting: Sighting | None = None
    ) -> bool:
        """Store `event` and its deliveries durably; True when new, False for a duplicate.

        A merged event also stores its `sighting`, new or not.
        """
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((NewEvent(event, targets, sighting), future))
        if self._writing is None and not self._is_scheduled:
            # After the callbacks already due in this turn, so their events join the batch.
            self._is_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return await future

    async def drain(self, timeout_s: float) -> None:
        """Wait, at most `timeout_s`, until every event handed in is stored or refused."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._pending or self._writing is not None:
            if self._writing is None:
                self._flush()
            assert self._writing is not None
            left_s = deadline - loop.time()
            if left_s <= 0:
                return
            await asyncio.wait({self._writing}, timeout=left_s)

    def _flush(self) -> None:
        self._is_scheduled = False
        if not self._pending or self._writing is not None:
            return
        batch, self._pending = self._pending, []
        self._writing = asyncio.create_task(self._write_all(batch), name="bridge-receive-batch")

    async def _write_all(self, batch: _Waiting) -> None:
        try:
            await self._write(batch)
        finally:
            self._writing = None
            # What arrived during this write goes next, as one batch.
            self._flush()

    async def _write(self, batch: _Waiting) -> None:
        try:
            results = await self.store.record_events([item for item, _ in batch])
        except StoreError as exc:
            for _, future in batch:
                _settle(future, exc=exc)
            return
        except Exception:
            if len(batch) == 1:
                _settle(batch[0][1], exc=StoreError("the event could not be stored"))
                log.exception("storing an event failed")
                return
            # One bad event must not fail the others: store each on its own.
            for one in batch:
                await self._write([one])
            return
        for (_, future), is_new in zip(batch, results, strict=True):
            _settle(future, result=is_new)


def _settle(
    future: asyncio.Future[bool], *, result: bool = False, exc: BaseException | None = None
) -> None:
    if future.done():  # the request went away (cancelled); its event is stored or not
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
