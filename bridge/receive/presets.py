"""Where each provider puts an event's id, type, subject and time, and how to read them.

The expressions are JMESPath over `{"headers": {lower-cased name: value}, "body": <JSON>}`.
Each `verify` preset fills the defaults below; a source's own `id`, `type`, `subject` or
`time` replaces the preset's. `Extractor` compiles a source's four expressions once, into
plain Python where that gives the same result (see `compile_search`).

Besides JMESPath's own functions, expressions may call `alertmanager_id(body)`: the SHA-256
(hex) of an Alertmanager notification's `groupKey`, `status` and sorted alert fingerprints,
so the same notification sent again is a duplicate (null for any other body).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jmespath
import jmespath.exceptions
import jmespath.functions

from bridge.config import WebhookConfig, field_path
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

# Standard Webhooks' id header, or Svix's (Clerk, Resend) when it is absent.
_STANDARD_ID = 'headers."webhook-id" || headers."svix-id"'

# GitLab's event id (one per event), else its hook id; its type is the body's object_kind
# (`push`, `issue`, `merge_request`), else the event header (`Push Hook`).
_GITLAB_ID = 'headers."x-gitlab-event-uuid" || headers."x-gitlab-webhook-uuid"'
_GITLAB_TYPE = 'body.object_kind || headers."x-gitlab-event"'

# Alertmanager (and Grafana, which sends the same shape) through Bearer or Basic: a
# notification's identity, else the common `id`; its type is `alert.firing` or
# `alert.resolved`, else the common `type`.
_ALERT_ID = "alertmanager_id(body) || body.id"
_ALERT_TYPE = (
    "body.status && alertmanager_id(body) && join('.', ['alert', body.status]) || body.type"
)
_ALERT_FIELDS = Fields(id=_ALERT_ID, type=_ALERT_TYPE, subject="body.groupLabels.alertname")

PRESETS: dict[str, Fields] = {
    "standard-webhooks": Fields(id=_STANDARD_ID, type="body.type"),
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
    "gitlab": Fields(id=_GITLAB_ID, type=_GITLAB_TYPE),
    "bearer": _ALERT_FIELDS,
    "basic": _ALERT_FIELDS,
    # No provider behind these: the common shape of an event object.
    "hmac": Fields(id="body.id", type="body.type"),
    "token": Fields(id="body.id", type="body.type"),
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
        self._id = compile_search(fields.id)
        self._type = compile_search(fields.type)
        self._subject = compile_search(fields.subject)
        self._time = compile_search(fields.time)

    def extract(self, headers: dict[str, str], body: Any) -> Extracted:
        """Apply the expressions; an expression that fails or finds nothing gives None."""
        doc = {"headers": headers, "body": body}
        return Extracted(
            id=_text(self._id(doc)),
            type=_text(self._type(doc)),
            subject=_text(self._subject(doc)),
            time_ms=parse_time(self._time(doc)),
        )


Search = Callable[[dict[str, Any]], Any]


def _nothing(doc: dict[str, Any]) -> Any:
    return None


def _github_type(doc: dict[str, Any]) -> Any:
    """What `_GITHUB_TYPE` finds, without the interpreter (it is on every GitHub request)."""
    headers, body = doc["headers"], doc["body"]
    parts = [headers.get("x-github-event")]
    if isinstance(body, dict):
        parts.append(body.get("action"))
    return ".".join(p for p in parts if isinstance(p, str))


def _standard_id(doc: dict[str, Any]) -> Any:
    """What `_STANDARD_ID` finds, without the interpreter."""
    headers = doc["headers"]
    return headers.get("webhook-id") or headers.get("svix-id")


def alertmanager_id(body: Any) -> str | None:
    """The identity of an Alertmanager notification: SHA-256 (hex) of its `groupKey`, `status`
    and the sorted fingerprints of its alerts; None when `body` is not one."""
    if not isinstance(body, dict):
        return None
    group, status, alerts = body.get("groupKey"), body.get("status"), body.get("alerts")
    if not (isinstance(group, str) and isinstance(status, str) and isinstance(alerts, list)):
        return None
    prints = sorted(
        a["fingerprint"]
        for a in alerts
        if isinstance(a, dict) and isinstance(a.get("fingerprint"), str)
    )
    # Newlines cannot occur in the fingerprints (hex) and separate the parts unambiguously
    # enough for an identity; the group key is hashed as it is.
    text = "\n".join([group, status, *prints])
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class _Functions(jmespath.functions.Functions):
    """The bridge's own JMESPath functions."""

    @jmespath.functions.signature(
        {"types": ["object", "array", "string", "number", "boolean", "null"]}
    )
    def _func_alertmanager_id(self, body: Any) -> str | None:
        return alertmanager_id(body)


# How the bridge runs JMESPath: with its own functions. Use it in every search.
JMESPATH_OPTIONS = jmespath.Options(custom_functions=_Functions())


def _alert_id(doc: dict[str, Any]) -> Any:
    """What `_ALERT_ID` finds, without the interpreter."""
    found = alertmanager_id(doc["body"])
    if found is not None:
        return found
    body = doc["body"]
    return body.get("id") if isinstance(body, dict) else None


# Expressions of the presets answered by plain Python with the same result.
_NATIVE: dict[str, Search] = {
    _GITHUB_TYPE: _github_type,
    _STANDARD_ID: _standard_id,
    _ALERT_ID: _alert_id,
}


def _lookup(keys: tuple[str, ...]) -> Search:
    def search(doc: dict[str, Any]) -> Any:
        value: Any = doc
        for key in keys:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value

    return search


def compile_search(expression: str | None) -> Search:
    """A function of the document that finds what `expression` finds.

    JMESPath's interpreter costs microseconds per expression; a chain of fields (the common
    case) becomes plain dict lookups with the same result, and the presets' richer
    expressions have native twins. Anything else runs through jmespath, compiled once.
    """
    if not expression:
        return _nothing
    if expression in _NATIVE:
        return _NATIVE[expression]
    try:
        return _lookup(field_path(expression))
    except ValueError:
        compiled = jmespath.compile(expression)  # not a plain field path

    def search(doc: dict[str, Any]) -> Any:
        try:
            return compiled.search(doc, options=JMESPATH_OPTIONS)
        except jmespath.exceptions.JMESPathError:
            # A type error on this request's data (e.g. join over a number): nothing found.
            return None

    return search
