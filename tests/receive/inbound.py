"""One source per scheme, and requests for each built by hand from the providers' documents.

The hand-built headers use only the verifiers' signing primitives (`schemes.sign_*`), the
`cryptography` package for Ed25519 and literal header values: not `signers.py`, which the
tests check against these.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridge.receive import schemes
from tests.conftest import TEST_SECRET

# The Standard Webhooks v1a vector's seed (REFERENCE.md) and its keys.
V1A_SEED_B64 = "VEVTVFNJR05JTkdLRVlET05PVFVTRVRISVNGT1JBTlk="
V1A_SEED = base64.b64decode(V1A_SEED_B64)
V1A_SIGNING_KEY = "whsk_" + V1A_SEED_B64
V1A_PUBLIC_KEY = "whpk_" + base64.b64encode(
    Ed25519PrivateKey.from_private_bytes(V1A_SEED).public_key().public_bytes_raw()
).decode("ascii")

SECRETS = {
    "sw": TEST_SECRET,
    "v1a": V1A_SIGNING_KEY,  # the sender's; the bridge holds V1A_PUBLIC_KEY
    "stripe": "whsec_stripe-endpoint-secret",
    "github": "gh-secret-for-tests",
    "slack": "slack-signing-secret",
    "shopify": "shopify-app-secret",
    "gitlab": "gitlab-secret-token",
    "hmac": "hmac-secret",
    "token": "plain-token-secret",
    "bearer": "alertmanager-bearer-token",
    "basic": "alertmanager:basic-password",
}
# Secrets of the same shape that the bridge does not hold.
WRONG = {
    "sw": "whsec_" + base64.b64encode(b"w" * 24).decode(),
    "v1a": "whsk_" + base64.b64encode(b"w" * 32).decode(),
    "basic": "alertmanager:wrong-password",
}

SOURCES = f"""
sources:
  sw:
    webhook:
      verify: standard-webhooks
      secrets: [{TEST_SECRET}, {V1A_PUBLIC_KEY}]
  v1a:
    webhook:
      verify: standard-webhooks
      secrets: {V1A_PUBLIC_KEY}
  stripe:
    webhook:
      verify: stripe
      secrets: {SECRETS["stripe"]}
  github:
    webhook:
      verify: github
      secrets: [an-old-secret, {SECRETS["github"]}]
  slack:
    webhook:
      verify: slack
      secrets: {SECRETS["slack"]}
  shopify:
    webhook:
      verify: shopify
      secrets: {SECRETS["shopify"]}
  gitlab:
    webhook:
      verify: gitlab
      secrets: {SECRETS["gitlab"]}
  hmac:
    webhook:
      verify: hmac
      header: X-Signature
      prefix: "sha256="
      secrets: {SECRETS["hmac"]}
  token:
    webhook:
      verify: token
      secrets: [{SECRETS["token"]}]
  bearer:
    webhook:
      verify: bearer
      secrets: {SECRETS["bearer"]}
  basic:
    webhook:
      verify: basic
      secrets: ["{SECRETS["basic"]}"]
