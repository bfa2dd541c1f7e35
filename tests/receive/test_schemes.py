"""The signature schemes as pure functions: public vectors, each scheme's valid and invalid
cases, rotation, tolerance both ways, and cross-checks with the `standardwebhooks` library."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime
from typing import Any

import jmespath
import jmespath.exceptions
import pytest
import standardwebhooks
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.config import WebhookConfig
from bridge.errors import MalformedSignature, VerificationError
from bridge.receive import schemes
from bridge.receive.presets import (
    JMESPATH_OPTIONS,
    PRESETS,
    Extractor,
    compile_search,
    fields_for,
)

# The public test vector of the Standard Webhooks reference library.
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SW_TS = 1614265330
SW_BODY = b'{"test": 2432232314}'
SW_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
SW_KEY = schemes.standard_webhooks_key(SW_SECRET)

NOW = 1_800_000_000.0
TOL = 300.0


def sw_headers(sig: str, *, msg_id: str = SW_ID, ts: int = SW_TS, prefix: str = "webhook-"):
    return {f"{prefix}id": msg_id, f"{prefix}timestamp": str(ts), f"{prefix}signature": sig}


# -- Standard Webhooks ---------------------------------------------------------------------


def test_standard_webhooks_public_vector_signs_and_verifies() -> None:
    assert schemes.sign_standard_webhooks(SW_KEY, SW_ID, SW_TS, SW_BODY) == SW_SIG
    schemes.verify_standard_webhooks([SW_KEY], sw_headers(SW_SIG), SW_BODY, SW_TS, TOL)


def test_standard_webhooks_public_vector_with_changed_last_characters_is_rejected() -> None:
    bad = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="
    with pytest.raises(VerificationError, match="no webhook-signature matches"):
        schemes.verify_standard_webhooks([SW_KEY], sw_headers(bad), SW_BODY, SW_TS, TOL)


def test_standard_webhooks_accepts_svix_headers() -> None:
    headers = sw_headers(SW_SIG, prefix="svix-")
    schemes.verify_standard_webhooks([SW_KEY], headers, SW_BODY, SW_TS, TOL)


@pytest.mark.parametrize(
    "change",
    [
        {"body": b'{"test": 2432232315}'},
        {"msg_id": "msg_other"},
        {"ts": SW_TS + 1},
        {"key": schemes.standard_webhooks_key("whsec_" + base64.b64encode(b"k" * 24).decode())},
    ],
)
def test_standard_webhooks_rejects_any_change(change: dict[str, Any]) -> None:
    body = change.get("body", SW_BODY)
    headers = sw_headers(SW_SIG, msg_id=change.get("msg_id", SW_ID), ts=change.get("ts", SW_TS))
    with pytest.raises(VerificationError):
        schemes.verify_standard_webhooks([change.get("key", SW_KEY)], headers, body, SW_TS, TOL)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "webhook-id header is missing"),
        ({"webhook-id": SW_ID, "webhook-signature": SW_SIG}, "timestamp header is missing"),
        ({"webhook-id": SW_ID, "webhook-timestamp": str(SW_TS)}, "signature header is missing"),
        (sw_headers(SW_SIG, ts=-1) | {"webhook-timestamp": "12a"}, "not a Unix timestamp"),
        (sw_headers("v2,abc"), "no v1 signature"),
        (sw_headers(""), "signature header is missing"),
    ],
)
def test_standard_webhooks_says_why_a_request_is_refused(headers: Any, reason: str) -> None:
    with pytest.raises(VerificationError, match=reason):
        schemes.verify_standard_webhooks([SW_KEY], headers, SW_BODY, SW_TS, TOL)


def test_standard_webhooks_tolerance_both_directions() -> None:
    headers = sw_headers(SW_SIG)
    for now in (SW_TS - TOL, SW_TS + TOL):  # the edges are inside
        schemes.verify_standard_webhooks([SW_KEY], headers, SW_BODY, now, TOL)
    with pytest.raises(VerificationError, match="old"):
        schemes.verify_standard_webhooks([SW_KEY], headers, SW_BODY, SW_TS + TOL + 1, TOL)
    with pytest.raises(VerificationError, match="future"):
        schemes.verify_standard_webhooks([SW_KEY], headers, SW_BODY, SW_TS - TOL - 1, TOL)


def test_standard_webhooks_rotation_tries_every_secret_and_every_signature() -> None:
    old_key, new_key = b"o" * 32, b"n" * 32
    sig_new = schemes.sign_standard_webhooks(new_key, SW_ID, SW_TS, SW_BODY)
    sig_other = schemes.sign_standard_webhooks(b"x" * 32, SW_ID, SW_TS, SW_BODY)
    # The provider sends two signatures; the bridge holds two secrets; one pair matches.
    headers = sw_headers(f"{sig_other} {sig_new}")
    schemes.verify_standard_webhooks([old_key, new_key], headers, SW_BODY, SW_TS, TOL)
    with pytest.raises(VerificationError):
        schemes.verify_standard_webhooks([old_key], headers, SW_BODY, SW_TS, TOL)


def test_standard_webhooks_key_decodes_with_or_without_prefix_and_padding() -> None:
    raw = b"0123456789abcdefghij"  # 20 bytes: base64 needs padding
    text = base64.b64encode(raw).decode()
    assert text.endswith("=")
    for secret in ("whsec_" + text, text, "whsec_" + text.rstrip("=")):
        assert schemes.standard_webhooks_key(secret) == raw
    for bad in ("whsec_", "whsec_not base64!"):
        with pytest.raises(ValueError, match="secret's key"):
            schemes.standard_webhooks_key(bad)


@settings(max_examples=50, deadline=None)
@given(
    msg_id=st.text(min_size=1, max_size=40).filter(lambda s: s.strip() == s and s),
    body=st.binary(max_size=300),
)
def test_standard_webhooks_agrees_with_the_reference_library_both_ways(
    msg_id: str, body: bytes
) -> None:
    body = body.decode("utf-8", "replace").encode()  # the library signs text
    ref = standardwebhooks.Webhook(SW_SECRET)
    now = int(time.time())
    # The library signs; the bridge verifies.
    theirs = ref.sign(msg_id, datetime.fromtimestamp(now, tz=UTC), body.decode())
    schemes.verify_standard_webhooks(
        [SW_KEY], sw_headers(theirs, msg_id=msg_id, ts=now), body, now, TOL
    )
    # The bridge signs; the library verifies (at the real current time).
    ours = schemes.sign_standard_webhooks(SW_KEY, msg_id, now, body)
    assert ours == theirs
    ref.verify(body, sw_headers(ours, msg_id=msg_id, ts=now), json_parse=False)


def test_the_reference_library_rejects_what_the_bridge_rejects() -> None:
    now = int(time.time())
    ref = standardwebhooks.Webhook(SW_SECRET)
    ours = schemes.sign_standard_webhooks(SW_KEY, SW_ID, now, SW_BODY)
    tampered = SW_BODY.replace(b"2", b"3")
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        ref.verify(tampered, sw_headers(ours, ts=now))
    with pytest.raises(VerificationError):
        schemes.verify_standard_webhooks([SW_KEY], sw_headers(ours, ts=now), tampered, now, TOL)


def test_standard_webhooks_refuses_a_list_past_the_cap_before_checking_any_entry() -> None:
    valid = schemes.sign_standard_webhooks(SW_KEY, SW_ID, SW_TS, SW_BODY)
    junk = [f"v1,{'A' * 43}=" for _ in range(schemes.MAX_SIGNATURES)]
    # The cap counts entries, not valid ones: a valid one past the cap does not help.
    headers = sw_headers(" ".join([*junk, valid]))
    with pytest.raises(MalformedSignature, match="more than 16 entries"):
        schemes.verify_standard_webhooks([SW_KEY], headers, SW_BODY, SW_TS, TOL)
    at_the_cap = sw_headers(" ".join([*junk[1:], valid]))
    schemes.verify_standard_webhooks([SW_KEY], at_the_cap, SW_BODY, SW_TS, TOL)


def test_checking_stops_at_the_first_valid_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[str] = []
    same = schemes._same

    def counting(given: str, expected: str) -> bool:
        checked.append(given)
        return same(given, expected)

    valid = schemes.sign_standard_webhooks(SW_KEY, SW_ID, SW_TS, SW_BODY)
    headers = sw_headers(" ".join([valid, *[f"v1,{'A' * 43}="] * 5]))
    monkeypatch.setattr(schemes, "_same", counting)
    schemes.verify_standard_webhooks([SW_KEY], headers, SW_BODY, SW_TS, TOL)
    assert checked == [valid]


# -- Stripe --------------------------------------------------------------------------------

STRIPE_SECRET = "whsec_stripe_test_secret"
STRIPE_BODY = b'{"id":"evt_1","type":"payment_intent.succeeded"}'


def stripe_header(secret: str, t: int, body: bytes, *extra: str) -> dict[str, str]:
    hexsig = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {"stripe-signature": ",".join([f"t={t}", *extra, f"v1={hexsig}"])}


def test_stripe_valid_signature_uses_the_secret_as_text() -> None:
    t = int(NOW)
    headers = stripe_header(STRIPE_SECRET, t, STRIPE_BODY)
    schemes.verify_stripe([STRIPE_SECRET], headers, STRIPE_BODY, NOW, TOL)
    assert headers["stripe-signature"].endswith(schemes.sign_stripe(STRIPE_SECRET, t, STRIPE_BODY))


def test_stripe_refuses_more_than_16_signatures_before_checking_any() -> None:
    t = int(NOW)
    junk = [f"v1={'0' * 64}"] * schemes.MAX_SIGNATURES
    with pytest.raises(MalformedSignature, match="stripe-signature header has more than 16"):
        schemes.verify_stripe(
            [STRIPE_SECRET],
            stripe_header(STRIPE_SECRET, t, STRIPE_BODY, *junk),
            STRIPE_BODY,
            NOW,
            TOL,
        )
    fits = stripe_header(STRIPE_SECRET, t, STRIPE_BODY, *junk[1:])
    schemes.verify_stripe([STRIPE_SECRET], fits, STRIPE_BODY, NOW, TOL)


def test_stripe_any_v1_may_match_and_v0_is_ignored() -> None:
    t = int(NOW)
    good = schemes.sign_stripe(STRIPE_SECRET, t, STRIPE_BODY)
    header = f"t={t},v1={'0' * 64},v0={good},v1={good}"
    schemes.verify_stripe([STRIPE_SECRET], {"stripe-signature": header}, STRIPE_BODY, NOW, TOL)
    only_v0 = {"stripe-signature": f"t={t},v0={good}"}
    with pytest.raises(VerificationError, match="no v1"):
        schemes.verify_stripe([STRIPE_SECRET], only_v0, STRIPE_BODY, NOW, TOL)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "stripe-signature header is missing"),
        ("v1=abc", "no t="),
        ("t=notanumber,v1=abc", "not a Unix timestamp"),
    ],
)
def test_stripe_malformed_headers(header: str | None, reason: str) -> None:
    headers = {} if header is None else {"stripe-signature": header}
    with pytest.raises(VerificationError, match=reason):
        schemes.verify_stripe([STRIPE_SECRET], headers, STRIPE_BODY, NOW, TOL)


def test_stripe_rejects_other_body_secret_and_stale_or_future_timestamps() -> None:
    t = int(NOW)
    headers = stripe_header(STRIPE_SECRET, t, STRIPE_BODY)
    with pytest.raises(VerificationError, match="matches any secret"):
        schemes.verify_stripe([STRIPE_SECRET], headers, STRIPE_BODY + b" ", NOW, TOL)
    with pytest.raises(VerificationError, match="matches any secret"):
        schemes.verify_stripe(["whsec_other"], headers, STRIPE_BODY, NOW, TOL)
    with pytest.raises(VerificationError, match="old"):
        schemes.verify_stripe([STRIPE_SECRET], headers, STRIPE_BODY, NOW + TOL + 1, TOL)
    with pytest.raises(VerificationError, match="future"):
        schemes.verify_stripe([STRIPE_SECRET], headers, STRIPE_BODY, NOW - TOL - 1, TOL)
    # Rotation: the new secret among several.
    schemes.verify_stripe(["whsec_old", STRIPE_SECRET], headers, STRIPE_BODY, NOW, TOL)


# -- GitHub --------------------------------------------------------------------------------

GH_SECRET = "It's a Secret to Everybody"
GH_BODY = b"Hello, World!"
GH_SIG = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_github_documentation_vector() -> None:
    assert schemes.sign_github(GH_SECRET, GH_BODY) == GH_SIG
    schemes.verify_github([GH_SECRET], {"x-hub-signature-256": GH_SIG}, GH_BODY)
    schemes.verify_github(
        ["old", GH_SECRET],
        {"x-hub-signature-256": GH_SIG.upper().replace("SHA256=", "sha256=")},
        GH_BODY,
    )


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        ({}, GH_BODY, "missing"),
        ({"x-hub-signature-256": GH_SIG[7:]}, GH_BODY, "does not start with sha256="),
        ({"x-hub-signature-256": GH_SIG[:-1] + "0"}, GH_BODY, "matches no secret"),
        ({"x-hub-signature-256": GH_SIG}, GH_BODY + b"!", "matches no secret"),
        ({"x-hub-signature": "sha1=" + "0" * 40}, GH_BODY, "missing"),
    ],
)
def test_github_invalid(headers: dict[str, str], body: bytes, reason: str) -> None:
    with pytest.raises(VerificationError, match=reason):
        schemes.verify_github([GH_SECRET], headers, body)


# -- Slack ---------------------------------------------------------------------------------

SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_BODY = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J"


def slack_headers(t: int, sig: str) -> dict[str, str]:
    return {"x-slack-request-timestamp": str(t), "x-slack-signature": sig}


def test_slack_valid_and_rotation() -> None:
    t = int(NOW)
    expected = (
        "v0="
        + hmac.new(
            SLACK_SECRET.encode(), f"v0:{t}:".encode() + SLACK_BODY, hashlib.sha256
        ).hexdigest()
    )
    assert schemes.sign_slack(SLACK_SECRET, t, SLACK_BODY) == expected
    schemes.verify_slack(["old", SLACK_SECRET], slack_headers(t, expected), SLACK_BODY, NOW, TOL)


def test_slack_invalid() -> None:
    t = int(NOW)
    sig = schemes.sign_slack(SLACK_SECRET, t, SLACK_BODY)
    cases = [
        ({"x-slack-signature": sig}, NOW, "timestamp header is missing"),
        (slack_headers(t, sig[3:]), NOW, "does not start with v0="),
        (slack_headers(t + 1, sig), NOW, "matches no secret"),
        (slack_headers(t, sig), NOW + TOL + 1, "old"),
        (slack_headers(t, sig), NOW - TOL - 1, "future"),
    ]
    for headers, now, reason in cases:
        with pytest.raises(VerificationError, match=reason):
            schemes.verify_slack([SLACK_SECRET], headers, SLACK_BODY, now, TOL)


# -- Shopify -------------------------------------------------------------------------------


def test_shopify_valid_and_invalid() -> None:
    secret, body = "shpss_secret", b'{"id":820982911946154508}'
    sig = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    assert schemes.sign_shopify(secret, body) == sig
    schemes.verify_shopify(["old", secret], {"x-shopify-hmac-sha256": sig}, body)
    with pytest.raises(VerificationError, match="matches no secret"):
        schemes.verify_shopify([secret], {"x-shopify-hmac-sha256": sig.lower()}, body)
    with pytest.raises(VerificationError, match="matches no secret"):
        schemes.verify_shopify([secret], {"x-shopify-hmac-sha256": sig}, body + b" ")
    with pytest.raises(VerificationError, match="missing"):
        schemes.verify_shopify([secret], {}, body)


# -- generic HMAC --------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512"])
@pytest.mark.parametrize("encoding", ["hex", "base64"])
def test_generic_hmac_every_algorithm_and_encoding(algorithm: str, encoding: str) -> None:
    secret, body, prefix = "s3cret", b'{"id":"1"}', f"{algorithm}="
    digest = hmac.new(secret.encode(), body, getattr(hashlib, algorithm)).digest()
    text = digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()
    opts: dict[str, Any] = {"header": "X-Sig", "algorithm": algorithm, "encoding": encoding}
    schemes.verify_hmac(["x", secret], {"x-sig": prefix + text}, body, prefix=prefix, **opts)
    with pytest.raises(VerificationError, match="expected prefix"):
        schemes.verify_hmac([secret], {"x-sig": text}, body, prefix=prefix, **opts)
    with pytest.raises(VerificationError, match="matches no secret"):
        schemes.verify_hmac([secret], {"x-sig": prefix + text}, body + b"x", prefix=prefix, **opts)
    with pytest.raises(VerificationError, match="x-sig header is missing"):
        schemes.verify_hmac([secret], {}, body, prefix=prefix, **opts)


# -- binding a config, and the presets ------------------------------------------------------


def hook(**values: Any) -> WebhookConfig:
    return WebhookConfig.model_validate(values)


def test_build_verifier_binds_each_scheme() -> None:
    t = int(NOW)
    cases = [
        (
            hook(verify="standard-webhooks", secrets=SW_SECRET, tolerance="1d"),
            sw_headers(SW_SIG),
            SW_BODY,
            SW_TS + 3600,
        ),
        (hook(verify="github", secrets=[GH_SECRET]), {"x-hub-signature-256": GH_SIG}, GH_BODY, NOW),
        (
            hook(verify="stripe", secrets=STRIPE_SECRET),
            stripe_header(STRIPE_SECRET, t, STRIPE_BODY),
            STRIPE_BODY,
            NOW,
        ),
        (
            hook(verify="slack", secrets=SLACK_SECRET),
            slack_headers(t, schemes.sign_slack(SLACK_SECRET, t, SLACK_BODY)),
            SLACK_BODY,
            NOW,
        ),
        (
            hook(verify="shopify", secrets="k"),
            {"x-shopify-hmac-sha256": schemes.sign_shopify("k", b"{}")},
            b"{}",
            NOW,
        ),
        (
            hook(verify="hmac", secrets="k", header="X-Sig", encoding="base64", algorithm="sha512"),
            {"x-sig": schemes.sign_hmac("k", b"{}", algorithm="sha512", encoding="base64")},
            b"{}",
            NOW,
        ),
    ]
    for config, headers, body, now in cases:
        verify = schemes.build_verifier(config)
        verify(headers, body, now)
        with pytest.raises(VerificationError):
            verify(headers, body + b" ", now)
    schemes.build_verifier(hook(verify="none", allow_unsigned=True))({}, b"", NOW)


def test_presets_fill_the_documented_defaults() -> None:
    github = Extractor(fields_for(hook(verify="github", secrets="s")))
    headers = {"x-github-event": "issues", "x-github-delivery": "d-1"}
    found = github.extract(headers, {"action": "opened", "issue": {"number": 1}})
    assert (found.id, found.type, found.subject, found.time_ms) == (
        "d-1",
        "issues.opened",
        None,
        None,
    )
    assert github.extract({**headers, "x-github-event": "push"}, {"ref": "main"}).type == "push"
    # An action that is not text is left out rather than failing.
    assert github.extract(headers, {"action": 7}).type == "issues"

    stripe = Extractor(fields_for(hook(verify="stripe", secrets="s")))
    body = {
        "id": "evt_1",
        "type": "charge.succeeded",
        "created": 1700000000,
        "data": {"object": {"id": "ch_1"}},
    }
    found = stripe.extract({}, body)
    assert (found.id, found.type, found.subject, found.time_ms) == (
        "evt_1",
        "charge.succeeded",
        "ch_1",
        1700000000000,
    )

    slack = Extractor(fields_for(hook(verify="slack", secrets="s")))
    found = slack.extract(
        {}, {"event_id": "Ev1", "event_time": 1700000001, "event": {"type": "message"}}
    )
    assert (found.id, found.type, found.time_ms) == ("Ev1", "message", 1700000001000)

    shopify = Extractor(fields_for(hook(verify="shopify", secrets="s")))
    found = shopify.extract(
        {
            "x-shopify-webhook-id": "w1",
            "x-shopify-topic": "orders/create",
            "x-shopify-triggered-at": "2023-11-14T22:13:20Z",
        },
        {"id": 5},
    )
    assert (found.id, found.type, found.time_ms) == ("w1", "orders/create", 1700000000000)

    sw = Extractor(fields_for(hook(verify="standard-webhooks", secrets=SW_SECRET)))
    assert sw.extract({"svix-id": "msg_1"}, {"type": "user.created"}).id == "msg_1"
    assert sw.extract({"webhook-id": "msg_2"}, {"type": "user.created"}).type == "user.created"


def test_a_source_overrides_the_preset_and_odd_values_are_not_ids() -> None:
    ex = Extractor(
        fields_for(hook(verify="stripe", secrets="s", id="body.data.object.id", subject="`null`"))
    )
    assert ex.fields.type == PRESETS["stripe"].type
    found = ex.extract({}, {"id": "evt", "data": {"object": {"id": 42}}})
    assert (found.id, found.subject) == ("42", None)
    for odd in ({"id": True}, {"id": ""}, {"id": [1]}, {"id": {"a": 1}}, [1, 2], "text", None):
        assert (
            Extractor(fields_for(hook(verify="hmac", secrets="s", header="x"))).extract({}, odd).id
            is None
        )


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["id", "type", "action", "data", "object", "x"]), inner, max_size=4
        )
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    headers=st.dictionaries(
        st.sampled_from(
            ["x-github-event", "x-github-delivery", "webhook-id", "svix-id", "x-gitlab-event-uuid"]
        ),
        st.text(max_size=6),
    ),
    body=_JSON_VALUES,
)
def test_compiled_searches_find_what_jmespath_finds(headers: dict[str, str], body: Any) -> None:
    doc = {"headers": headers, "body": body}
    expressions = {e for f in PRESETS.values() for e in (f.id, f.type, f.subject, f.time) if e}
    expressions |= {"body", "body.data.object", "headers", "body.x.x.x", "body.id || body.type"}
    for expression in expressions:
        try:
            expected = jmespath.search(expression, doc, options=JMESPATH_OPTIONS)
        except jmespath.exceptions.JMESPathError:
            expected = None
        assert compile_search(expression)(doc) == expected, expression


def test_the_config_refuses_empty_secrets_and_keys_that_are_not_base64() -> None:
    with pytest.raises(ValueError, match="secrets must not be empty"):
        hook(verify="github", secrets=["good", ""])
    with pytest.raises(ValueError, match="not a whsec_ secret"):
        hook(verify="standard-webhooks", secrets="whsec_not base64!")
    assert "s3cret" not in repr(hook(verify="github", secrets="s3cret"))
