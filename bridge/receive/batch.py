"""Gathering the events of concurrent requests into one store call.

Each store call is one trip to the store and back (for SQLite: a queue, a savepoint, a
future resolved across threads), so the receiver gathers the events of concurrent requests
into one call. The answer is still per event (new or duplicate), and no request is answered
before the commit that holds its event is durable.

The store takes the gathered events when it is ready to write them, not when the call is
made (`EventStore.record_gathered`): SQLite's writer thread takes them at the start of its
next commit, so the events that arrive while it commits, and while the loop answers the
last commit's requests, all go into the next one, and the writer never waits for the loop
to hand it a batch. At most one call waits to be taken at a time; a store that takes them at
once (PostgreSQL) keeps one call in flight, so that the events arriving meanwhile wait
together. Under load that makes the trip once for many requests (measured: about half the
CPU per stored event); when idle, a request's event goes at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any

from bridge.errors import StoreError
from bridge.events import Event
from bridge.store import NewEvent, Store
from bridge.store.base import Sighting

log = logging.getLogger("bridge.receive")

_Waiting = list[tuple[NewEvent, asyncio.Future[bool]]]


class Batcher:
    """Records events for many concurrent callers, gathered into few store calls."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # Appended to on the loop, taken by the store's writer thread: under `_lock`.
        self._lock = threading.Lock()
        self._pending: _Waiting = []
        self._untaken = False  # a call waits for the store to take `_pending`
        # The store calls in flight, and the tasks that store a failed call's events one by one.
        self._calls: set[asyncio.Future[Any]] = set()
        self._max_calls = max(1, store.gathered_calls)

    async def record(
        self, event: Event, targets: Sequence[str], *, sighting: Sighting | None = None
    ) -> bool:
        """Store `event` and its deliveries durably; True when new, False for a duplicate.

        A merged event also stores its `sighting`, new or not.
        """
        return await self.submit(event, targets, sighting=sighting)

    def submit(
        self, event: Event, targets: Sequence[str], *, sighting: Sighting | None = None
    ) -> asyncio.Future[bool]:
        """`record` without a coroutine: the future of its result."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._pending.append((NewEvent(event, targets, sighting), future))
        if self._is_call_due():
            self._start()
        return future

    async def drain(self, timeout_s: float) -> None:
        """Wait, at most `timeout_s`, until every event handed in is stored or refused."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._pending or self._calls:
            if not self._calls:
                with self._lock:
                    self._untaken = True
                self._start()
            left_s = deadline - loop.time()
            if left_s <= 0:
                return
            await asyncio.wait(set(self._calls), timeout=left_s, return_when="FIRST_COMPLETED")

    def _take(self) -> _Waiting:
        """The events waiting now (on the store's thread or the loop): one call's."""
        with self._lock:
            batch, self._pending = self._pending, []
            self._untaken = False
        return batch

    def _start(self) -> None:
        """Make a store call now, for the events waiting when the store takes them."""
        taken: list[_Waiting] = []

        def take() -> list[NewEvent]:
            taken.append(self._take())
            return [item for item, _ in taken[0]]

        call = self.store.gather_events(take)
        self._calls.add(call)
        call.add_done_callback(lambda done: self._finish(done, taken))

    def _finish(self, call: asyncio.Future[list[bool]], taken: list[_Waiting]) -> None:
        """Answer a call's events (on the loop), then start the next call if one is due."""
        self._calls.discard(call)
        # The store may fail before it takes the events: those waiting share the failure.
        batch = taken[0] if taken else self._take()
        exc = StoreError("the store call was cancelled") if call.cancelled() else call.exception()
        if isinstance(exc, StoreError):
            for _, future in batch:
                _settle(future, exc=exc)
        elif exc is not None:
            task = asyncio.ensure_future(self._one_by_one(batch, exc))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)
        else:
            for (_, future), is_new in zip(batch, call.result(), strict=True):
                _settle(future, result=is_new)
        if self._is_call_due():  # what arrived meanwhile, with no call waiting for it yet
            self._start()

    def _is_call_due(self) -> bool:
        """True when events wait with no call waiting to take them, and a call may be made
        (then it counts as made: the caller starts it)."""
        with self._lock:
            if not self._pending or self._untaken or len(self._calls) >= self._max_calls:
                return False
            self._untaken = True
            return True

    async def _one_by_one(self, batch: _Waiting, exc: BaseException) -> None:
        """Store each event on its own: one bad event must not fail the others."""
        if len(batch) == 1:
            _settle(batch[0][1], exc=StoreError("the event could not be stored"))
            log.error("storing an event failed", exc_info=exc)
            return
        for item, future in batch:
            try:
                (is_new,) = await self.store.record_events([item])
            except StoreError as one:
                _settle(future, exc=one)
            except Exception:
                _settle(future, exc=StoreError("the event could not be stored"))
                log.exception("storing an event failed")
            else:
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
