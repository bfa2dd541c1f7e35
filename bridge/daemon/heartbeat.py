"""Replicas: several bridges sharing one database, each known by its id and its heartbeat.

The `Heartbeat` component records, every `HEARTBEAT_S`, that this replica is alive; a replica
whose last heartbeat is older than `LIVE_S` (in `status/summary.py`) is no longer listed
(`bridge status`). Nothing depends on the heartbeat for safety: claims of deliveries and poll
leases expire on their own, so a replica that dies loses nothing. The heartbeat is for
people: who is running, and what each holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.routing import BaseRoute

from bridge.config import Config
from bridge.errors import StoreError
from bridge.events import now_ms
from bridge.repeats import RepeatLog
from bridge.runtime import Runtime

log = logging.getLogger("bridge.replicas")

HEARTBEAT_S = 2.0


class Heartbeat:
    """The component that keeps this replica's row in the `replicas` table fresh."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._task: asyncio.Task[None] | None = None
        self._repeats = RepeatLog(log)  # while the store is locked: said once, then counted

    def routes(self) -> list[BaseRoute]:
        """No routes: replicas are listed by `bridge status`."""
        return []

    async def start(self) -> None:
        """Record the first heartbeat, then one every HEARTBEAT_S."""
        store = self.runtime.store
        try:
            await self._beat()
        except StoreError as exc:
            # Not a reason to refuse to start: the engines wait for the store on their own.
            log.warning("heartbeat not recorded: %s", exc)
        log.info("replica %s started", store.replica_id)
        self._task = asyncio.create_task(self._run(), name="heartbeat")

    async def stop(self, grace_s: float) -> None:
        """Stop beating and remove this replica's row: a clean stop is not a death."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._repeats.flush()
        try:
            await asyncio.wait_for(self.runtime.store.remove_replica(), timeout=grace_s)
        except (StoreError, TimeoutError) as exc:
            log.warning("could not remove this replica's heartbeat (it goes stale): %s", exc)

    async def reload(self, config: Config) -> None:
        """Nothing in the config concerns the heartbeat."""

    async def _beat(self) -> None:
        await self.runtime.store.heartbeat(self.runtime.started_ms, now_ms())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self._beat()
            except StoreError as exc:
                self._repeats.warning("beat", "heartbeat not recorded: %s", exc)
            else:
                self._repeats.passed("beat", "heartbeats are recorded again")
