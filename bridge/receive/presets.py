"""Where each provider puts an event's id, type, subject and time, and how to read them.

The expressions are JMESPath over `{"headers": {lower-cased name: value}, "body": <JSON>}`.
Each `verify` preset fills the defaults below; a source's own `id`, `type`, `subject` or
`time` replaces the preset's. `Extractor` compiles a source's four expressions once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jmespath
import jmespath.exceptions
import jmespath.parser

from bridge.config import WebhookConfig
from bridge.events import parse_time


@dataclass(frozen=True, slots=True)
class Fields:
    """JMESPath expressions for an event's id, type, subject and time (None: not set)."""

    id: str | None = None
    type: str | None = None
    subject: str | None = None
    time: str | None = None


# GitHub's type is the event header, plus "." and the action when the body has one:
# `issues` + `opened` -> `issues.opened`; `push` stays `push`.
_GITHUB_TYPE = "join('.', [headers.\"x-github-event\", body.action][?type(@) == 'string'])"

PRESETS: dict[str, Fields] = {
    "standard-webhooks": Fields(id='headers."webhook-id" || headers."svix-id"', type="body.type"),
    "stripe": Fields(
        id="body.id", type="body.type", subject="body.data.object.id", time="body.created"
    ),
    "github": Fields(id='headers."x-github-delivery"', type=_GITHUB_TYPE),
    "slack": Fields(id="body.event_id", type="body.event.type", time="body.event_time"),
    "shopify": Fields(
        id='headers."x-shopify-webhook-id"',
        type='headers."x-shopify-topic"',
        time='headers."x-shopify-triggered-at"',
    ),
    # No provider behind these: the common shape of an event object.
    "hmac": Fields(id="body.id", type="body.type"),
    "none": Fields(id="body.id", type="body.type"),
}


def fields_for(hook: WebhookConfig) -> Fields:
    """The preset's expressions, each replaced by the source's own when it sets one."""
    preset = PRESETS[hook.verify]
    return Fields(
        id=hook.id or preset.id,
        type=hook.type or preset.type,
        subject=hook.subject or preset.subject,
        time=hook.time or preset.time,
    )


@dataclass(frozen=True, slots=True)
class Extracted:
    """What was found in one request: the upstream id (None: not found) and the rest."""

    id: str | None
    type: str | None
    subject: str | None
    time_ms: int | None


def _text(value: Any) -> str | None:
    """A scalar as text; None for nothing, empty text, booleans, objects and lists."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


class Extractor:
    """A source's four expressions, compiled once, applied to one request at a time."""

    def __init__(self, fields: Fields) -> None:
        self.fields = fields
        self._id = _compile(fields.id)
        self._type = _compile(fields.type)
        self._subject = _compile(fields.subject)
        self._time = _compile(fields.time)

    def extract(self, headers: dict[str, str], body: Any) -> Extracted:
        """Apply the expressions; an expression that fails or finds nothing gives None."""
        doc = {"headers": headers, "body": body}
        return Extracted(
            id=_text(_search(self._id, doc)),
            type=_text(_search(self._type, doc)),
            subject=_text(_search(self._subject, doc)),
            time_ms=parse_time(_search(self._time, doc)),
        )


def _compile(expression: str | None) -> jmespath.parser.ParsedResult | None:
    return jmespath.compile(expression) if expression else None


def _search(compiled: jmespath.parser.ParsedResult | None, doc: dict[str, Any]) -> Any:
    if compiled is None:
        return None
    try:
        return compiled.search(doc)
    except jmespath.exceptions.JMESPathError:
        # A type error on this request's data (e.g. join over a number): nothing found.
        return None
