"""The shared-secret schemes (token, GitLab, Bearer, Basic), the presets that read their
providers' fields, and form bodies, as pure functions."""

from __future__ import annotations

import base64

import pytest

from bridge.config import WebhookConfig
from bridge.errors import VerificationError
from bridge.receive import credentials
from bridge.receive.bodies import BodyError, form_fields, parse_body
from bridge.receive.presets import Extractor, alertmanager_id, fields_for
from tests.receive.inbound import alertmanager


def hook(**fields: object) -> WebhookConfig:
    return WebhookConfig.model_validate(fields)


def test_token_in_the_default_header_with_rotation_and_a_prefix() -> None:
    credentials.verify_token(["old", "new"], {"x-webhook-token": "new"}, header="X-Webhook-Token")
    headers = {"authorization": "Token abc"}
    credentials.verify_token(["abc"], headers, header="Authorization", prefix="Token ")
    with pytest.raises(VerificationError, match="does not start with the expected prefix"):
        credentials.verify_token(["abc"], {"authorization": "abc"}, header="Authorization",
                                 prefix="Token ")  # fmt: skip
    for given in ({"x-webhook-token": "ne"}, {"x-webhook-token": "new!"}, {}):
        with pytest.raises(VerificationError):
            credentials.verify_token(["new"], given, header="X-Webhook-Token")
    assert hook(verify="token", secrets="s").token_header == "X-Webhook-Token"
    assert hook(verify="token", secrets="s", header="X-Hook-Key").token_header == "X-Hook-Key"


def test_gitlab_token_and_its_reasons() -> None:
    credentials.verify_gitlab(["t1", "t2"], {"x-gitlab-token": "t2"})
    with pytest.raises(VerificationError, match="x-gitlab-token header is missing"):
        credentials.verify_gitlab(["t1"], {})
    with pytest.raises(VerificationError, match="matches no secret") as caught:
        credentials.verify_gitlab(["t1"], {"x-gitlab-token": "t3"})
    assert "t1" not in str(caught.value) and "t3" not in str(caught.value)


def test_bearer_and_basic() -> None:
    credentials.verify_bearer(["tok"], {"authorization": "Bearer tok"})
    credentials.verify_bearer(["tok"], {"authorization": "BEARER  tok "})
    basic = "Basic " + base64.b64encode(b"am:pw").decode()
    credentials.verify_basic(["other:x", "am:pw"], {"authorization": basic})
    cases = [
        (credentials.verify_bearer, {"authorization": "Basic tok"}, "not Bearer credentials"),
        (credentials.verify_bearer, {"authorization": "Bearer nope"}, "matches no secret"),
        (credentials.verify_basic, {"authorization": "Basic %%%"}, "not base64"),
        (credentials.verify_basic, {"authorization": "Bearer am:pw"}, "not Basic credentials"),
        (credentials.verify_basic, {}, "authorization header is missing"),
    ]
    for verify, headers, reason in cases:
        with pytest.raises(VerificationError, match=reason):
            verify(["tok", "am:pw"], headers)


def test_gitlab_preset_reads_the_event_uuid_else_the_hook_uuid_and_the_object_kind() -> None:
    extract = Extractor(fields_for(hook(verify="gitlab", secrets="t"))).extract
    headers = {"x-gitlab-event": "Push Hook", "x-gitlab-event-uuid": "e-1",
               "x-gitlab-webhook-uuid": "w-1"}  # fmt: skip
    found = extract(headers, {"object_kind": "push"})
    assert (found.id, found.type) == ("e-1", "push")
    found = extract({"x-gitlab-event": "System Hook", "x-gitlab-webhook-uuid": "w-1"}, {})
    assert (found.id, found.type) == ("w-1", "System Hook")


def test_alertmanager_identity_is_the_group_status_and_sorted_fingerprints() -> None:
    first = alertmanager_id(alertmanager(["b", "a"]))
    assert first == alertmanager_id(alertmanager(["a", "b"]))
    assert first != alertmanager_id(alertmanager(["a", "b"], status="resolved"))
    assert first != alertmanager_id(alertmanager(["a"]))
    assert first is not None and len(first) == 64
    for other in ({"id": 1}, [1], None, {"groupKey": 1, "status": "firing", "alerts": []}):
        assert alertmanager_id(other) is None
    extract = Extractor(fields_for(hook(verify="bearer", secrets="t"))).extract
    found = extract({}, alertmanager(["a"]))
    assert (found.id, found.type, found.subject) == (first and alertmanager_id(
        alertmanager(["a"])), "alert.firing", "DiskFull")  # fmt: skip
    # Any other sender of Bearer or Basic: the common id and type.
    found = extract({}, {"id": "x-1", "type": "thing.made", "status": "ok"})
    assert (found.id, found.type) == ("x-1", "thing.made")


def test_form_bodies() -> None:
    assert form_fields(b"a=1&b=&a=2&c=%C3%BC+x") == {"a": ["1", "2"], "b": "", "c": "ü x"}
    assert parse_body(
        b"payload=%7B%22a%22%3A1%7D", "application/x-www-form-urlencoded", "github"
    ) == {"a": 1}
    form = "application/x-www-form-urlencoded; charset=utf-8"
    assert parse_body(b"payload=%7B%7D&x=1", form, "slack") == {}
    assert parse_body(b"text=hi", form, "slack") == {"text": "hi"}
    # Other schemes: the fields, payload or not.
    assert parse_body(b"payload=1&x=2", form, "token") == {"payload": "1", "x": "2"}
    assert parse_body(b'{"a": 1}', "application/json", "github") == {"a": 1}
    assert parse_body(b'{"a": 1}', None, "github") == {"a": 1}
    for body, verify, message in [
        (b"x=1", "github", "the form has no payload field"),
        (b"payload=1&payload=2", "github", "more than one payload field"),
        (b"payload=%7Bx", "slack", "the form's payload field is not valid JSON"),
        (b"a=%FF", "token", "not a valid form"),
        (b"a=\xff", "token", "not a valid form"),
    ]:
        with pytest.raises(BodyError, match=message):
            parse_body(body, form, verify)
