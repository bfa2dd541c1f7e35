"""Every scheme over real HTTP (the Starlette app on uvicorn, 127.0.0.1, a real SQLite file),
with requests built by hand from each provider's documented headers: accepted, duplicate,
wrong secret, missing header; form bodies; allow_from; the info line of every refusal; and
nothing stored on any refusal."""

from __future__ import annotations

import asyncio
import json
import logging
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from bridge.config import parse_config
from bridge.daemon.app import build_app
from bridge.events import Event
from bridge.receive import schemes
from bridge.receive.app import Receiver
from bridge.runtime import Runtime
from bridge.store.sqlite import SQLiteStore
from tests.helpers import serve_app
from tests.receive.inbound import CASES, SCHEMES, SECRETS, SOURCES, wrong_secret

GUARDED = """
  guarded:
    webhook:
      verify: github
      secrets: gh-secret-for-tests
      allow_from: [10.0.0.0/8, "2001:db8::/32"]
      max_body: 1KiB
  commands:
    webhook:
      verify: slack
      secrets: slack-signing-secret
      id: body.trigger_id
      type: body.command
"""


@dataclass
class Served:
    url: str
    store: SQLiteStore

    def events(self) -> list[Event]:
        return asyncio.run(self.store.list_events(limit=None))

    def post(self, source: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(f"{self.url}/hooks/{source}", content=body, headers=headers)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    text = "database: schemes.db\n" + textwrap.dedent(SOURCES) + GUARDED
    config = parse_config(text, path=tmp_path / "config.yaml")
    store = SQLiteStore(config.database_path)
    store.open()
    runtime = Runtime(config=config, store=store, is_ready=True)
    receiver = Receiver(runtime)
    try:
        with serve_app(build_app(runtime, receiver.routes())) as url:
            yield Served(url, store)
    finally:
        store.close()


def _uid() -> str:
    return uuid.uuid4().hex


@pytest.mark.parametrize("scheme", SCHEMES)
def test_each_scheme_accepts_then_counts_the_same_request_as_a_duplicate(
    served: Served, scheme: str
) -> None:
    case = CASES[scheme]
    body, headers = case.request(scheme, _uid())
    first = served.post(scheme, body, headers)
    assert first.status_code == 202, first.text
    again = served.post(scheme, body, headers)
    assert again.status_code == 200
    assert again.json() == {"id": first.json()["id"], "duplicate": True}
    (event,) = served.events()
    assert (event.id, event.source, event.type) == (first.json()["id"], scheme, case.type)
    assert event.data == json.loads(body)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_each_scheme_refuses_a_wrong_secret_and_a_missing_header_with_401_and_stores_nothing(
    served: Served, scheme: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.receive")
    case = CASES[scheme]
    body, wrong = case.request(scheme, _uid(), secret=wrong_secret(scheme))
    r = served.post(scheme, body, wrong)
    assert r.status_code == 401 and r.content == b""
    body, headers = case.request(scheme, _uid())
    del headers[case.credential]
    r = served.post(scheme, body, headers)
    assert r.status_code == 401
    assert served.events() == []
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert sum(f"source {scheme}: refused a webhook" in line for line in lines) == 2
    assert any(f"{case.credential} header is missing (401 signature)" in line for line in lines)
    assert SECRETS[scheme] not in caplog.text and body.decode() not in caplog.text


def test_bearer_and_basic_take_the_scheme_name_in_any_case_but_nothing_else(
    served: Served,
) -> None:
    body, headers = CASES["bearer"].request("bearer", _uid())
    token = SECRETS["bearer"]
    for value in (f"Basic {token}", token, f"Bearer {token}x", "Bearer"):
        assert served.post("bearer", body, headers | {"authorization": value}).status_code == 401
    assert served.post("bearer", body, headers | {"authorization": f"bearer {token}"}).is_success
    body, headers = CASES["basic"].request("basic", _uid())
    assert served.post("basic", body, headers | {"authorization": "Basic !!!"}).status_code == 401
    assert len(served.events()) == 1


def test_a_repeated_alertmanager_notification_is_a_duplicate_whatever_the_alert_order(
    served: Served,
) -> None:
    from tests.receive.inbound import alertmanager

    def send(data: object) -> httpx.Response:
        body = json.dumps(data).encode()
        return served.post("bearer", body, CASES["bearer"].sign(body, "", SECRETS["bearer"]))

    first = send(alertmanager(["f1", "f2"]))
    assert first.status_code == 202
    assert send(alertmanager(["f2", "f1"])).json() == {"id": first.json()["id"], "duplicate": True}
    resolved = send(alertmanager(["f1", "f2"], status="resolved"))
    assert resolved.status_code == 202
    types = sorted(e.type for e in served.events())
    assert types == ["alert.firing", "alert.resolved"]


# -- form bodies -----------------------------------------------------------------------------

ISSUE = {"action": "opened", "issue": {"number": 7, "title": "Ünïcode & = stays"}}
FORM = "application/x-www-form-urlencoded"


def _github_headers(body: bytes, uid: str, content_type: str) -> dict[str, str]:
    return {"content-type": content_type} | CASES["github"].sign(body, uid, SECRETS["github"])


def test_a_form_encoded_github_webhook_is_stored_with_the_data_of_its_json_twin(
    served: Served,
) -> None:
    as_json = json.dumps(ISSUE).encode()
    as_form = urlencode({"payload": json.dumps(ISSUE)}).encode()
    r1 = served.post("github", as_json, _github_headers(as_json, "d-json", "application/json"))
    r2 = served.post("github", as_form, _github_headers(as_form, "d-form", FORM))
    assert (r1.status_code, r2.status_code) == (202, 202)
    json_event, form_event = sorted(served.events(), key=lambda e: e.upstream_id != "d-json")
    assert form_event.data == json_event.data == ISSUE
    assert form_event.type == json_event.type == "issues.opened"


def test_a_form_body_with_a_bad_signature_is_401_and_one_without_payload_is_400(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.receive")
    form = urlencode({"payload": json.dumps(ISSUE)}).encode()
    headers = _github_headers(form, "d-1", FORM)
    tampered = form.replace(b"opened", b"closed")
    assert served.post("github", tampered, headers).status_code == 401
    no_payload = b"zen=hello&hook_id=1"
    r = served.post("github", no_payload, _github_headers(no_payload, "d-2", FORM))
    assert r.status_code == 400 and r.json() == {"error": "the form has no payload field"}
    bad_json = b"payload=%7Bnot+json"
    r = served.post("github", bad_json, _github_headers(bad_json, "d-3", FORM))
    assert r.status_code == 400 and r.json() == {
        "error": "the form's payload field is not valid JSON"
    }
    neither = b"\xff\xfe not a form"
    r = served.post("github", neither, _github_headers(neither, "d-4", FORM))
    assert r.status_code == 400
    assert served.events() == []
    assert "source github: refused a webhook: the form has no payload field (400 invalid_form)" in (
        caplog.text
    )
    assert "hello" not in caplog.text


def test_slack_interactive_payloads_are_their_json_and_slash_commands_their_fields(
    served: Served,
) -> None:
    def slack(body: bytes) -> dict[str, str]:
        return {"content-type": FORM} | CASES["slack"].sign(body, "", SECRETS["slack"])

    interactive = {"type": "block_actions", "trigger_id": "t-1", "actions": [{"value": "ok"}]}
    body = urlencode({"payload": json.dumps(interactive)}).encode()
    assert served.post("commands", body, slack(body)).status_code == 202
    command = b"command=%2Fdeploy&text=api+prod&trigger_id=t-2&channel=a&channel=b"
    assert served.post("commands", command, slack(command)).status_code == 202
    by_id = {e.upstream_id: e for e in served.events()}
    assert by_id["t-1"].data == interactive
    assert by_id["t-2"].data == {
        "command": "/deploy",
        "text": "api prod",
        "trigger_id": "t-2",
        "channel": ["a", "b"],
    }
    assert by_id["t-2"].type == "/deploy"


def test_a_body_that_is_neither_json_nor_a_form_stays_400(served: Served) -> None:
    body = b"<xml/>"
    headers = _github_headers(body, "d-x", "application/xml")
    r = served.post("github", body, headers)
    assert r.status_code == 400 and r.json() == {"error": "the body is not valid JSON"}
    assert served.events() == []


# -- where requests may come from ------------------------------------------------------------


def test_a_client_outside_allow_from_is_403_before_any_other_work(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.receive")
    body = json.dumps(ISSUE).encode()
    signed = _github_headers(body, "d-1", "application/json")
    # A valid request, a wrong method, an unsigned body over max_body: all 403 first.
    assert served.post("guarded", body, signed).status_code == 403
    assert httpx.get(served.url + "/hooks/guarded").status_code == 403
    assert served.post("guarded", b"x" * 4000, {}).status_code == 403
    # uvicorn gives the peer; X-Forwarded-For from an untrusted peer is ignored.
    spoofed = signed | {"x-forwarded-for": "10.1.2.3", "forwarded": "for=10.1.2.3"}
    r = served.post("guarded", body, spoofed)
    assert r.status_code == 403 and r.json() == {
        "error": "this address may not send to this source"
    }
    assert served.events() == []
    assert "source guarded: refused a webhook: 127.0.0.1 is outside allow_from (403 forbidden)" in (
        caplog.text
    )


def test_the_signature_primitives_of_the_hand_built_requests_match_the_documented_vectors() -> None:
    # The hand-built requests rest on these; the vectors pin them to the providers' documents.
    body = b"Hello, World!"
    expected = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert schemes.sign_github("It's a Secret to Everybody", body) == "sha256=" + expected
