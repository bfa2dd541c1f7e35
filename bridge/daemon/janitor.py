"""Retention: the `Janitor` deletes events older than `retention.events` once finished.

Every `retention.every` (the first time `retention.first` after the start) the janitor asks
the store to prune events recorded before now minus `retention.events` whose deliveries are
all delivered, in batches of `BATCH` so no transaction holds the writer for long, until a
batch comes back short or `MAX_BATCHES` ran (the rest waits for the next run). Events with
a pending, failed or dead delivery are kept, and so are poll snapshots. `events: 0` keeps
everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from starlette.routing import BaseRoute

from bridge.config import Config, RetentionConfig
from bridge.errors import StoreError
from bridge.events import now_ms
from bridge.runtime import Runtime

log = logging.getLogger("bridge.retention")

BATCH = 2000
MAX_BATCHES = 500  # a million events per run at most; a bigger backlog goes in later runs


class Janitor:
    """The component that deletes old, finished events on a schedule."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.config: RetentionConfig = runtime.config.retention
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._is_stopping = False
        self._next_at = 0.0  # time.monotonic() of the next run

    def routes(self) -> list[BaseRoute]:
        """No routes."""
        return []

    async def start(self) -> None:
        """Schedule the first run `retention.first` from now."""
        self._next_at = time.monotonic() + self.config.first_s
        self._task = asyncio.create_task(self._run(), name="retention")

    async def stop(self, grace_s: float) -> None:
        """Let a batch in flight finish within `grace_s` (no new one starts), then cancel."""
        self._is_stopping = True
        self._wake.set()
        if self._task is None:
            return
        await asyncio.wait({self._task}, timeout=grace_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def reload(self, config: Config) -> None:
        """Use the new retention settings; a changed `every` counts from the last run."""
        old, self.config = self.config, config.retention
        if old.every_s != self.config.every_s:
            self._next_at += self.config.every_s - old.every_s
            self._wake.set()

    async def prune_once(self) -> int:
        """Delete the events now past retention, batch by batch; returns how many went."""
        if not self.config.events_s:
            return 0
        started = time.monotonic()
        before_ms = now_ms() - int(self.config.events_s * 1000)
        total = 0
        for _ in range(MAX_BATCHES):
            if self._is_stopping:
                break
            deleted = await self.runtime.store.prune(before_ms, BATCH)
            total += deleted
            if deleted < BATCH:
                break
        log.info(
            "retention: deleted %d events older than %.0f s in %.2f s",
            total,
            self.config.events_s,
            time.monotonic() - started,
        )
        return total

    async def _run(self) -> None:
        while not self._is_stopping:
            delay_s = self._next_at - time.monotonic()
            if delay_s > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay_s)
                continue  # woken by a reload or a stop: look again
            self._next_at = time.monotonic() + self.config.every_s
            try:
                await self.prune_once()
            except StoreError as exc:
                log.warning(
                    "retention: old events not deleted (next run in %.0f s): %s",
                    self.config.every_s,
                    exc,
                )