"""
SCHEMES = list(SECRETS)


def _now() -> int:
    return int(time.time())


def _sw(body: bytes, uid: str, secret: str) -> dict[str, str]:
    ts = _now()
    key = schemes.standard_webhooks_key(secret)
    sig = schemes.sign_standard_webhooks(key, uid, ts, body)
    return {"webhook-id": uid, "webhook-timestamp": str(ts), "webhook-signature": sig}


def _v1a(body: bytes, uid: str, secret: str) -> dict[str, str]:
    ts = _now()
    seed = base64.b64decode(secret.removeprefix("whsk_"))
    signature = Ed25519PrivateKey.from_private_bytes(seed).sign(f"{uid}.{ts}.".encode() + body)
    entry = "v1a," + base64.b64encode(signature).decode()
    return {"webhook-id": uid, "webhook-timestamp": str(ts), "webhook-signature": entry}


def _stripe(body: bytes, uid: str, secret: str) -> dict[str, str]:
    ts = _now()
    return {"stripe-signature": f"t={ts},v1={schemes.sign_stripe(secret, ts, body)}"}


def _github(body: bytes, uid: str, secret: str) -> dict[str, str]:
    return {
        "x-github-event": "issues",
        "x-github-delivery": uid,
        "x-hub-signature-256": schemes.sign_github(secret, body),
    }


def _slack(body: bytes, uid: str, secret: str) -> dict[str, str]:
    ts = _now()
    return {
        "x-slack-request-timestamp": str(ts),
        "x-slack-signature": schemes.sign_slack(secret, ts, body),
    }


def _shopify(body: bytes, uid: str, secret: str) -> dict[str, str]:
    return {
        "x-shopify-hmac-sha256": schemes.sign_shopify(secret, body),
        "x-shopify-topic": "orders/create",
        "x-shopify-webhook-id": uid,
        "x-shopify-triggered-at": "2026-01-02T03:04:05Z",
    }


def _gitlab(body: bytes, uid: str, secret: str) -> dict[str, str]:
    return {
        "x-gitlab-token": secret,
        "x-gitlab-event": "Issue Hook",
        "x-gitlab-event-uuid": uid,
        "x-gitlab-webhook-uuid": "0b2ac1b6-0000-4000-8000-000000000001",
    }


def _hmac(body: bytes, uid: str, secret: str) -> dict[str, str]:
    return {"x-signature": schemes.sign_hmac(secret, body, prefix="sha256=")}


def _token(body: bytes, uid: str, secret: str) -> dict[str, str]:
    return {"x-webhook-token": secret}


def _bearer(body: bytes, uid: str, secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


def _basic(body: bytes, uid: str, secret: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(secret.encode()).decode()}


def alertmanager(fingerprints: list[str], status: str = "firing") -> dict[str, Any]:
    """An Alertmanager webhook notification (version 4)."""
    return {
        "version": "4",
        "groupKey": '{}:{alertname="DiskFull"}',
        "status": status,
        "receiver": "bridge",
        "groupLabels": {"alertname": "DiskFull"},
        "alerts": [{"status": status, "fingerprint": fp} for fp in fingerprints],
    }


@dataclass(frozen=True)
class Case:
    """How a provider sends one webhook, what the bridge makes of it."""

    sign: Callable[[bytes, str, str], dict[str, str]]
    data: Callable[[str], Any]  # the body, from a unique id
    type: str  # the event type stored
    credential: str  # the header that proves the request

    def request(self, scheme: str, uid: str, secret: str | None = None) -> tuple[bytes, dict]:
        """The body and headers of one request (`secret`: another one than the source's)."""
        body = json.dumps(self.data(uid)).encode()
        headers = {"content-type": "application/json"}
        return body, headers | self.sign(body, uid, secret or SECRETS[scheme])


_GENERIC = {"type": "thing.made"}
CASES = {
    "sw": Case(_sw, lambda u: {"type": "user.created", "data": {"id": u}}, "user.created",
               "webhook-signature"),
    "v1a": Case(_v1a, lambda u: {"type": "user.created"}, "user.created", "webhook-signature"),
    "stripe": Case(_stripe, lambda u: {"id": f"evt_{u}", "type": "charge.succeeded",
                                       "created": 1700000000, "data": {"object": {"id": "ch_1"}}},
                   "charge.succeeded", "stripe-signature"),
    "github": Case(_github, lambda u: {"action": "opened", "issue": {"number": 7}},
                   "issues.opened", "x-hub-signature-256"),
    "slack": Case(_slack, lambda u: {"event_id": u, "event_time": 1700000000,
                                     "event": {"type": "message"}}, "message", "x-slack-signature"),
    "shopify": Case(_shopify, lambda u: {"id": 1}, "orders/create", "x-shopify-hmac-sha256"),
    "gitlab": Case(_gitlab, lambda u: {"object_kind": "issue"}, "issue", "x-gitlab-token"),
    "hmac": Case(_hmac, lambda u: {"id": u, **_GENERIC}, "thing.made", "x-signature"),
    "token": Case(_token, lambda u: {"id": u, **_GENERIC}, "thing.made", "x-webhook-token"),
    "bearer": Case(_bearer, lambda u: alertmanager([u, "a1"]), "alert.firing", "authorization"),
    "basic": Case(_basic, lambda u: alertmanager([u]), "alert.firing", "authorization"),
}  # fmt: skip


def wrong_secret(scheme: str) -> str:
    """A secret of the scheme's shape that the source does not hold."""
    return WRONG.get(scheme, "not-the-" + SECRETS[scheme])
