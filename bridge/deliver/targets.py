"""A configured target's live state in this process (`Target`): its settings decoded once
(keys, headers, TLS, transform, pace), its circuit and disabled flag, what it has claimed
and queued, what is in flight; and a delivery's request built with its batch (`Ready`)."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from jmespath.parser import ParsedResult

from bridge import metrics
from bridge.config import TargetConfig
from bridge.config.outbound import tls_context
from bridge.deliver.claims import LEASE_MARGIN_S
from bridge.deliver.policy import CIRCUIT_GAUGE, Circuit, CircuitState
from bridge.deliver.signing import SigningKey, decode_key
from bridge.masking import url_secrets
from bridge.routing import compiled
from bridge.store.base import TargetState
from bridge.store.deliveries import Claim

log = logging.getLogger("bridge.deliver")


class Pacer:
    """Spaces requests to at most `rate` per second."""

    def __init__(self, rate: float) -> None:
        self.interval_s = 1.0 / rate
        self._next_at = 0.0

    async def wait(self) -> None:
        """Return when the next request may go."""
        now = time.monotonic()
        at = max(now, self._next_at)
        self._next_at = at + self.interval_s
        if at > now:
            await asyncio.sleep(at - now)


@dataclass(slots=True)
class Ready:
    """A delivery's request, built with its claimed batch (`Deliverer._prepare`)."""

    second: int  # the Unix second its timestamp and signature say
    config: TargetConfig  # the target's config it was built with
    request: Any  # what the kind's `post` sends

    def fits(self, target: Target, at_ms: int) -> bool:
        """True when it can be sent at `at_ms`: the same second, the target not reloaded."""
        return self.second == at_ms // 1000 and self.config is target.config


@dataclass
class Target:
    """A configured target's live state in this process."""

    name: str
    config: TargetConfig
    circuit: Circuit = field(default_factory=Circuit)
    disabled_ms: int | None = None
    in_flight: int = 0
    # Claimed, not yet sent: each with the end of its lease (ms)
    # and what `Deliverer._prepare` made of it.
    queue: deque[tuple[Claim, int, Any]] = field(default_factory=deque)
    probing: bool = False
    pending_writes: int = 0  # writes of this target's state not yet committed
    persisted: TargetState | None = None  # the state as last written or read
    kind: str = "webhook"  # the config's `kind`, found once (it looks at every kind's key)
    keys: list[SigningKey] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    secrets: frozenset[str] = frozenset()  # kept out of attempts' errors
    pacer: Pacer | None = None
    transform: ParsedResult | None = None
    ssl: ssl.SSLContext | None = None
    tls_error: str | None = None  # why the `tls` files cannot be used (every attempt fails)
    meters: dict[tuple[Any, ...], Any] = field(default_factory=dict)  # metrics' children

    def meter(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(name, *labels)`, looked up once (labels() takes a lock each time)."""
        key = (metric, *labels)
        child = self.meters.get(key)
        if child is None:
            child = self.meters[key] = metric.labels(self.name, *labels)
        return child

    def configure(self, config: TargetConfig, base: Path | None = None) -> None:
        """Apply (new) settings; the state and the work in flight stay. `base` is the folder
        relative `tls` paths start from (the config file's)."""
        self.config = config
        self.kind = config.kind
        # Decoded once: signing then costs one HMAC (or Ed25519 signature) per key.
        self.keys = [decode_key(s.get_secret_value()) for s in config.secret]
        self.transform = compiled(config.transform) if config.transform else None
        self.ssl, self.tls_error = None, None
        if config.tls is not None:
            try:
                self.ssl = tls_context(config.tls, base or Path.cwd())
            except ValueError as exc:
                self.tls_error = f"tls: {exc}"
                log.error("target %s: %s", self.name, self.tls_error)
        self.headers = {k: v.get_secret_value() for k, v in config.headers.items()}
        values = [*self.headers.values(), *url_secrets(config.address)]
        values += [s.get_secret_value() for s in config.secret]
        self.secrets = frozenset(values + [t for v in self.headers.values() for t in v.split()])
        if config.rate is None:
            self.pacer = None
        elif self.pacer is None or self.pacer.interval_s != 1.0 / config.rate:
            self.pacer = Pacer(config.rate)

    def adopt(self, state: TargetState | None) -> None:
        """Take the persisted state (at start, or after another process changed it)."""
        state = state or TargetState(self.name)
        self.persisted = state
        self.disabled_ms = state.disabled_ms
        circuit = cast(CircuitState, state.circuit if state.circuit in CIRCUIT_GAUGE else "closed")
        self.circuit = Circuit(circuit, state.failures, state.open_until_ms, state.cooldown_s)
        metrics.CIRCUIT.labels(self.name).set(CIRCUIT_GAUGE[self.circuit.state])

    def state(self) -> TargetState:
        """The state to persist."""
        reason = None
        if self.disabled_ms is not None:
            # Disabled by an operator (`bridge target disable`, the admin pages) or by a 410.
            kept = self.persisted.disabled_reason if self.persisted else None
            reason = kept if self.persisted and self.persisted.disabled_ms else "answered 410 Gone"
        c = self.circuit
        return TargetState(
            self.name, self.disabled_ms, reason, c.state, c.failures, c.open_until_ms, c.cooldown_s
        )

    @property
    def lease_s(self) -> float:
        """How long a claim of this target's deliveries is leased."""
        wait_s = self.config.concurrency / self.config.rate if self.config.rate else 0.0
        return self.config.timeout_s + wait_s + LEASE_MARGIN_S
