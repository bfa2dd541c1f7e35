"""`bridge send`: post one test webhook to a running bridge, signed as its provider would.

`prepare` is pure (the URL, headers and body of the request, from the config, the source and
what the user gave); `post` sends it and reads the bridge's answer. The signing itself is
in `signers.py`.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

import httpx

from bridge.config import Config
from bridge.errors import SendError
from bridge.masking import mask_url
from bridge.receive import signers

TIMEOUT_S = 10.0
# Where a bridge that listens on every address is reached from this host.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104


@dataclass(frozen=True, slots=True)
class Prepared:
    """One request, ready to post."""

    url: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Answer:
    """What the bridge said: the status, and the event id or the error it gave."""

    status: int
    event_id: str | None = None
    is_duplicate: bool = False
    error: str | None = None

    @property
    def is_accepted(self) -> bool:
        """True for a 2xx."""
        return 200 <= self.status < 300

    def describe(self) -> str:
        """One line for the user: `202 new event ID`, `200 duplicate of ID`, `401 refused`."""
        if self.is_accepted and self.event_id:
            kind = "duplicate of" if self.is_duplicate else "new event"
            return f"{self.status} {kind} {self.event_id}"
        reason = f": {self.error}" if self.error else " (the bridge's log says why)"
        return f"{self.status} refused{reason}"


def source_url(config: Config, name: str) -> str:
    """The URL of source `name` on the bridge `config` describes (its `server.listen`)."""
    host = config.server.host
    host = _WILDCARDS.get(host, host)
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{config.server.port}{config.webhook_path(name)}"


def prepare(
    config: Config,
    name: str,
    *,
    body: bytes | None = None,
    event_type: str | None = None,
    url: str | None = None,
    signing_key: str | None = None,
    now_s: int | None = None,
    delivery_id: str | None = None,
) -> Prepared:
    """The request that source `name`'s provider would send: `body` (else an example of the
    shape the source reads), signed with the source's first secret."""
    source = config.sources.get(name)
    if source is None or source.webhook is None:
        webhooks = sorted(n for n, s in config.sources.items() if s.webhook is not None)
        raise SendError(f"no webhook source {name!r} (webhook sources: {', '.join(webhooks)})")
    draft = signers.Draft(
        name=name,
        hook=source.webhook,
        now_s=int(time.time()) if now_s is None else now_s,
        delivery_id=delivery_id or str(uuid.uuid4()),
        event_type=event_type,
        signing_key=signing_key,
    )
    signers.check_type_option(draft, has_file=body is not None)
    content = signers.example_body(draft) if body is None else body
    try:
        headers = signers.sign_request(draft, content)
    except ValueError as exc:
        raise SendError(f"cannot sign for source {name}: {exc}") from None
    return Prepared(url or source_url(config, name), headers, content)


def read_answer(status: int, content: bytes) -> Answer:
    """The bridge's answer: `{"id"}`, `{"id", "duplicate"}` or `{"error"}` (or nothing)."""
    try:
        data = json.loads(content) if content else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    found = data.get("id")
    error = data.get("error")
    return Answer(
        status=status,
        event_id=found if isinstance(found, str) else None,
        is_duplicate=data.get("duplicate") is True,
        error=error if isinstance(error, str) else None,
    )


def post(prepared: Prepared, timeout_s: float = TIMEOUT_S) -> Answer:
    """Post the request; SendError when the bridge cannot be reached."""
    try:
        response = httpx.post(
            prepared.url, content=prepared.body, headers=prepared.headers, timeout=timeout_s
        )
    except httpx.HTTPError as exc:
        raise SendError(f"cannot post to {mask_url(prepared.url)}: {exc}") from None
    return read_answer(response.status_code, response.content)
