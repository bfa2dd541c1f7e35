"""Operational events: the bridge's own troubles, told as CloudEvents of source `bridge`.

The engines say what changed (a target's circuit opened, a source failed a poll); this
module decides whether that is news and, if so, records one event through the same store
path as any event (`record_events`: durable, one delivery per target in the outbox), routed
by type to the targets that ask for them (`routing.matches`):

    engine -> Operational.<change> -> a spell begins or ends -> emit -> store -> deliver

- One event per change of state, never one per attempt: a *spell* (a target failing, a
  circuit open, a source failing) is announced once, when it begins or crosses its
  threshold (`operational:` in the config), and its end once, only if its start was told.
- An event about a target is never delivered to that target (its own outage would be news
  it cannot receive, and a retry loop besides).
- No storms: a change caused by delivering an operational event (`caused_by_bridge`) is not
  told; the spell still starts, so a later failure of an ordinary event can tell it.
- Each event's data says what (`message`), where (`target` or `source`), since when
  (`since`) and the last error (`error`); its id is derived from the spell, so the same
  change told twice is stored once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge import logs
from bridge.config import Config
from bridge.errors import StoreError
from bridge.events import BRIDGE_SOURCE, Event, event_id, format_time, now_ms
from bridge.hub import Hub
from bridge.routing import route
from bridge.store.base import EventStore, NewEvent

log = logging.getLogger("bridge.operational")

# Every operational event type and when it is recorded (the docs page lists the same).
TYPES: dict[str, str] = {
    "bridge.delivery.dead": "a delivery gave up after its last retry",
    "bridge.delivery.failing": "a target's attempts failed `delivery_failing_after` times in a row",
    "bridge.target.circuit_opened": "a target's circuit opened: nothing new is sent to it",
    "bridge.target.circuit_closed": "a target's circuit closed again (after it was told open)",
    "bridge.target.disabled": "a target was disabled (it answered 410 Gone, or an operator)",
    "bridge.source.failing": "a source's polls failed `source_failing_after` times in a row"
    " or for `source_failing_for`",
    "bridge.source.recovered": "a poll of a source told failing succeeded again",
    "bridge.poll.gap": "a poll found that events may be missing between two polls",
    "bridge.reload.refused": "a reload (SIGHUP) was refused; the config in force is unchanged",
}


@dataclass
class Spell:
    """A stretch of one trouble: since when, how many times, and whether it was told."""

    since_ms: int
    count: int = 0
    error: str | None = None
    is_told: bool = False


class Operational:
    """Turns the engines' changes of state into operational events, once each."""

    def __init__(self, config: Callable[[], Config], store: EventStore, hub: Hub) -> None:
        self._config = config  # the config in force (a reload changes it)
        self.store = store
        self.hub = hub
        self._spells: dict[tuple[str, str], Spell] = {}
        self._writes: set[asyncio.Task[None]] = set()

    # -- targets ----------------------------------------------------------------------------

    def delivery_failed(self, target: str, error: str | None, *, caused_by_bridge: bool) -> None:
        """An attempt to `target` failed: told once the failures in a row reach the threshold."""
        spell = self._note(("failing", target), now_ms(), error)
        if spell.count >= self._config().operational.delivery_failing_after:
            self._tell(
                spell,
                "bridge.delivery.failing",
                f"targets/{target}",
                {"target": target, "failures": spell.count},
                f"target {target}: {spell.count} failed attempts in a row",
                about=target,
                quiet=caused_by_bridge,
            )

    def delivery_succeeded(self, target: str) -> None:
        """An attempt to `target` succeeded: its failing spell ends (no event of its own)."""
        self._spells.pop(("failing", target), None)

    def delivery_dead(
        self, target: str, event: Event, delivery_id: int, attempts: int, error: str | None
    ) -> None:
        """A delivery to `target` is dead (told unless it carried an operational event)."""
        if event.source == BRIDGE_SOURCE:
            return
        at_ms = now_ms()
        data: dict[str, Any] = {"event_id": event.id, "event_source": event.source}
        data["event_type"] = event.type
        data |= {"delivery_id": delivery_id, "attempts": attempts}
        message = f"target {target}: delivery of {event.id} from {event.source} is dead"
        spell = Spell(at_ms, attempts, error)
        self._emit(
            "bridge.delivery.dead", f"targets/{target}", {"target": target, **data},
            message, spell, about=target, identity=str(delivery_id),
        )  # fmt: skip

    def circuit_opened(
        self, target: str, until_ms: int | None, error: str | None, *, caused_by_bridge: bool
    ) -> None:
        """`target`'s circuit opened (again, after a failed probe: the same spell)."""
        spell = self._note(("circuit", target), now_ms(), error)
        data = {"target": target, "until": format_time(until_ms) if until_ms else None}
        self._tell(
            spell, "bridge.target.circuit_opened", f"targets/{target}", data,
            f"target {target}: circuit opened, nothing new is sent to it",
            about=target, quiet=caused_by_bridge,
        )  # fmt: skip

    def circuit_closed(self, target: str, by: str | None = None) -> None:
        """`target`'s circuit closed: told when its opening was."""
        spell = self._spells.pop(("circuit", target), None)
        if spell is None or not spell.is_told:
            return
        how = f" by {by}" if by else ""
        self._emit(
            "bridge.target.circuit_closed", f"targets/{target}",
            {"target": target, "closed": format_time(now_ms()), "by": by or "attempt"},
            f"target {target}: circuit closed{how}", spell, about=target, identity="closed",
        )  # fmt: skip

    def circuit_was_open(self, target: str, since_ms: int) -> None:
        """At start: `target`'s circuit is open from before (told then), so its close is news."""
        self._spells.setdefault(("circuit", target), Spell(since_ms, 1, None, is_told=True))

    def target_disabled(self, target: str, reason: str | None, at_ms: int) -> None:
        """`target` was disabled (a 410, or an operator)."""
        spell = Spell(at_ms, 1, reason)
        self._emit(
            "bridge.target.disabled", f"targets/{target}", {"target": target, "reason": reason},
            f"target {target}: disabled ({reason or 'no reason given'})", spell, about=target,
            identity="disabled",
        )  # fmt: skip

    # -- sources ----------------------------------------------------------------------------

    def poll_failed(self, source: str, error: str, at_ms: int) -> None:
        """A poll of `source` failed: told once it failed often enough or long enough."""
        spell = self._note(("source", source), at_ms, error)
        settings = self._config().operational
        if spell.count >= settings.source_failing_after or (
            at_ms - spell.since_ms >= settings.source_failing_for_s * 1000
        ):
            self._tell(
                spell, "bridge.source.failing", f"sources/{source}",
                {"source": source, "failures": spell.count},
                f"source {source}: {spell.count} failed polls in a row", quiet=False,
            )  # fmt: skip

    def poll_succeeded(self, source: str) -> None:
        """A poll of `source` succeeded: `bridge.source.recovered` when its failing was told."""
        spell = self._spells.pop(("source", source), None)
        if spell is None or not spell.is_told:
            return
        self._emit(
            "bridge.source.recovered", f"sources/{source}",
            {"source": source, "failures": spell.count, "recovered": format_time(now_ms())},
            f"source {source}: polls again after {spell.count} failed polls", spell,
            identity="recovered",
        )  # fmt: skip

    def poll_gap(self, source: str, why: str | None, at_ms: int) -> None:
        """A poll of `source` found a gap: events between two polls may be missing."""
        spell = Spell(at_ms, 1, why)
        self._emit(
            "bridge.poll.gap", f"sources/{source}", {"source": source},
            f"source {source}: gap, events may be missing ({why or 'unknown why'})", spell,
            identity="gap",
        )  # fmt: skip

    # -- the daemon -------------------------------------------------------------------------

    def reload_refused(self, reason: str, at_ms: int) -> None:
        """A reload was refused: the config in force stays."""
        spell = Spell(at_ms, 1, reason)
        self._emit(
            "bridge.reload.refused", "config", {},
            "reload refused, the config in force is unchanged", spell, identity="refused",
        )  # fmt: skip

    async def drain(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) for the events being recorded: before the store closes."""
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=timeout_s)

    # -- the spells and the emitting --------------------------------------------------------

    def _note(self, key: tuple[str, str], at_ms: int, error: str | None) -> Spell:
        spell = self._spells.setdefault(key, Spell(at_ms))
        spell.count += 1
        spell.error = error if error is not None else spell.error
        return spell

    def _tell(
        self,
        spell: Spell,
        type: str,
        subject: str,
        data: dict[str, Any],
        message: str,
        *,
        about: str | None = None,
        quiet: bool,
    ) -> None:
        """Emit the spell's start once; a `quiet` change leaves it to the next one."""
        if spell.is_told or quiet:
            return
        spell.is_told = True
        self._emit(type, subject, data, message, spell, about=about, identity="begins")

    def _emit(
        self,
        type: str,
        subject: str,
        data: dict[str, Any],
        message: str,
        spell: Spell,
        *,
        identity: str,
        about: str | None = None,
    ) -> None:
        error = logs.scrub(spell.error) if spell.error else None
        text = logs.scrub(message + (f": {error}" if error else ""))
        at_ms = now_ms()
        body = {"message": text, **data, "since": format_time(spell.since_ms), "error": error}
        event = Event(
            id=event_id(BRIDGE_SOURCE, type, subject, str(spell.since_ms), identity),
            source=BRIDGE_SOURCE,
            type=type,
            origin="bridge",
            data=body,
            recorded_ms=at_ms,
            subject=subject,
            time_ms=at_ms,
        )
        # Never to the target the event is about: it could not take it, and must not retry it.
        targets = [t for t in route(self._config().targets, event) if t != about]
        log.info("%s: %s", type, text)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.warning("%s not recorded: no event loop", type)
            return
        task = loop.create_task(self._record(event, targets))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _record(self, event: Event, targets: list[str]) -> None:
        try:
            (is_new,) = await self.store.record_events([NewEvent(event, targets)])
        except StoreError as exc:
            log.warning("%s not recorded: %s", event.type, exc)
            return
        if is_new:
            self.hub.recorded([event])
