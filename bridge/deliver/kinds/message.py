"""A broker's message of one delivery, and the names a target's templates give (pure).

Structured mode: the whole CloudEvent as JSON, `content-type: application/cloudevents+json`.
Binary mode: `data` as the body, each other attribute by name (a kind adds its binding's
prefix: `ce-` on NATS). A target's `transform` replaces `data` in either mode.

`{subject}`, `{type}` and `{source}` in a subject or stream name are filled from the event,
each value sanitized to what the broker accepts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from jmespath.parser import ParsedResult

from bridge import jsontext
from bridge.deliver.request import STRUCTURED_TYPE, transformed
from bridge.events import Event

PLACEHOLDERS = ("subject", "type", "source")
_PLACEHOLDER_RE = re.compile(r"\{(subject|type|source)\}")


@dataclass(slots=True, frozen=True)
class Message:
    """What a broker receives: the body, its content type and (binary mode) the attributes."""

    body: bytes
    content_type: str
    attributes: dict[str, str]


def build_message(
    event: Event, *, format: Literal["structured", "binary"], transform: ParsedResult | None
) -> Message:
    """The message that delivers `event` (TransformError when `transform` fails)."""
    ce: dict[str, Any] = (
        transformed(event, transform) if transform is not None else event.to_cloudevent()
    )
    if format == "structured":
        return Message(jsontext.dumps(ce).encode(), STRUCTURED_TYPE, {})
    data = ce.pop("data", None)
    content_type = str(ce.pop("datacontenttype", "application/json"))
    body = b"" if data is None else jsontext.dumps(data).encode()
    return Message(body, content_type, {name: str(value) for name, value in ce.items()})


def fill(template: str, event: Event, sanitize: Callable[[str], str]) -> str:
    """`template` with `{subject}`, `{type}` and `{source}` replaced by the event's values,
    each passed through `sanitize` (an event without a subject gives `_`)."""

    def value(match: re.Match[str]) -> str:
        raw = getattr(event, match.group(1)) or ""
        return sanitize(raw) or "_"

    return _PLACEHOLDER_RE.sub(value, template)


_NATS_UNSAFE_RE = re.compile(r"[^A-Za-z0-9_.\-]+")


def nats_token(value: str) -> str:
    """A value as part of a NATS subject: dots kept as token separators, every other
    character but letters, digits, `_` and `-` (spaces, `*`, `>`) as `_`, no empty token."""
    cleaned = _NATS_UNSAFE_RE.sub("_", value)
    return ".".join(token or "_" for token in cleaned.split("."))


def redis_key(value: str) -> str:
    """A value as part of a Redis key: any byte is allowed; control characters become `_`
    so the name stays readable in `redis-cli`."""
    return "".join(c if c.isprintable() else "_" for c in value)


def amqp_name(value: str) -> str:
    """A value as part of a routing key: at most 255 bytes in AMQP; control characters `_`
    (dots stay the topic exchange's word separators)."""
    return "".join(c if c.isprintable() else "_" for c in value)


def mqtt_level(value: str) -> str:
    """A value as part of an MQTT topic: `/` kept as the level separator; the wildcards `+`
    and `#`, NUL and other control characters as `_`."""
    return "".join(c if c.isprintable() and c not in "+#" else "_" for c in value)
