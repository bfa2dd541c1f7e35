"""The signing side (`signers.py`, `sender.py`) as pure functions: what each scheme signs is
accepted by the bridge's verifiers and by independent libraries (`standardwebhooks`, `svix`,
`slack_sdk`, `cryptography`, httpx's Basic auth), and what those libraries sign is accepted
by the bridge; Standard Webhooks v1a against its published vector."""

from __future__ import annotations

import base64
import json
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import standardwebhooks
import svix.webhooks
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from slack_sdk.signature import SignatureVerifier

from bridge.config import Config, WebhookConfig, parse_config
from bridge.errors import SendError, VerificationError
from bridge.receive import schemes, sender, signers
from tests.conftest import TEST_SECRET
from tests.receive.inbound import (
    SCHEMES,
    SECRETS,
    SOURCES,
    V1A_PUBLIC_KEY,
    V1A_SEED,
    V1A_SIGNING_KEY,
)

# The v1a vector of the Standard Webhooks reference (Go) library, REFERENCE.md.
V1A_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
V1A_TS = 1614265330
V1A_BODY = b'{"test": 2432232314}'
V1A_SIG = (
    "v1a,tQ9V2XOqn7jL/DQenEFpqIugdBVtiMmER5mhSkXBNwM0mkATuDe6KYYUuxqtaiHeYGb7KaaBRdM5WqyeFiL8Ag=="
)
TOL = 300.0


def config(tmp_path: Path) -> Config:
    text = "server: {listen: '0.0.0.0:8123'}\n" + textwrap.dedent(SOURCES)
    return parse_config(text, path=tmp_path / "config.yaml")


def hook_of(tmp_path: Path, name: str) -> WebhookConfig:
    found = config(tmp_path).sources[name].webhook
    assert found is not None
    return found


def draft(tmp_path: Path, name: str, **changes: object) -> signers.Draft:
    fields: dict[str, object] = {
        "name": name,
        "hook": hook_of(tmp_path, name),
        "now_s": int(time.time()),
        "delivery_id": "6f1c2b9e-1d2a-4c3b-9e8f-0a1b2c3d4e5f",
        "signing_key": V1A_SIGNING_KEY if name == "v1a" else None,
    }
    return signers.Draft(**(fields | changes))  # type: ignore[arg-type]


# -- every scheme: what bridge send signs, the bridge verifies --------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_what_the_signer_sends_each_verifier_accepts_and_a_changed_body_it_refuses(
    tmp_path: Path, scheme: str
) -> None:
    d = draft(tmp_path, scheme)
    body = signers.example_body(d)
    headers = signers.sign_request(d, body)
    verify = schemes.build_verifier(d.hook)
    verify(headers, body, d.now_s)
    if scheme not in ("gitlab", "token", "bearer", "basic"):  # a credential, not a signature
        with pytest.raises(VerificationError):
            verify(headers, body + b" ", d.now_s)


def test_the_example_bodies_carry_what_each_preset_reads(tmp_path: Path) -> None:
    from bridge.receive.presets import Extractor, fields_for

    for scheme in SCHEMES:
        d = draft(tmp_path, scheme)
        headers = signers.sign_request(d, body := signers.example_body(d))
        found = Extractor(fields_for(d.hook)).extract(headers, json.loads(body))
        assert found.id, scheme
        assert found.type, scheme


def test_the_type_option_goes_where_the_provider_puts_the_type(tmp_path: Path) -> None:
    gh = draft(tmp_path, "github", event_type="issues")
    assert signers.sign_request(gh, b"{}")["x-github-event"] == "issues"
    gl = draft(tmp_path, "gitlab", event_type="merge_request")
    body = signers.example_body(gl)
    assert json.loads(body)["object_kind"] == "merge_request"
    assert signers.sign_request(gl, body)["x-gitlab-event"] == "Merge Request Hook"
    resolved = signers.example_data(draft(tmp_path, "bearer", event_type="alert.resolved"))
    assert resolved["status"] == "resolved"
    with pytest.raises(SendError, match="reads the event type from the body"):
        signers.check_type_option(draft(tmp_path, "stripe", event_type="x"), has_file=True)
    signers.check_type_option(draft(tmp_path, "github", event_type="x"), has_file=True)


# -- independent libraries --------------------------------------------------------------------


