"""What the running daemon's parts share: the config in force, the store, the hub, the budgets,
and the teller of operational events."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.routing import BaseRoute

from bridge.budgets import Budgets
from bridge.config import Config
from bridge.events import now_ms
from bridge.hub import Hub
from bridge.operational import Operational
from bridge.store import Store
from bridge.tracing import Tracer


@dataclass
class Runtime:
    """The shared state of one running bridge."""

    config: Config
    store: Store
    hub: Hub = field(default_factory=Hub)
    started_ms: int = field(default_factory=now_ms)
    # False while starting, reloading or stopping; /readyz answers 503 then.
    is_ready: bool = False
    # True when the server's socket is bound to a loopback address (decided from the address
    # bound, see bridge/daemon/server.py): only then are admin routes served without a token.
    is_loopback: bool = False
    # The request budgets polled sources share (the poller applies the config's).
    budgets: Budgets = field(default_factory=Budgets)
    # Why the last reload was refused, until one is applied (status, /api/status, the page).
    reload_error: str | None = None
    # Reloads finished, applied or refused: `bridge reload` waits for this to move.
    reloads: int = 0
    # Poll a source now and return the outcome (set by the poller; the admin route calls it).
    poll_now: Callable[[str], Awaitable[dict[str, Any]]] | None = None
    # The polls the upstreams hold back now: source -> (until, epoch seconds; the header why).
    poll_holds: Callable[[], dict[str, tuple[float, str]]] | None = None
    # Spans of receiving, storing and delivering: inert unless `tracing.otlp` is set.
    tracer: Tracer = field(default_factory=Tracer)
    # Tells the engines' changes of state as events of source `bridge` (set from the above).
    operational: Operational = field(init=False)

    def __post_init__(self) -> None:
        self.operational = Operational(lambda: self.config, self.store, self.hub)


class Component(Protocol):
    """An engine the daemon starts and stops: the poller, the receiver, the deliverer."""

    def routes(self) -> list[BaseRoute]:
        """HTTP routes this component serves (may be empty)."""
        ...

    async def start(self) -> None:
        """Begin work; return once running."""
        ...

    async def stop(self, grace_s: float) -> None:
        """Stop taking new work, let work in flight finish within `grace_s`, then cancel it."""
        ...

    async def reload(self, config: Config) -> None:
        """Apply a new, already validated config (SIGHUP) without losing queued work."""
        ...
