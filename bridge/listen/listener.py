"""`bridge listen`: a local target that verifies each delivery and shows it.

What `stripe listen` and `svix listen` give their users: a receiver to point a target at
while trying the bridge, which proves each delivery's Standard Webhooks signature (`v1`
with the target's `whsec_` secret, `v1a` with the public key of its `whsk_` key) and prints
it. The keys come from the targets of the config that point at the listening port, or
from `--secret`; the verification is the receiving side's own (`receive/schemes.py`).

Delivery, verification and printing are pure (`Delivery.check`, `Delivery.lines`); the
HTTP app around them is a raw ASGI callable, served by uvicorn from the CLI.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from bridge.config import Config
from bridge.deliver.signing import public_key
from bridge.errors import VerificationError
from bridge.jsontext import dumps
from bridge.receive.schemes import StandardKeys, verify_standard_webhooks
from bridge.terminal import printable

# A delivery larger than this is refused (413): a test receiver, not a store.
MAX_BODY_BYTES = 4 * 1024 * 1024
# The reference libraries' tolerance for `webhook-timestamp`.
TOLERANCE_S = 300.0
# The body is shown up to this many lines (indented JSON), then `...`.
SHOWN_LINES = 20
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0", "::"}  # noqa: S104 (names, not binds)


def keys_for_port(config: Config, port: int) -> tuple[list[str], list[str]]:
    """The verification keys of the targets that deliver to this machine's `port`, and the
    names of those targets: `whsec_` secrets as they are, `whsk_` keys as their `whpk_`."""
    keys: list[str] = []
    names: list[str] = []
    for name, target in config.targets.items():
        if target.url is None:
            continue  # a broker target
        url = urlsplit(target.url)
        if url.hostname not in _LOOPBACK:
            continue
        if (url.port or (443 if url.scheme == "https" else 80)) != port:
            continue
        names.append(name)
        keys.extend(verification_key(s.get_secret_value()) for s in target.secret)
    return keys, names


def verification_key(secret: str) -> str:
    """What a receiver verifies a target's secret with: its `whpk_` for a `whsk_` key."""
    return public_key(secret) if secret.startswith("whsk_") else secret


@dataclass(slots=True)
class Delivery:
    """One request the listener got."""

    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    received_s: float = field(default_factory=time.time)
    verified: bool | None = None  # None: not checked (no keys, --no-verify)
    reason: str = ""  # why it is not verified

    def check(self, keys: StandardKeys | None, tolerance_s: float = TOLERANCE_S) -> None:
        """Verify the signature with `keys` (None: nothing to verify with)."""
        if keys is None:
            return
        try:
            verify_standard_webhooks(keys, self.headers, self.body, self.received_s, tolerance_s)
        except VerificationError as exc:
            self.verified, self.reason = False, str(exc)
        else:
            self.verified = True

    @property
    def event(self) -> dict[str, Any]:
        """The CloudEvent's attributes: from the body (structured mode) or `ce-` headers."""
        attributes = {k[3:]: v for k, v in self.headers.items() if k.startswith("ce-")}
        if attributes:
            return attributes
        try:
            body = json.loads(self.body)
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    def summary(self) -> dict[str, Any]:
        """The delivery as one JSON object (`--json`)."""
        event = self.event
        return {
            "received": _time(self.received_s, full=True),
            "path": self.path,
            "verified": self.verified,
            "reason": self.reason or None,
            "webhook_id": self.headers.get("webhook-id"),
            "id": event.get("id"),
            "type": event.get("type"),
            "source": event.get("source"),
            "subject": event.get("subject"),
            "body": self.body.decode("utf-8", "replace"),
        }

    def lines(self, status: int) -> list[str]:
        """What the terminal shows: one line of who and what, then the body, indented."""
        event = self.event
        if self.verified is None:
            verdict = "not verified"
        elif self.verified:
            verdict = "verified"
        else:
            verdict = f"NOT VERIFIED ({self.reason})"
        head = [
            _time(self.received_s),
            f"{self.method} {self.path}",
            str(status),
            verdict,
            str(event.get("type") or "-"),
            str(event.get("id") or self.headers.get("webhook-id") or "-"),
        ]
        if event.get("subject"):
            head.append(f"subject {event['subject']}")
        # Every word here comes from outside: shown with its control characters escaped.
        return [printable("  ".join(head)), *(printable(line) for line in _indented(self.body))]


def _time(at_s: float, full: bool = False) -> str:
    moment = datetime.fromtimestamp(at_s, tz=UTC)
    if full:
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return moment.strftime("%H:%M:%S")


def _indented(body: bytes) -> list[str]:
    text = body.decode("utf-8", "replace")
    with contextlib.suppress(ValueError):
        text = dumps(json.loads(text), indent=2)
    shown = text.splitlines()
    more = len(shown) > SHOWN_LINES
    return ["    " + line for line in shown[:SHOWN_LINES]] + (["    ..."] if more else [])


Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Listener:
    """The ASGI app: each request is verified, handed to `on_delivery`, and answered.

    A valid delivery (or any, without keys) gets `status`; an invalid signature gets 401,
    so that the bridge records a failed attempt, as a real receiver would make it.
    """

    def __init__(
        self,
        keys: Sequence[str],
        on_delivery: Callable[[Delivery, int], None],
        status: int = 204,
        tolerance_s: float = TOLERANCE_S,
    ) -> None:
        self.keys = StandardKeys.parse(list(keys)) if keys else None
        self.on_delivery = on_delivery
        self.status = status
        self.tolerance_s = tolerance_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = await _body(receive)
        if body is None:
            await _answer(send, 413)
            return
        delivery = Delivery(scope["method"], scope["path"], headers, body)
        delivery.check(self.keys, self.tolerance_s)
        status = 401 if delivery.verified is False else self.status
        self.on_delivery(delivery, status)
        await _answer(send, status)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(send: Send, status: int) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": b""})


_HEADERS: Iterable[tuple[bytes, bytes]] = [(b"content-length", b"0")]