def test_standard_webhooks_signatures_agree_with_the_reference_library_and_svix(
    tmp_path: Path,
) -> None:
    d = draft(tmp_path, "sw")
    body = signers.example_body(d)
    headers = signers.sign_request(d, body)
    # The bridge's signature, verified by both libraries (svix reads svix- headers too).
    standardwebhooks.Webhook(TEST_SECRET).verify(body, headers)
    svix_headers = {k.replace("webhook-", "svix-"): v for k, v in headers.items()}
    svix.webhooks.Webhook(TEST_SECRET).verify(body, svix_headers)
    # Their signatures, verified by the bridge.
    when = datetime.fromtimestamp(d.now_s, UTC)
    keys = schemes.StandardKeys.parse([TEST_SECRET])
    for sign in (
        standardwebhooks.Webhook(TEST_SECRET).sign,
        svix.webhooks.Webhook(TEST_SECRET).sign,
    ):
        signature = sign("msg_lib", when, body.decode())
        theirs = {"svix-id": "msg_lib", "svix-timestamp": str(d.now_s), "svix-signature": signature}
        schemes.verify_standard_webhooks(keys, theirs, body, d.now_s, TOL)


def test_slack_signatures_agree_with_slack_sdk(tmp_path: Path) -> None:
    d = draft(tmp_path, "slack")
    body = signers.example_body(d)
    headers = signers.sign_request(d, body)
    sdk = SignatureVerifier(SECRETS["slack"])
    assert sdk.is_valid_request(body, headers)
    assert not SignatureVerifier("another-secret").is_valid_request(body, headers)
    theirs = sdk.generate_signature(timestamp=str(d.now_s), body=body)
    assert theirs is not None
    lib_headers = {"x-slack-request-timestamp": str(d.now_s), "x-slack-signature": theirs}
    schemes.verify_slack([SECRETS["slack"]], lib_headers, body, d.now_s, TOL)


def test_basic_credentials_agree_with_httpx(tmp_path: Path) -> None:
    user, password = SECRETS["basic"].split(":", 1)
    request = next(httpx.BasicAuth(user, password).auth_flow(httpx.Request("POST", "http://x/")))
    theirs = {"authorization": request.headers["authorization"]}
    schemes.build_verifier(hook_of(tmp_path, "basic"))(theirs, b"{}", 0)
    d = draft(tmp_path, "basic")
    assert signers.sign_request(d, b"{}")["authorization"] == theirs["authorization"]


# -- Standard Webhooks v1a ------------------------------------------------------------------


def test_v1a_published_vector_signs_and_verifies() -> None:
    assert signers.sign_standard_webhooks_v1a(V1A_SEED, V1A_ID, V1A_TS, V1A_BODY) == V1A_SIG
    keys = schemes.StandardKeys.parse([V1A_PUBLIC_KEY])
    headers = {"webhook-id": V1A_ID, "webhook-timestamp": str(V1A_TS), "webhook-signature": V1A_SIG}
    schemes.verify_standard_webhooks(keys, headers, V1A_BODY, V1A_TS, TOL)
    for bad in (V1A_SIG[:-4] + "AAA=", "v1a,!!!", "v1a," + base64.b64encode(b"s" * 64).decode()):
        with pytest.raises(VerificationError, match="no webhook-signature matches"):
            schemes.verify_standard_webhooks(
                keys, headers | {"webhook-signature": bad}, V1A_BODY, V1A_TS, TOL
            )
    with pytest.raises(VerificationError):
        schemes.verify_standard_webhooks(keys, headers, V1A_BODY + b" ", V1A_TS, TOL)


def test_v1a_agrees_with_the_cryptography_package_both_ways() -> None:
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes_raw()
    public = "whpk_" + base64.b64encode(private.public_key().public_bytes_raw()).decode()
    ours = signers.sign_standard_webhooks_v1a(seed, "msg_x", V1A_TS, b"{}")
    private.public_key().verify(base64.b64decode(ours[4:]), b"msg_x.1614265330.{}")
    with pytest.raises(InvalidSignature):
        private.public_key().verify(base64.b64decode(ours[4:]), b"msg_x.1614265331.{}")
    theirs = "v1a," + base64.b64encode(private.sign(b"msg_y.1614265330.{}")).decode()
    headers = {"webhook-id": "msg_y", "webhook-timestamp": str(V1A_TS), "webhook-signature": theirs}
    keys = schemes.StandardKeys.parse([public])
    schemes.verify_standard_webhooks(keys, headers, b"{}", V1A_TS, TOL)


