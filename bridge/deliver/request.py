"""The HTTP request of one delivery: the body and headers, in structured or binary mode.

Structured mode (the default) sends the whole CloudEvent as JSON with `content-type:
application/cloudevents+json`. Binary mode sends `data` as the body with its
`datacontenttype`, and every other attribute in a `ce-<name>` header, percent-encoded as the
CloudEvents HTTP binding requires. Both are signed as Standard Webhooks; the body signed is
exactly the body sent. A target's `transform` replaces `data` in either mode (the stored
event is unchanged). Pure: no I/O, the send time is an argument.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from jmespath.parser import ParsedResult

from bridge import __version__, jsontext
from bridge.deliver.signing import SigningKey, signed_headers
from bridge.events import Event
from bridge.tracing import TraceContext

USER_AGENT = f"bridge/{__version__}"
STRUCTURED_TYPE = "application/cloudevents+json"

# The binding leaves printable ASCII alone except `"` and `%`; space and the rest are encoded.
_HEADER_SAFE = "".join(c for c in string.printable if 0x21 <= ord(c) <= 0x7E and c not in '"%')

Format = Literal["structured", "binary"]


# Not frozen, though nothing changes one once made: one is made for every delivery, and a
# frozen dataclass's `__init__` (each field set through `object.__setattr__`) costs three
# to four times as much.
@dataclass(slots=True)
class Request:
    """What to POST: the body and the headers."""

    body: bytes
    headers: dict[str, str]


def ce_header_value(value: str) -> str:
    """A CloudEvents attribute as an HTTP header value (percent-encoded where needed)."""
    return quote(value, safe=_HEADER_SAFE)


class TransformError(ValueError):
    """A target's `transform` failed on an event, or gave what JSON cannot hold."""


def transformed(event: Event, transform: ParsedResult) -> dict[str, Any]:
    """The CloudEvent with `data` replaced by `transform`'s result over the whole event."""
    cloudevent = event.to_cloudevent()
    try:
        data = transform.search(cloudevent)
    except Exception as exc:
        raise TransformError(f"transform failed: {type(exc).__name__}: {exc}") from None
    try:
        jsontext.dumps(data)
    except (TypeError, ValueError) as exc:
        raise TransformError(f"transform gave a value that is not JSON: {exc}") from None
    cloudevent["data"] = data
    return cloudevent


def _binary(ce: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    data = ce.pop("data", None)
    content_type = ce.pop("datacontenttype", "application/json")
    headers = {f"ce-{name}": ce_header_value(str(value)) for name, value in ce.items()}
    if data is None:
        return b"", headers
    headers["content-type"] = content_type
    return jsontext.dumps(data).encode(), headers


def build_request(
    event: Event,
    *,
    format: Format,
    keys: Sequence[SigningKey],
    extra_headers: Mapping[str, str],
    now_s: int,
    transform: ParsedResult | None = None,
    trace: TraceContext | None = None,
) -> Request:
    """The signed request that delivers `event` at Unix time `now_s`.

    With `transform`, its result is the `data` sent (TransformError when it fails); with
    `trace`, the attempt's span goes as `traceparent` (and `tracestate`).
    """
    if format == "binary":
        ce = transformed(event, transform) if transform is not None else event.to_cloudevent()
        body, headers = _binary(ce)
    elif transform is not None:
        body = jsontext.dumps(transformed(event, transform)).encode()
        headers = {"content-type": STRUCTURED_TYPE}
    else:
        # The stored `data` text goes in as it is (`Event.to_json`): no parse, no encoding.
        body = event.to_json().encode()
        headers = {"content-type": STRUCTURED_TYPE}
    out = {"user-agent": USER_AGENT, **extra_headers, **headers}
    if trace is not None:
        out.update(trace.headers())
    # The signature headers come last so no extra header can replace them.
    out.update(signed_headers(keys, event.id, now_s, body))
    return Request(body, out)
