"""Gathering the events of concurrent requests into one store call.

Each store call is one trip to the writer thread and back (a queue, a savepoint, a future
resolved across threads). Under load many requests reach the store in the same turn of the
event loop; sending them as one `record_events` batch makes that trip once for all of them.
The store's answer is still per event (new or duplicate), and no request is answered before
the commit that holds its event is durable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from bridge.errors import StoreError
from bridge.events import Event
from bridge.store import NewEvent, Store

log = logging.getLogger("bridge.receive")


class Batcher:
    """Records events for many concurrent callers with one store call per loop turn."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: list[tuple[NewEvent, asyncio.Future[bool]]] = []
        self._flushes: set[asyncio.Task[None]] = set()

    async def record(self, event: Event, targets: Sequence[str]) -> bool:
        """Store `event` and its deliveries durably; True when new, False for a duplicate."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        if not self._pending:
            # Runs after the callbacks already due in this turn: their events join the batch.
            loop.call_soon(self._flush)
        self._pending.append((NewEvent(event, targets), future))
        return await future

    async def drain(self, timeout_s: float) -> None:
        """Wait, at most `timeout_s`, for the store calls in flight to finish."""
        if self._pending:
            self._flush()
        if self._flushes:
            await asyncio.wait(set(self._flushes), timeout=timeout_s)

    def _flush(self) -> None:
        if not self._pending:  # already sent by drain()
            return
        batch, self._pending = self._pending, []
        task = asyncio.create_task(self._write(batch), name="bridge-receive-batch")
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _write(self, batch: list[tuple[NewEvent, asyncio.Future[bool]]]) -> None:
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
            await asyncio.gather(*[self._write([one]) for one in batch])
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