def test_v1_and_v1a_entries_together_any_valid_one_suffices() -> None:
    hmac_key = schemes.standard_webhooks_key(TEST_SECRET)
    v1 = schemes.sign_standard_webhooks(hmac_key, V1A_ID, V1A_TS, V1A_BODY)
    bad_v1 = v1[:-4] + "AAA="
    both = schemes.StandardKeys.parse([TEST_SECRET, V1A_PUBLIC_KEY])
    only_v1a = schemes.StandardKeys.parse([V1A_PUBLIC_KEY])
    only_v1 = schemes.StandardKeys.parse([TEST_SECRET])
    base = {"webhook-id": V1A_ID, "webhook-timestamp": str(V1A_TS)}

    def check(keys: schemes.StandardKeys, signature: str) -> None:
        headers = base | {"webhook-signature": signature}
        schemes.verify_standard_webhooks(keys, headers, V1A_BODY, V1A_TS, TOL)

    for signature in (f"{bad_v1} {V1A_SIG}", f"{V1A_SIG} {v1}", v1, V1A_SIG):
        check(both, signature)
    check(only_v1a, f"{v1} {V1A_SIG}")
    check(only_v1, f"{V1A_SIG} {v1}")
    with pytest.raises(VerificationError, match="has no v1a signature"):
        check(only_v1a, v1)
    with pytest.raises(VerificationError, match="has no v1 signature"):
        check(only_v1, V1A_SIG)
    with pytest.raises(VerificationError, match="no webhook-signature matches"):
        check(both, bad_v1)


def test_a_v1a_only_source_needs_the_signing_key_to_send(tmp_path: Path) -> None:
    with pytest.raises(SendError, match="give its whsk_ signing key"):
        signers.sign_request(draft(tmp_path, "v1a", signing_key=None), b"{}")
    headers = signers.sign_request(draft(tmp_path, "sw", signing_key=V1A_SIGNING_KEY), b"{}")
    entries = headers["webhook-signature"].split()
    assert [e.split(",")[0] for e in entries] == ["v1", "v1a"]


def test_the_config_takes_whpk_keys_and_refuses_whsk_keys_in_a_source(tmp_path: Path) -> None:
    def source(secret: str) -> str:
        return f"sources:\n  s:\n    webhook: {{verify: standard-webhooks, secrets: [{secret}]}}\n"

    parse_config(source(V1A_PUBLIC_KEY), path=tmp_path / "c.yaml")
    from bridge.errors import ConfigError

    with pytest.raises(ConfigError, match="whsk_ signing key"):
        parse_config(source(V1A_SIGNING_KEY), path=tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="32 bytes"):
        parse_config(
            source("whpk_" + base64.b64encode(b"k" * 16).decode()), path=tmp_path / "c.yaml"
        )
    with pytest.raises(ConfigError, match="user:password"):
        parse_config(
            "sources:\n  s:\n    webhook: {verify: basic, secrets: [nocolon]}\n",
            path=tmp_path / "c.yaml",
        )


# -- the sender's pure part -----------------------------------------------------------------


def test_prepare_posts_to_the_source_on_server_listen_and_names_the_sources(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    prepared = sender.prepare(cfg, "github", now_s=V1A_TS, delivery_id="d-1")
    assert prepared.url == "http://127.0.0.1:8123/hooks/github"
    assert prepared.headers["x-github-delivery"] == "d-1"
    assert sender.prepare(cfg, "github", url="http://127.0.0.1:1/x").url == "http://127.0.0.1:1/x"
    assert sender.prepare(cfg, "token", body=b'{"id": 1}').body == b'{"id": 1}'
    with pytest.raises(SendError, match="no webhook source 'nope'"):
        sender.prepare(cfg, "nope")


def test_answers_are_described_in_one_line() -> None:
    assert sender.read_answer(202, b'{"id": "evt_1"}').describe() == "202 new event evt_1"
    dup = sender.read_answer(200, b'{"id": "evt_1", "duplicate": true}')
    assert dup.describe() == "200 duplicate of evt_1"
    assert sender.read_answer(401, b"").describe() == "401 refused (the bridge's log says why)"
    assert sender.read_answer(400, b'{"error": "no"}').describe() == "400 refused: no"
    assert not sender.read_answer(500, b"[1]").is_accepted
