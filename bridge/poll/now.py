"""A poll asked for by an operator (`bridge poll SOURCE`, `POST /api/poll/SOURCE`): start it
at once (or right after the one in flight) and tell how it went.

The poll is the scheduler's like any other, so it never runs beside another poll of the same
source, takes the source's lease and counts against its budget; its outcome is read from the
poll state the store records, which the scheduled polls update too. While the upstream has
asked for no request before a time (a `Retry-After`, a rate-limit reset), no poll is sent:
the answer says until when (`held_back`).
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime
from typing import Any

from bridge.events import format_time, now_ms
from bridge.store import Store
from bridge.store.base import PollState

# How often the store is asked whether the poll has finished.
CHECK_EVERY_S = 0.05
# Beyond the poll's own timeout: how long to wait for it to start (a poll in flight first).
MARGIN_S = 5.0


def has_polled_since(state: PollState, at_ms: int) -> bool:
    """True when `state` records a poll that started at or after `at_ms`."""
    return state.last_poll_ms is not None and state.last_poll_ms >= at_ms


def outcome(before: PollState, after: PollState) -> dict[str, Any]:
    """The poll's outcome as plain data, from the source's state before and after it."""
    failed = after.consecutive_failures > 0
    return {
        "source": after.source,
        "polled": True,
        "ok": not failed,
        "at": format_time(after.last_poll_ms) if after.last_poll_ms is not None else None,
        "status": after.last_status,
        "duration_ms": after.last_duration_ms,
        "requests": after.requests - before.requests,
        "items": after.items,
        "events": after.events - before.events,
        "error": after.last_error if failed else None,
    }


def not_polled(name: str, waited_s: float) -> dict[str, Any]:
    """The answer when no poll finished in time: the lease or a budget held it back."""
    return {
        "source": name,
        "polled": False,
        "ok": False,
        "error": f"no poll finished within {waited_s:g} s: another replica may hold its"
        " lease, or its budget delays it",
    }


def clock_time(at_s: float, now_s: float) -> str:
    """`12:00:00` (UTC, as every time the bridge shows), with the date when not today's."""
    at, now = datetime.fromtimestamp(at_s, UTC), datetime.fromtimestamp(now_s, UTC)
    return at.strftime("%H:%M:%S" if at.date() == now.date() else "%Y-%m-%d %H:%M:%S")


def held_back(name: str, until_s: float, why: str, now_s: float) -> dict[str, Any]:
    """The answer when the upstream asked for no poll before `until_s`: none was sent."""
    return {
        "source": name,
        "polled": False,
        "ok": False,
        "held_until": format_time(math.ceil(until_s * 1000)),
        "retry_after_s": max(1, math.ceil(until_s - now_s)),
        "error": f"held back by the upstream until {clock_time(until_s, now_s)} ({why})",
    }


async def wait_for_poll(store: Store, name: str, at_ms: int, timeout_s: float) -> PollState | None:
    """The source's state once a poll started at or after `at_ms` is recorded; None on time-out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = await store.load_poll_state(name)
        if has_polled_since(state, at_ms):
            return state
        await asyncio.sleep(CHECK_EVERY_S)
    return None


async def poll_now(
    store: Store, scheduler: Any, name: str, poll_timeout_s: float
) -> dict[str, Any]:
    """Ask `scheduler` to poll `name` now; its outcome, or why none came."""
    if (held := scheduler.held(name)) is not None:
        until_s, why = held
        return held_back(name, until_s, why, time.time())
    before = await store.load_poll_state(name)
    at_ms = now_ms()
    scheduler.poll_now(name)
    waited_s = 2 * poll_timeout_s + MARGIN_S
    after = await wait_for_poll(store, name, at_ms, waited_s)
    return outcome(before, after) if after is not None else not_polled(name, waited_s)
