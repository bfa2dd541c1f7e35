"""`--log-format json` read from the real daemon: each line's fields (event, source, target,
delivery, attempt, status, duration, reason), and `server.log_accepted`, applied by a reload."""

from __future__ import annotations

import json
import signal
import textwrap
import threading
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.logs import FIELDS
from tests.conftest import TEST_SECRET
from tests.helpers import DaemonProcess, serve_app, wait_until


class Upstream:
    """A target that fails its first request, and a polled API that is down."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hits = 0

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            await request.body()
            with self.lock:
                self.hits += 1
                first = self.hits == 1
            return Response(status_code=500 if first else 204)

        async def items(request: Request) -> Response:
            return Response("down for maintenance", status_code=503)

        return Starlette(routes=[Route("/in", hook, methods=["POST"]), Route("/items", items)])


def config_text(url: str, port: str, *, log_accepted: bool) -> str:
    return textwrap.dedent(f"""
        database: fields.db
        server:
          listen: 127.0.0.1:{port}
          log_accepted: {str(log_accepted).lower()}
        sources:
          hook:
            webhook: {{verify: none, allow_unsigned: true}}
          signed:
            webhook: {{verify: standard-webhooks, secrets: [{TEST_SECRET}]}}
          api:
            poll: {{url: "{url}/items", every: 1s, id: id}}
        targets:
          t:
            url: {url}/in
            secret: {TEST_SECRET}
            events: ["hook*"]
            retry: [50ms]
    """)


def json_lines(proc: DaemonProcess) -> list[dict[str, Any]]:
    """Every line of the daemon's log, each a JSON object."""
    return [json.loads(line) for line in proc.log().splitlines() if line.strip()]


def one(lines: list[dict[str, Any]], **wanted: Any) -> dict[str, Any]:
    """The one line whose fields hold `wanted` (a `message` value: a part of the message)."""
    text = wanted.pop("message", "")
    found = [
        line
        for line in lines
        if text in line["message"] and all(line.get(k) == v for k, v in wanted.items())
    ]
    assert len(found) == 1, (wanted, text, found)
    return found[0]


def test_json_lines_carry_their_fields_and_log_accepted_applies_on_reload(daemon) -> None:
    up = Upstream()
    with serve_app(up.app()) as url:
        proc = daemon(config_text(url, "{port}", log_accepted=False), "--log-format", "json")
        base = proc.url
        first = httpx.post(base + "/hooks/hook", json={"id": "e1", "type": "hook.ping"})
        first_id = first.json()["id"]
        assert httpx.post(base + "/hooks/signed", json={}).status_code == 401
        wait_until(lambda: up.hits == 2, timeout_s=15)
        wait_until(lambda: "api: poll failed" in proc.log(), timeout_s=15)

        # Off (the default): the accepted event and the delivery are not said at info.
        lines = json_lines(proc)
        assert not [line for line in lines if "accepted event" in line["message"]]
        assert not [line for line in lines if " delivered: " in line["message"]]

        proc.config_path.write_text(config_text(url, str(proc.port), log_accepted=True))
        proc.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "server.log_accepted on" in proc.log(), timeout_s=10)
        second = httpx.post(base + "/hooks/hook", json={"id": "e2", "type": "hook.pong"})
        second_id = second.json()["id"]
        wait_until(lambda: f"delivery of {second_id} from hook to t delivered" in proc.log(), 15)
        assert proc.terminate() == 0
    lines = json_lines(proc)

    # A failed attempt: which event, delivery and attempt, the answer and how long it took.
    failed = one(lines, message=" failed: status 500", event_id=first_id)
    assert failed["level"] == "info" and failed["logger"] == "bridge.deliver"
    assert failed["source"] == "hook" and failed["target"] == "t"
    assert failed["attempt"] == 1 and failed["status"] == 500
    assert isinstance(failed["delivery_id"], int) and isinstance(failed["duration_ms"], int)
    assert "reason" not in failed  # an answer, not an error: nothing that does not apply

    # A refusal: the source, the status and why.
    refused = one(lines, message="refused a webhook", source="signed")
    assert refused["status"] == 401 and refused["reason"] == "signature"

    # A failed poll: the source, the upstream's status, the kind of failure, the duration.
    polled = next(line for line in lines if "api: poll failed" in line["message"])
    assert polled["level"] == "warning" and polled["source"] == "api"
    assert polled["status"] == 503 and polled["reason"] and isinstance(polled["duration_ms"], int)

    # After the reload, with log_accepted: the accepted event and the delivery at info.
    accepted = one(lines, message="accepted event", event_id=second_id)
    assert accepted["level"] == "info" and accepted["logger"] == "bridge.receive"
    assert accepted["source"] == "hook" and accepted["type"] == "hook.pong"
    delivered = one(lines, message=" delivered: status 204", event_id=second_id)
    assert delivered["level"] == "info" and delivered["target"] == "t"
    assert delivered["attempt"] == 1 and delivered["status"] == 204
    assert isinstance(delivered["delivery_id"], int) and delivered["delivery_id"] > 0
    assert isinstance(delivered["duration_ms"], int)

    # Every field is one the bridge names, none empty, and no secret anywhere.
    base_keys = {"time", "level", "logger", "message", "exc"}
    for line in lines:
        assert set(line) - base_keys <= set(FIELDS), line
        assert None not in line.values()
    assert TEST_SECRET.removeprefix("whsec_") not in proc.log()
