"""The kinds of target: where a delivery goes and what counts as its acknowledgement.

One module per kind, each a `Kind`: `send` one event to one target and say what came back
(an `Answer`), `close` its shared connections. The worker has no per-kind branch: it asks
`open_kind` for the kind a target's config names and calls `send`.

    webhook   an HTTP POST (signed as Standard Webhooks); delivered on a 2xx
    nats      a JetStream publish; delivered on the stream's ack (`Nats-Msg-Id` = event id)
    amqp      a RabbitMQ publish, mandatory and persistent; delivered on the publisher confirm
    redis     an XADD to a stream; delivered on the entry id Redis returns
    mqtt      an MQTT 5 publish at QoS 1; delivered on the PUBACK
    notify    a message for people through Apprise; delivered when every service took it

A broker's client library is an extra (`.[nats]`, `.[amqp]`,
`.[redis]`, `.[mqtt]`, `.[notify]`), imported only
when a target of that kind is configured: `open_kind` raises MissingExtra when it is not installed.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from bridge.config.kinds import EXTRAS
from bridge.errors import MissingExtra

if TYPE_CHECKING:
    from bridge.deliver.targets import Target
    from bridge.events import Event
    from bridge.tracing import TraceContext


# Not frozen, though nothing changes one once made: one is made for every delivery, and a
# frozen dataclass's `__init__` (each field set through `object.__setattr__`) costs three
# to four times as much.
@dataclass(slots=True)
class Answer:
    """What came back from one attempt."""

    status_code: int | None  # an HTTP answer's status; None for a broker or no answer
    excerpt: str | None = None  # the answer's start, or what the broker acknowledged
    retry_after: str | None = None
    error: str | None = None
    # The delivery is dead at once (its transform failed): no retry, no mark on the circuit.
    is_final: bool = False
    # A broker acknowledged the message: delivered.
    acked: bool = False


class Kind(Protocol):
    """A kind of target: one instance per daemon shares its connections between targets."""

    async def send(self, target: Target, event: Event, at_ms: int, trace: TraceContext) -> Answer:
        """Deliver `event` to `target`; an error is an Answer, never an exception (but a
        TransformError or ValueError while building the message)."""
        ...

    async def close(self) -> None:
        """Close every connection this kind opened."""
        ...


class Builds(Protocol):
    """A kind whose message can be built ahead of its send (the webhook's request): the
    worker builds a claimed batch's together, which costs the loop less than one at a time
    between sends; `send` is `post(build(...))`."""

    def build(self, target: Target, event: Event, at_ms: int, trace: TraceContext) -> Any:
        """The message of `event` as sent at `at_ms`."""
        ...

    async def post(self, target: Target, message: Any) -> Answer:
        """Send a message `build` made."""
        ...


def open_kind(name: str) -> Kind:
    """A new instance of the kind `name`; MissingExtra when its library is not installed."""
    if name in EXTRAS:
        extra, library = EXTRAS[name]
        try:
            importlib.import_module(library)
        except ImportError:
            raise MissingExtra(f"a {name} target", library, extra) from None
    module = importlib.import_module(f"bridge.deliver.kinds.{name}")
    kind: Kind = module.open_kind()
    return kind


class Backoff:
    """When the next connection to a broker may be tried after failures: 0.5 s doubling up
    to 30 s, so a broker that is down costs one quick failure per attempt, not a blocked
    loop or a storm of connections."""

    FIRST_S = 0.5
    MAX_S = 30.0

    def __init__(self) -> None:
        self.failures = 0
        self.not_before = 0.0
        self.last_error = ""

    def wait_s(self) -> float:
        """Seconds until a connection may be tried again (0: now)."""
        return max(self.not_before - time.monotonic(), 0.0)

    def failed(self, error: str) -> None:
        """A connection failed with `error`."""
        delay_s = min(self.FIRST_S * 2**self.failures, self.MAX_S)
        self.failures += 1
        self.not_before = time.monotonic() + delay_s
        self.last_error = error

    def succeeded(self) -> None:
        """A connection was made."""
        self.failures = 0
        self.not_before = 0.0
