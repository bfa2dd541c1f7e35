"""The notify kind through the real daemon: Apprise's `json://` service posting to a real
HTTP server on 127.0.0.1, the title and body rendered from the CloudEvent, a service that
fails a failed attempt, a template that fails on an event a dead delivery."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.deliver.brokers import attempts, make_events, record, statuses
from tests.helpers import DaemonProcess, serve_app, wait_until

pytest.importorskip("apprise", reason="apprise (the notify extra) is not installed")


class Inbox:
    """Records each notification Apprise posts; answers `status`."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.received: list[dict[str, Any]] = []

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            self.received.append(json.loads(await request.body()))
            return Response(status_code=self.status)

        return Starlette(routes=[Route("/notify", hook, methods=["POST"])])


def test_a_notification_carries_the_rendered_title_and_body(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    inbox = Inbox()
    db = tmp_path / "bridge.db"
    events = make_events(2)
    with serve_app(inbox.app()) as url:
        service = url.replace("http://", "json://") + "/notify"
        proc = daemon(
            f"""
            database: bridge.db
            targets:
              t1:
                notify: "{service}"
                title: "{{{{ type }}}}: {{{{ subject }}}}"
                body: "n={{{{ data.n }}}} <b>{{{{ data.text }}}}</b>"
            """
        )
        record(db, events)
        wait_until(lambda: set(statuses(db).values()) == {"delivered"}, timeout_s=20)
    got = {(n["title"], n["message"]) for n in inbox.received}
    # Autoescape off: `<b>` is as written, not `&lt;b&gt;`.
    assert got == {
        (f"orders.created: {e.subject}", f"n={e.data['n']} <b>héllo</b>") for e in events
    }
    for event in events:
        (attempt,) = attempts(db, event.id)
        assert attempt.error is None and attempt.response == "notified 1 service(s)"
    assert proc.terminate() == 0
    assert "Traceback" not in proc.log()
    assert "/notify" not in proc.log()  # the service's URL (its tokens) is never logged


def test_a_service_that_fails_is_a_failed_attempt(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    inbox = Inbox(status=500)
    db = tmp_path / "bridge.db"
    (event,) = make_events(1)
    with serve_app(inbox.app()) as url:
        service = url.replace("http://", "json://") + "/notify"
        daemon(
            f"""
            database: bridge.db
            targets:
              t1:
                notify: ["{service}"]
                retry: [0.2s, 0.2s, 0.2s, 0.2s, 0.2s]
                circuit: {{failures: 100}}
            """
        )
        record(db, [event])
        wait_until(lambda: len(attempts(db, event.id)) >= 2, timeout_s=20)
    assert statuses(db)[event.id] in ("failed", "dead")
    assert all(a.error == "1 of 1 notification service(s) failed" for a in attempts(db, event.id))


def test_a_template_that_fails_on_an_event_makes_it_dead_at_once(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    inbox = Inbox()
    db = tmp_path / "bridge.db"
    (event,) = make_events(1)
    with serve_app(inbox.app()) as url:
        service = url.replace("http://", "json://") + "/notify"
        daemon(
            f"""
            database: bridge.db
            targets:
              t1:
                notify: "{service}"
                body: "{{{{ data.n / 0 }}}}"
            """
        )
        record(db, [event])
        wait_until(lambda: statuses(db)[event.id] == "dead", timeout_s=20)
    (attempt,) = attempts(db, event.id)
    assert attempt.error is not None and attempt.error.startswith("template failed")
    assert inbox.received == []


def test_the_templates_run_in_a_sandbox() -> None:
    from bridge.deliver.kinds.notify import Notify
    from bridge.deliver.request import TransformError

    # No way from the CloudEvent's values to Python's internals.
    with pytest.raises(TransformError, match="template failed"):
        Notify()._render("{{ data.__class__.__mro__[1].__subclasses__() }}", {"data": {}})
    assert Notify()._render("{{ data.x }} & <i>", {"data": {"x": 1}}) == "1 & <i>"
