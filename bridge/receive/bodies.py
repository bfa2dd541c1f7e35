"""What an inbound body says: JSON, or a form (`application/x-www-form-urlencoded`).

Signatures are always checked over the raw bytes first; this module only turns the verified
bytes into an event's data, as pure functions that raise `BodyError` with a message for
the sender (never the body itself):

- JSON: strict (no `NaN`, `Infinity` or `1e400`, no lone surrogates);
- a form: GitHub (when a hook's content type is form) and Slack's interactive messages put
  a JSON document in a `payload` field: that JSON is the data (for GitHub it must be there);
  any other form (Slack's slash commands) is an object of its fields, a repeated field a
  list of its values in order.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

from bridge import jsontext

FORM = "application/x-www-form-urlencoded"
# More fields than this in one form is no webhook; parse_qsl stops there.
MAX_FORM_FIELDS = 1000
# A JSON escape of a UTF-16 surrogate: the body may hold a lone one, which cannot be stored.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# The schemes whose providers send JSON in a form's `payload` field.
_PAYLOAD_SCHEMES = frozenset({"github", "slack"})


class BodyError(ValueError):
    """The body cannot be an event's data; `reason` labels the metric, the message the answer."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type value, lower-cased, without its parameters."""
    return (content_type or "").partition(";")[0].strip().lower()


def parse_json(body: bytes | str, what: str = "the body") -> Any:
    """The JSON document in `body`, or BodyError; strict, see the module docstring."""
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    try:
        data = jsontext.loads(body)
        # A lone surrogate parses, but cannot be stored as UTF-8: check only when escaped.
        if _SURROGATE_ESCAPE.search(raw):
            json.dumps(data, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):
        raise BodyError("invalid_json", f"{what} is not valid JSON") from None
    return data


def form_fields(body: bytes) -> dict[str, str | list[str]]:
    """The fields of a form body; a repeated field becomes the list of its values."""
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise BodyError("invalid_form", "the body is not a valid form") from None
    fields: dict[str, str | list[str]] = {}
    for name, value in pairs:
        if name not in fields:
            fields[name] = value
        elif isinstance(held := fields[name], list):
            held.append(value)
        else:
            fields[name] = [held, value]
    return fields


def parse_form(body: bytes, verify: str) -> Any:
    """A form body as an event's data, for a source of scheme `verify`."""
    fields = form_fields(body)
    payload = fields.get("payload")
    if verify in _PAYLOAD_SCHEMES and payload is not None:
        if not isinstance(payload, str):
            raise BodyError("invalid_form", "the form has more than one payload field")
        return parse_json(payload, "the form's payload field")
    if verify == "github":
        raise BodyError("invalid_form", "the form has no payload field")
    return fields


def parse_body(body: bytes, content_type: str | None, verify: str) -> Any:
    """The data of a verified body: a form when the content type says so, else JSON."""
    if media_type(content_type) == FORM:
        return parse_form(body, verify)
    return parse_json(body)
