"""The demo's receiving target: it verifies every delivery's signature and counts.

Verification uses the `standardwebhooks` reference library, an implementation independent
of the bridge's own signer. Every request is also appended to a JSON-lines file (headers and
body) so anyone can verify the deliveries again afterwards.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.events import now_ms

log = logging.getLogger("bridge.demo.target")

_KEPT_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature", "content-type")


@dataclass(slots=True)
class Received:
    """What the target got."""

    requests: int = 0
    valid: int = 0
    invalid: int = 0
    ids: set[str] = field(default_factory=set)  # the distinct webhook-ids of valid ones


class Target:
    """A receiving endpoint at `POST /hook`: 204 for a valid signature, 401 otherwise."""

    def __init__(self, secret: str, record_path: Path | None = None) -> None:
        self._verifier = Webhook(secret)
        self.received = Received()
        self.ids = self.received.ids
        self._record: IO[str] | None = (
            record_path.open("a", encoding="utf-8", buffering=1) if record_path else None
        )

    def app(self) -> Starlette:
        """The target's HTTP app."""
        return Starlette(routes=[Route("/hook", self._hook, methods=["POST"])])

    def close(self) -> None:
        """Close the record file."""
        if self._record is not None:
            self._record.close()
            self._record = None

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k in _KEPT_HEADERS}
        self.received.requests += 1
        try:
            self._verifier.verify(body, headers, json_parse=False)
            is_valid = True
        except (WebhookVerificationError, ValueError, UnicodeDecodeError):
            is_valid = False
        if self._record is not None:
            line = {
                "received_ms": now_ms(),
                "valid": is_valid,
                "headers": headers,
                "body": body.decode("utf-8", "replace"),
            }
            self._record.write(json.dumps(line, separators=(",", ":")) + "\n")
        if not is_valid:
            self.received.invalid += 1
            log.warning("a delivery's signature is not valid")
            return Response(status_code=401)
        self.received.valid += 1
        self.ids.add(headers.get("webhook-id", ""))
        return Response(status_code=204)
