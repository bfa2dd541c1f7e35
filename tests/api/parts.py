"""What the API's tests share: a bridge with a failing target, an authorized client, events
sent through the webhook path, and a problem's checks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from tests.helpers import DaemonProcess, serve_app, wait_until
from tests.web.admin_parts import TOKEN, Receiver, config_text

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Bridge:
    """A running daemon, its failing target's receiver, and an authorized API client."""

    proc: DaemonProcess
    receiver: Receiver
    api: httpx.Client

    def send(self, event_id: str, type_: str = "order.created", subject: str = "") -> None:
        """One webhook to the `orders` source."""
        body = {"id": event_id, "type": type_, "subject": subject or event_id}
        answer = httpx.post(self.proc.url + "/hooks/orders", json=body, timeout=10)
        assert answer.status_code in (200, 202, 204), answer.text

    def event(self, event_id: str) -> dict[str, Any]:
        """The stored event whose upstream id is `event_id` (from the list)."""
        events = self.api.get("/events", params={"subject": event_id}).json()["events"]
        assert len(events) == 1, events
        return events[0]


@contextmanager
def running(daemon: Any, token: str | None = TOKEN, server: str = "") -> Iterator[Bridge]:
    """A bridge with the admin pages' test config (source `orders` by webhook, `items`
    polled, target `sink` failing until its receiver is fixed); `server` adds lines to the
    server section."""
    receiver = Receiver()
    with serve_app(receiver.app()) as peer:
        text = config_text(peer, token=token)
        if server:
            listen = "  listen: 127.0.0.1:{port}"
            text = text.replace(listen, listen + "\n" + server.rstrip("\n"))
        proc = daemon(text)
        headers = AUTH if token else {}
        try:
            with httpx.Client(base_url=proc.url + "/api/v1", headers=headers, timeout=10) as api:
                yield Bridge(proc, receiver, api)
        finally:
            proc.terminate()


def assert_problem(answer: httpx.Response, status: int, name: str) -> dict[str, Any]:
    """The answer is the problem `name` with `status` (RFC 9457), returned as JSON."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json", answer.headers
    body = answer.json()
    assert body["type"] == f"urn:bridge:problem:{name}", body
    assert body["status"] == status and body["title"] and body["detail"], body
    assert body["instance"] == answer.request.url.path
    return body


def wait_for_attempts(bridge: Bridge, count: int) -> None:
    """Until the receiver has had `count` attempts."""
    wait_until(lambda: bridge.receiver.received >= count, timeout_s=20)
