"""W3C trace context for events and deliveries, and the optional OTLP export of spans.

An inbound request's `traceparent` (and `tracestate`) is stored with its event; every
delivery attempt of that event is sent as a child span: the same trace id, a new span id.
A polled event (or a pushed one that came without a trace) starts a new trace whose id is
derived from the event id, so every attempt of one event belongs to one trace.

With `tracing: {otlp: URL}` (the `tracing` extra), a `Tracer` exports spans for receiving,
storing and each delivery attempt through the OpenTelemetry SDK, batched on its own thread.
Without it the `Tracer` is inert: each call returns at its first line and nothing is
imported, so nothing slows down.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from bridge.config.outbound import TracingConfig
from bridge.errors import MissingExtra
from bridge.events import Event

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("bridge.tracing")

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})\Z")
# W3C: a vendor list of up to 32 entries; longer values are dropped rather than cut.
MAX_TRACESTATE = 512
Kind = Literal["server", "client", "internal"]


# Not frozen, though nothing changes one once made: one is made for every delivery, and a
# frozen dataclass's `__init__` (each field set through `object.__setattr__`) costs three
# to four times as much.
@dataclass(slots=True)
class TraceContext:
    """One span's place in a trace: what a `traceparent` header says, and `tracestate`."""

    trace_id: str  # 32 lower-case hex digits
    span_id: str  # 16 lower-case hex digits
    flags: str = "01"  # sampled
    state: str | None = None

    @property
    def traceparent(self) -> str:
        """The `traceparent` header value."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def headers(self) -> dict[str, str]:
        """The trace headers of a request made in this span."""
        out = {"traceparent": self.traceparent}
        if self.state:
            out["tracestate"] = self.state
        return out


def parse(traceparent: str | None, tracestate: str | None = None) -> TraceContext | None:
    """The context of a `traceparent` header, or None when absent or not valid (W3C rules:
    version `ff` and all-zero ids are invalid; a later version's extra fields are ignored)."""
    if not traceparent:
        return None
    text = traceparent.strip().lower()
    version = text[:2]
    if version != "00" and len(text) > 55 and text[55] == "-":
        text = text[:55]  # a future version: its first four fields mean the same
    m = _TRACEPARENT.match(text)
    if m is None or m.group(1) == "ff" or (m.group(1) == "00" and len(text) != 55):
        return None
    trace_id, span_id = m.group(2), m.group(3)
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    state = tracestate.strip() if tracestate else None
    if state is not None and (len(state) > MAX_TRACESTATE or not state.isascii()):
        state = None
    return TraceContext(trace_id, span_id, m.group(4), state or None)


def from_headers(headers: Mapping[str, str]) -> TraceContext | None:
    """The trace context of an inbound request (lower-case header names)."""
    return parse(headers.get("traceparent"), headers.get("tracestate"))


def new_span_id() -> str:
    """A random, non-zero span id (not a secret: the fast generator, not the system's)."""
    while True:
        if bits := random.getrandbits(64):
            return f"{bits:016x}"


def child(parent: TraceContext, span_id: str | None = None) -> TraceContext:
    """A span in the same trace as `parent`: same trace id, flags and state, a new span id."""
    # Built directly: `dataclasses.replace` costs more than the rest of it (once a delivery).
    return TraceContext(parent.trace_id, span_id or new_span_id(), parent.flags, parent.state)


def of_event(event: Event) -> TraceContext:
    """The trace an event's deliveries belong to: the stored one, or a new one of its own."""
    stored = parse(event.traceparent, event.tracestate)
    if stored is not None:
        return stored
    digest = hashlib.blake2b(event.id.encode(), digest_size=24, person=b"bridge-trace").hexdigest()
    return TraceContext(digest[:32], digest[32:48])


# -- export --------------------------------------------------------------------------------


@dataclass(slots=True)
class Span:
    """A span being timed: `context` is its own (send it onwards); `end` finishes it."""

    context: TraceContext
    _span: Any = None

    def end(self, error: str | None = None, attributes: Mapping[str, Any] | None = None) -> None:
        """Finish the span (an exported one gets the attributes and an error status)."""
        if self._span is None:
            return
        for key, value in (attributes or {}).items():
            if value is not None:
                self._span.set_attribute(key, value)
        if error is not None:
            from opentelemetry.trace import Status, StatusCode

            self._span.set_status(Status(StatusCode.ERROR, error))
        self._span.end()


class Tracer:
    """Starts spans; exports them only when built by `Tracer.start` with a config."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("bridge") if provider is not None else None

    @property
    def is_exporting(self) -> bool:
        """True when spans are exported."""
        return self._tracer is not None

    @classmethod
    def start(cls, config: TracingConfig | None) -> Tracer:
        """A tracer exporting to `config.otlp`, or an inert one without a config.

        Raises MissingExtra when the `tracing` extra is not installed.
        """
        if config is None:
            return cls()
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            raise MissingExtra("tracing.otlp", "opentelemetry-sdk", "tracing") from None
        provider = TracerProvider(resource=Resource.create({"service.name": config.service_name}))
        exporter = OTLPSpanExporter(endpoint=config.otlp, timeout=10)
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
        log.info("exporting spans to %s", config.otlp)
        return cls(provider)

    def begin(
        self,
        name: str,
        parent: TraceContext | None,
        kind: Kind = "internal",
        attributes: Mapping[str, Any] | None = None,
        start_ms: int | None = None,
    ) -> Span:
        """Start a span (at `start_ms`, or now), a child of `parent` (a new trace when None)."""
        if self._tracer is None:
            if parent is None:
                return Span(TraceContext(secrets.token_hex(16), new_span_id()))
            return Span(child(parent))
        return self._begin(name, parent, kind, attributes or {}, start_ms)

    def _begin(
        self,
        name: str,
        parent: TraceContext | None,
        kind: Kind,
        attributes: Mapping[str, Any],
        start_ms: int | None,
    ) -> Span:
        from opentelemetry import trace

        assert self._tracer is not None
        context = None
        if parent is not None:
            remote = trace.SpanContext(
                trace_id=int(parent.trace_id, 16),
                span_id=int(parent.span_id, 16),
                is_remote=True,
                trace_flags=trace.TraceFlags(int(parent.flags, 16)),
                trace_state=trace.TraceState.from_header([parent.state] if parent.state else []),
            )
            context = trace.set_span_in_context(trace.NonRecordingSpan(remote))
        kinds = {"server": trace.SpanKind.SERVER, "client": trace.SpanKind.CLIENT}
        span = self._tracer.start_span(
            name, context=context, kind=kinds.get(kind, trace.SpanKind.INTERNAL),
            attributes=dict(attributes),
            start_time=start_ms * 1_000_000 if start_ms is not None else None,
        )  # fmt: skip
        own = span.get_span_context()
        flags = f"{int(own.trace_flags):02x}"
        state = parent.state if parent is not None else None
        return Span(TraceContext(f"{own.trace_id:032x}", f"{own.span_id:016x}", flags, state), span)

    def shutdown(self) -> None:
        """Export the spans still buffered (bounded by the exporter's timeout), then stop."""
        if self._provider is not None:
            self._provider.shutdown()
