"""The poller: the component that polls every `poll` source, diffs, and commits events.

One poll is fetch -> index and diff against the stored snapshot -> one store transaction
with the events, their deliveries, the snapshot changes and the stats. A fault anywhere
before the commit changes nothing but the stats; a crash before the commit leaves the
snapshot as it was, so the next poll detects the same changes again, with the same event
ids (see `diff.build_events`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from starlette.routing import BaseRoute

from bridge import metrics
from bridge.compare.merge import count_sighting, member_targets, merged_event, unmatched
from bridge.config import AdaptiveEvery, Config, PollConfig
from bridge.errors import FetchError, StoreError
from bridge.events import MAX_ATTRIBUTE_BYTES, Event, now_ms
from bridge.logs import plural
from bridge.poll.auth import Credentials, credential_configs
from bridge.poll.detect import Detection, detect
from bridge.poll.diff import Indexed, getter
from bridge.poll.fetch import Fetched, Validators
from bridge.poll.modes import MISSED
from bridge.poll.now import poll_now
from bridge.poll.scheduler import PollResult, Scheduler
from bridge.poll.streamed import TRIM_ITEMS, map_large_blocks, trim_memory
from bridge.poll.transport import new_client
from bridge.repeats import RepeatLog
from bridge.routing import passing, route, targets_for
from bridge.runtime import Runtime
from bridge.store import NewEvent
from bridge.store.base import PollCommit, PollOutcome

log = logging.getLogger("bridge.poll")

# How many first polls start per second when the daemon starts many sources.
FIRST_POLLS_PER_S = 100
# At most this many polls in flight at once; the rest wait their turn here, in order, and
# the HTTP pool has as many connections. (10,000 polls queued inside httpcore's pool, which
# scans its queue against its connections at every request, took a whole core.)
POLLS_IN_FLIGHT = 100


class _Place:
    """One of the `POLLS_IN_FLIGHT` places, given back once: after the fetch, or at the end."""

    def __init__(self, places: asyncio.Semaphore) -> None:
        self._places = places
        self._held = False

    async def __aenter__(self) -> _Place:
        await self._places.acquire()
        self._held = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        if self._held:
            self._held = False
            self._places.release()


def poll_sources(config: Config) -> Mapping[str, PollConfig]:
    """The polled sources of a config, by name."""
    return config.polled


class Poller:
    """The component that polls every `poll` source of the config on its schedule."""

    def __init__(self, runtime: Runtime, client: httpx.AsyncClient | None = None) -> None:
        self.runtime = runtime
        self.config = runtime.config
        self._client = client
        self._owns_client = client is None
        self._scheduler: Scheduler | None = None
        self._repeats = RepeatLog(log)  # a failure that repeats said once, then counted
        self._leased: set[str] = set()  # sources whose poll lease this replica holds
        self._in_flight = asyncio.Semaphore(POLLS_IN_FLIGHT)
        self._stopping = False
        self._said: set[tuple[str, str]] = set()  # (source, fault) already logged once
        # The sources' `auth:`: one token provider per OAuth2 credential, shared.
        base = self.config.path.parent if self.config.path else Path.cwd()
        self.credentials = Credentials(runtime.store, base)
        self.credentials.apply(credential_configs(self.config), poll_sources(self.config))

    # -- the component ---------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        """The poller serves no HTTP routes."""
        return []

    @property
    def client(self) -> httpx.AsyncClient:
        """The HTTP client of the polls (made on first use)."""
        if self._client is None:
            self._client = new_client(POLLS_IN_FLIGHT)
        return self._client

    @property
    def scheduler(self) -> Scheduler:
        """The scheduler (made on first use)."""
        if self._scheduler is None:
            self._scheduler = Scheduler(self.poll_source, self.runtime.budgets)
        return self._scheduler

    async def start(self) -> None:
        """Schedule every polled source; the first polls start at most 100 a second."""
        self.runtime.budgets.apply(self.config.budgets)
        map_large_blocks()
        self.scheduler.start()
        sources = poll_sources(self.config)
        # 1,000 sources starting within one second would queue in the HTTP pool and keep
        # that burst on every interval after: spread them, 100 a second, over at most each
        # source's interval (a few sources still all start within the first second).
        spread_s = max(1.0, len(sources) / FIRST_POLLS_PER_S)
        for name, poll in sources.items():
            self.scheduler.add(name, poll, spread_s)
        self.runtime.hub.subscribe(self._on_events)
        self.runtime.poll_now = self.poll_on_request
        self.runtime.poll_holds = self.scheduler.holds
        if poll_sources(self.config):
            log.info("polling %s", plural(len(poll_sources(self.config)), "source"))

    async def stop(self, grace_s: float) -> None:
        """Start no new polls; let those in flight commit within `grace_s`, then cancel."""
        self._stopping = True  # polls still waiting for a place do not start
        self.runtime.hub.unsubscribe(self._on_events)
        if self._scheduler is not None:
            await self._scheduler.stop(grace_s)
        await self._release_leases(self._leased)
        if self._client is not None and self._owns_client:
            await self._client.aclose()
        self._repeats.flush()

    async def reload(self, config: Config) -> None:
        """Add, remove and reschedule the sources whose `poll` config changed."""
        old, new = poll_sources(self.config), poll_sources(config)
        self.config = config
        self.credentials.apply(credential_configs(config), new)
        self.runtime.budgets.apply(config.budgets)  # the windows of kept budgets stay
        for name in old.keys() - new.keys():
            self.scheduler.remove(name)
            log.info("%s: no longer polled", name)
        await self._release_leases(self._leased - new.keys())
        for name, poll in new.items():
            if old.get(name) != poll:
                self.scheduler.remove(name)
                self.scheduler.add(name, poll)
                log.info("%s: %s", name, "rescheduled" if name in old else "now polled")

    async def poll_on_request(self, name: str) -> dict[str, Any]:
        """Poll `name` now, as its next scheduled poll would; its outcome (KeyError: not a
        polled source)."""
        poll = poll_sources(self.config)[name]
        return await poll_now(self.runtime.store, self.scheduler, name, poll.timeout_s)

    def _on_events(self, events: Sequence[Event]) -> None:
        if self._scheduler is None or not self.config.push_hints:
            return  # the common case, on every webhook: no source polls on a push
        pushed = {e.source for e in events if e.origin == "push"}
        if not pushed or self._scheduler is None:
            return
        for merge in self.config.merge:
            if merge.name in pushed:  # a merged event pushed by its webhook member
                pushed.update(merge.sources)
        for name, poll in poll_sources(self.config).items():
            if poll.on_push in pushed:
                log.debug("%s: polling now on a hint from %s", name, poll.on_push)
                self._scheduler.poll_now(name)

    # -- one poll --------------------------------------------------------------------------

    async def poll_source(self, name: str, interval_s: float) -> PollResult:
        """The scheduler's job: poll once, counting the polls saved by a longer interval."""
        poll = poll_sources(self.config).get(name)
        if poll is None:
            return PollResult(requests=0)
        async with _Place(self._in_flight) as place:
            if self._stopping:
                return PollResult(polled=False, requests=0)
            # The lease is taken once the poll has its place: waiting for one cannot outlast it.
            if not await self._take_lease(name, poll, interval_s):
                return PollResult(polled=False, requests=0)
            saved = (
                interval_s / poll.min_every_s - 1 if isinstance(poll.every, AdaptiveEvery) else 0
            )
            return await self.poll_once(
                name, interval_s=interval_s, saved_requests=max(saved, 0.0), place=place
            )

    async def _take_lease(self, name: str, poll: PollConfig, interval_s: float) -> bool:
        """Take or renew this replica's lease on polling `name`; False if another holds it.

        The lease lasts the interval plus the time a poll may take: the holder renews it at
        each of its polls and keeps the source; when it dies, another replica takes over
        once the lease runs out; when it stops, once the interval is over (see
        docs/guides/several-bridges.md).
        """
        at_ms = now_ms()
        lease_s = interval_s + poll.timeout_s + poll.jitter_s
        try:
            held = await self.runtime.store.acquire_poll_lease(
                name, at_ms, at_ms + round(lease_s * 1000), at_ms + round(interval_s * 1000)
            )
        except StoreError as exc:
            self._repeats.warning(
                (name, "lease"), "%s: poll skipped, the lease could not be taken: %s", name, exc
            )
            return False
        self._repeats.passed((name, "lease"), "%s: the poll lease is taken again", name)
        if held and name not in self._leased:
            log.info("%s: this replica polls it now", name)
            self._leased.add(name)
        elif not held and name in self._leased:
            log.info("%s: another replica polls it now", name)
            self._leased.discard(name)
        return held

    async def _release_leases(self, names: set[str]) -> None:
        """Give up these sources' leases: another replica polls them from their next due time."""
        for name in sorted(names):
            self._leased.discard(name)
            try:
                await self.runtime.store.release_poll_lease(name)
            except StoreError as exc:
                log.warning("%s: the poll lease was not released (it expires): %s", name, exc)

    async def poll_once(
        self,
        name: str,
        *,
        interval_s: float | None = None,
        saved_requests: float = 0.0,
        place: _Place | None = None,
    ) -> PollResult:
        """Poll a source once and commit what changed; never raises for a failed fetch.

        The poll gives back its `place` (one of the `POLLS_IN_FLIGHT`) once it has fetched
        and diffed, before its commit waits for the disk: other polls go on meanwhile and
        their commits join the same group commit.
        """
        fetched = Fetched()
        result = await self._poll_once(name, fetched, interval_s, saved_requests, place)
        if fetched.item_count > TRIM_ITEMS:
            trim_memory()  # once the poll's objects are gone, committed or failed
        return result

    async def _poll_once(
        self,
        name: str,
        fetched: Fetched,
        interval_s: float | None,
        saved_requests: float,
        place: _Place | None,
    ) -> PollResult:
        poll = poll_sources(self.config)[name]
        store = self.runtime.store
        started = time.perf_counter()
        at_ms = now_ms()
        try:
            try:
                state = await store.load_poll_state(name)
                detection = await detect(
                    self.client,
                    name,
                    poll,
                    store=store,
                    state=state,
                    validators=Validators(state.etag, state.last_modified),
                    out=fetched,
                    auth=self.credentials.auth_for(name),
                )
            finally:
                if place is not None:
                    place.release()
            duration_ms = round((time.perf_counter() - started) * 1000)
            outcome = PollOutcome(
                at_ms=at_ms,
                duration_ms=duration_ms,
                status=fetched.status,
                requests=fetched.requests,
                not_modified=fetched.not_modified,
                bytes=fetched.bytes,
                interval_s=interval_s,
                saved_requests=saved_requests,
            )
            if fetched.not_modified:
                await store.record_poll(name, outcome)
                self._count(name, "not_modified", fetched)
                self._recovered(name, state.consecutive_failures)
                return self._limited(name, PollResult(), fetched)
            result = await self._commit(name, detection, outcome)
            self._recovered(name, state.consecutive_failures)
            return self._limited(name, result, fetched)
        except FetchError as exc:
            result = await self._failed(name, exc, fetched, at_ms, started, interval_s)
            return self._limited(name, result, fetched)
        except StoreError as exc:
            metrics.POLLS.labels(name, "error").inc()
            metrics.POLL_ERRORS.labels(name, "store").inc()
            self._repeats.warning((name, "commit"), "%s: poll not committed: %s", name, exc)
            return self._limited(name, PollResult(), fetched)

    def _batch(self, name: str, events: Sequence[Event]) -> list[NewEvent]:
        """The events to record with their targets; in a merge, each event's merged one."""
        targets = self.config.targets
        merge = self.config.merge_of(name)
        if merge is None:
            return [NewEvent(e, route(targets, e)) for e in events]
        own = member_targets(self.config, name)
        poll = poll_sources(self.config)[name]
        version_of = getter(poll.version) if poll.version else None
        batch = []
        for e in events:
            item = e.data.get("object") if isinstance(e.data, dict) else None
            version = version_of(item) if version_of is not None else None
            merged, sighting = merged_event(merge, e, "poll", version) or unmatched(merge, e)
            wanted = passing(targets, targets_for(targets, merge.name, e.type), merged)
            batch.append(NewEvent(merged, wanted, sighting))
            mine = [t for t in route(targets, e) if t in own]
            if mine:
                batch.append(NewEvent(e, mine))
        return batch

    async def _commit(self, name: str, detection: Detection, outcome: PollOutcome) -> PollResult:
        batch = self._batch(name, detection.events)
        indexed = detection.indexed
        outcome = _with_counts(outcome, indexed, len(detection.events))
        fetched = detection.fetched
        is_new = await self.runtime.store.commit_poll(
            PollCommit(
                source=name,
                outcome=outcome,
                events=batch,
                upserts=detection.upserts,
                deletes=detection.deletes,
                etag=fetched.validators.etag,
                last_modified=fetched.validators.last_modified,
                cursor=detection.cursor,
                gap=detection.gap,
                first=detection.is_first,
                pending=detection.pending,
            )
        )
        self._count_cursor_faults(name, detection)
        if detection.pending is not None:
            metrics.POLL_PENDING_DELETES.labels(name).set(len(detection.pending))
        if detection.still_there:
            log.info(
                "%s: %s missing from this walk of %s are still there (deletes.check): the"
                " list shifted under the walk",
                name,
                plural(detection.still_there, "key"),
                plural(fetched.pages, "page"),
            )
        if detection.newly_pending:
            log.info(
                "%s: %s missing from this walk of %s, deleted only if the next walks lack"
                " them too (deletes.confirm)",
                name,
                plural(detection.newly_pending, "key"),
                plural(fetched.pages, "page"),
            )
        if detection.gap:
            metrics.POLL_GAPS.labels(name).inc()
            log.warning("%s: gap: %s; events between may be missing", name, detection.gap_why)
            self.runtime.operational.poll_gap(name, detection.gap_why, outcome.at_ms)
        new_events = [item.event for item, fresh in zip(batch, is_new, strict=True) if fresh]
        for item, fresh in zip(batch, is_new, strict=True):
            if item.sighting is not None:
                count_sighting(item.sighting, first=fresh)
        self._count(name, "ok", fetched)
        metrics.POLL_ITEMS.labels(name).set(indexed.count)
        for event in new_events:
            metrics.EVENTS.labels(name, "poll").inc()
            if event.time_ms is not None:
                latency_s = max(0.0, (event.recorded_ms - event.time_ms) / 1000)
                metrics.DETECTION_LATENCY.labels(name, "poll").observe(latency_s)
        self.runtime.hub.recorded(new_events)
        if detection.change_count or indexed.skipped or indexed.duplicates:
            log.info(
                "%s: %d items, %d changes, %d new events%s in %d ms",
                name,
                indexed.count,
                detection.change_count,
                len(new_events),
                " (baseline)" if detection.is_first else "",
                outcome.duration_ms,
            )
        _count_skipped(name, indexed)
        if indexed.skipped or indexed.duplicates:
            log.warning(
                "%s: skipped %d items without a key; %d keys were repeated (the last one won)",
                name,
                indexed.skipped,
                indexed.duplicates,
            )
        return PollResult(changed=bool(detection.change_count) and not detection.is_first)

    async def _failed(
        self,
        name: str,
        exc: FetchError,
        fetched: Fetched,
        at_ms: int,
        started: float,
        interval_s: float | None,
    ) -> PollResult:
        error, max_wait_s = str(exc), self.config.limits.max_wait_s
        if fetched.limits.is_clamped(time.time(), max_wait_s):
            error += f" (it asks to wait more than limits.max_wait: waiting {max_wait_s:g} s)"
        outcome = PollOutcome(
            at_ms=at_ms,
            duration_ms=round((time.perf_counter() - started) * 1000),
            status=exc.status,
            error=error,
            requests=fetched.requests,
            bytes=fetched.bytes,
            interval_s=interval_s,
        )
        self._count(name, "error", fetched)
        metrics.POLL_ERRORS.labels(name, exc.reason).inc()
        fields = {"source": name, "reason": exc.reason, "duration_ms": outcome.duration_ms}
        if exc.status is not None:
            fields["status"] = exc.status
        kind = (name, "failed", exc.reason)
        self._repeats.warning(kind, "%s: poll failed, state kept: %s", name, exc, extra=fields)
        self.runtime.operational.poll_failed(name, error, at_ms)
        try:
            await self.runtime.store.record_poll(name, outcome)
        except StoreError as store_exc:
            self._repeats.warning(
                (name, "stats"), "%s: cannot record the poll's stats: %s", name, store_exc
            )
        else:
            self._repeats.passed((name, "stats"), "%s: the poll's stats are recorded again", name)
        return PollResult(throttled=exc.reason == "throttled", retry_after_s=exc.retry_after_s)

    def _limited(self, name: str, result: PollResult, fetched: Fetched) -> PollResult:
        """`result` with the requests the poll made and the wait its upstream's headers ask
        for, at most `limits.max_wait` (a longer one is logged and named in `wait_why`)."""
        limits, now_s = fetched.limits, time.time()
        if limits.remaining is not None:
            log.debug("rate limit: %s of %s requests remaining", limits.remaining, limits.limit)
        max_wait_s = self.config.limits.max_wait_s
        why = limits.why
        if limits.is_clamped(now_s, max_wait_s):
            why = f"{why}; it asked for more than limits.max_wait, {max_wait_s:g} s"
            log.warning("%s: the upstream asks for a longer wait than limits.max_wait", name)
        return replace(
            result,
            wait_s=limits.wait_s(now_s, max_wait_s),
            wait_why=why,
            max_wait_s=max_wait_s,
            requests=fetched.requests,
        )

    def _count_cursor_faults(self, name: str, detection: Detection) -> None:
        """Count an incremental poll's cursor faults; say each kind once per source."""
        if detection.cursor_skewed:
            metrics.POLL_CURSOR_SKEWED.labels(name).inc(detection.cursor_skewed)
            if (name, "skewed") not in self._said:
                self._said.add((name, "skewed"))
                log.warning(
                    "%s: %d cursor values further in the future than cursor.max_skew did not"
                    " move the watermark (their items are still compared by version; said once)",
                    name,
                    detection.cursor_skewed,
                )
        if detection.cursor_missed:
            metrics.POLL_CURSOR_MISSED.labels(name).inc(detection.cursor_missed)
            log.warning("%s: %s", name, MISSED.format(n=detection.cursor_missed))

    def _recovered(self, name: str, failures: int) -> None:
        """A poll of `name` is committed: say once that it polls again after failing
        (`failures` polls in a row, the failures not printed among them), and that its writes
        succeed again after a store's fault."""
        for kind in ("commit", "stats"):
            self._repeats.passed((name, kind), "%s: the poll's writes succeed again", name)
        self.runtime.operational.poll_succeeded(name)
        if failures:
            self._repeats.repeats.forget(
                lambda k: isinstance(k, tuple) and k[:2] == (name, "failed")
            )
            log.info(
                "%s: polling recovered after %d failed poll%s",
                name,
                failures,
                "s" * (failures != 1),
                extra={"source": name},
            )

    @staticmethod
    def _count(name: str, outcome: str, fetched: Fetched) -> None:
        metrics.POLLS.labels(name, outcome).inc()
        metrics.POLL_REQUESTS.labels(name).inc(fetched.requests)
        if outcome == "not_modified":
            metrics.POLL_NOT_MODIFIED.labels(name).inc()


def _count_skipped(name: str, indexed: Indexed) -> None:
    """Count the items the index left out; log those whose key is too long (one line)."""
    if indexed.skipped:
        metrics.POLL_ITEMS_SKIPPED.labels(name, "no_key").inc(indexed.skipped)
    if indexed.too_long:
        metrics.POLL_ITEMS_SKIPPED.labels(name, "too_long").inc(indexed.too_long)
        log.warning(
            "%s: skipped %d items whose key is longer than %d bytes",
            name,
            indexed.too_long,
            MAX_ATTRIBUTE_BYTES,
        )


def _with_counts(outcome: PollOutcome, indexed: Indexed, events: int) -> PollOutcome:
    return replace(
        outcome,
        items=indexed.count,
        events=events,
        skipped=indexed.skipped,
        duplicate_keys=indexed.duplicates,
    )
