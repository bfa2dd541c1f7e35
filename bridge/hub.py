"""In-process notifications between the engines.

When events are stored, the delivery workers want to wake at once (rather than on their next
scan) and a polled source with `on_push` wants to poll. The hub carries those notices; it is
an optimisation only: everything it says can also be found in the store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from bridge.events import Event

log = logging.getLogger("bridge.hub")

Listener = Callable[[Sequence[Event]], None]


class Hub:
    """Synchronous fan-out of 'these events were stored' notices, within one process."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(events)` after each commit of new events."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        """Stop calling `listener`."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def recorded(self, events: Sequence[Event]) -> None:
        """Tell every listener that `events` are stored; a failing listener is logged only."""
        if not events:
            return
        for listener in list(self._listeners):
            try:
                listener(events)
            except Exception:
                log.exception("a listener failed on %d new events", len(events))
